//! The node boundary: what the control plane asks of a node, as the
//! [`NodeAgent`] trait. The local agent runs in-process over containerd
//! ([`local::LocalAgent`]); a remote agent over gRPC will implement the same
//! trait for multi-node clusters, and tests use a fake. At a node's start
//! the local agent removes what replicas that no longer exist left behind
//! (`sweep`).

pub mod access;
pub mod archive;
pub mod backup;
pub mod direct;
#[cfg(test)]
pub mod fake;
pub mod files;
pub mod host;
mod image;
mod listed;
pub mod local;
mod mounts;
pub mod probe;
mod start;
mod sweep;
pub mod volumes;

use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

/// A replica just started: its process, and its address on the node
/// network (when it has one), so that it is known before the next listing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Started {
    pub pid: u32,
    pub ip: Option<std::net::Ipv4Addr>,
}

/// What to run for one replica.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InstanceSpec {
    /// `<service>.<slot>.<random>`: unique, valid as a containerd id.
    pub id: String,
    pub service: String,
    pub project: String,
    pub version: u64,
    pub slot: u32,
    /// Image reference, already pulled by the deploy.
    pub image: String,
    /// The digest the version was deployed with: what every replica of it
    /// runs, pulled by digest where the node lacks it.
    #[serde(default)]
    pub image_digest: Option<String>,
    /// `pull = "never"`: a node that lacks the digest refuses to start it.
    #[serde(default)]
    pub pull_never: bool,
    pub command: Option<Vec<String>>,
    /// See `ServiceSpec::entrypoint`, `args` and `working_dir`.
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub args: Option<Vec<String>>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// The spec's own `labels`, put on the container beside orca's.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    pub env: Vec<(String, String)>,
    pub memory_bytes: Option<u64>,
    pub cpu: Option<f64>,
    /// Most processes at once.
    pub pids: i64,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    /// No seccomp filter (the default profile otherwise).
    #[serde(default)]
    pub seccomp_unconfined: bool,
    #[serde(default)]
    pub read_only_rootfs: bool,
    /// `uid[:gid]` or names from the image; None: the image's USER.
    #[serde(default)]
    pub user: Option<String>,
    /// Volumes, bind mounts and tmpfs.
    #[serde(default)]
    pub mounts: Vec<volumes::MountSpec>,
    /// Files and secret files, their content resolved.
    #[serde(default)]
    pub files: Vec<files::FileMount>,
    /// Host device nodes.
    #[serde(default)]
    pub devices: Vec<files::DeviceSpec>,
    /// The job run it belongs to (0 for a service that always restarts).
    #[serde(default)]
    pub run: u64,
    /// What happens when it ends: a node keeping replicas without its
    /// server restarts a job's only after a failure, or never.
    #[serde(default)]
    pub restart: api::spec::RestartPolicy,
}

impl InstanceSpec {
    /// A fresh id for `slot` of `service`.
    pub fn new_id(service: &str, slot: u32) -> String {
        format!("{service}.{slot}.{:06x}", rand::random::<u32>() & 0xff_ffff)
    }
}

/// How a deploy gets its image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PullMode {
    /// Resolve at the registry; with `fallback`, use the local image when
    /// the registry cannot be reached (not when it answers no).
    Always { fallback: bool },
    /// The local image if there is one, else the registry.
    Missing,
    /// The local image only.
    Never,
}

impl From<api::spec::PullPolicy> for PullMode {
    fn from(p: api::spec::PullPolicy) -> Self {
        match p {
            api::spec::PullPolicy::Always => PullMode::Always { fallback: true },
            api::spec::PullPolicy::Missing => PullMode::Missing,
            api::spec::PullPolicy::Never => PullMode::Never,
        }
    }
}

/// What [`NodeAgent::pull`] made present.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pulled {
    pub digest: String,
    /// Set when the registry could not be reached and the local image
    /// was used: why, and which digest.
    pub note: Option<String>,
}

/// The service part of an instance id.
pub fn service_of(instance_id: &str) -> &str {
    instance_id.split('.').next().unwrap_or(instance_id)
}

/// A replica's process state, from containerd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProcessState {
    /// Created, no process yet (or its task was deleted).
    Created,
    Running,
    Exited {
        code: u32,
    },
}

/// A replica as the node sees it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub id: String,
    /// The node that runs it.
    #[serde(default)]
    pub node: String,
    pub service: String,
    pub project: String,
    pub version: u64,
    pub slot: u32,
    pub pid: Option<u32>,
    pub state: ProcessState,
    /// The replica's address on the node network.
    pub ip: Option<std::net::Ipv4Addr>,
    /// See [`InstanceSpec::run`].
    #[serde(default)]
    pub run: u64,
    /// See [`InstanceSpec::restart`].
    #[serde(default)]
    pub restart: api::spec::RestartPolicy,
}

/// Something that happened on the node.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum AgentEvent {
    Started {
        id: String,
        pid: u32,
    },
    Exited {
        id: String,
        code: u32,
        oom_killed: bool,
        at: SystemTime,
    },
    /// The node lost events for a while: resync everything.
    Resync,
    /// A replica's readiness, as the node that runs it checked it.
    Health {
        id: String,
        ready: bool,
    },
}

/// An event with the node it happened on, as the control plane takes it.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEvent {
    pub node: String,
    pub event: AgentEvent,
}

impl NodeEvent {
    /// The replica it is about, if any.
    pub fn instance(&self) -> Option<&str> {
        match &self.event {
            AgentEvent::Started { id, .. }
            | AgentEvent::Exited { id, .. }
            | AgentEvent::Health { id, .. } => Some(id),
            AgentEvent::Resync => None,
        }
    }
}

/// Size of a node (the scheduler's own type).
pub use scheduler::Capacity;

/// Agent failures, with the message an operator should see. A node that
/// cannot be reached is not a node whose containerd fails.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// containerd (or the node's runtime) failed.
    #[error("{0}")]
    Runtime(#[from] cri::CriError),
    /// The replica (or image, or log) does not exist on the node.
    #[error("{0}")]
    NotFound(String),
    /// The node is not connected, or stopped answering.
    #[error("node {node} unreachable: {reason}")]
    Unreachable { node: String, reason: String },
    /// A runtime failure reported by a remote node, as it worded it.
    #[error("{0}")]
    Remote(String),
    /// A remote node's containerd could not be reached, as it said.
    #[error("{0}")]
    RemoteUnavailable(String),
    #[error("{0}")]
    Other(String),
}

impl AgentError {
    /// True when the node or its containerd could not be reached: worth a
    /// retry later, never a replacement (a new replica would fail alike).
    pub fn is_unavailable(&self) -> bool {
        match self {
            AgentError::Unreachable { .. } | AgentError::RemoteUnavailable(_) => true,
            AgentError::Runtime(c) => c.is_unavailable(),
            _ => false,
        }
    }
}

/// A line of an instance's log.
pub use cri::logs::LogLine;

/// What the control plane needs from a node.
#[async_trait::async_trait]
pub trait NodeAgent: Send + Sync + 'static {
    /// This node's id.
    fn node_id(&self) -> &str;
    /// CPU cores and memory of the node.
    fn capacity(&self) -> Capacity;
    /// Makes `image` present as `mode` says; its digest, and a note when
    /// the local image stood in for an unreachable registry.
    async fn pull(&self, image: &str, mode: PullMode) -> Result<Pulled, AgentError>;
    /// Creates and starts a replica; returns its PID. Leaves nothing behind on failure.
    async fn start(&self, spec: &InstanceSpec) -> Result<Started, AgentError>;
    /// Starts an exited replica again in place (same id, same log).
    async fn restart(&self, id: &str) -> Result<u32, AgentError>;
    /// The node network as the cluster wants it: who may talk to whom
    /// (the addresses of each project's replicas, and those of internal
    /// services, reachable from every project), and the published ports.
    async fn set_network(
        &self,
        projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
        internal: &[std::net::Ipv4Addr],
        ports: &[network::ports::PortRule],
    ) -> Result<(), AgentError>;
    /// Kills a replica's processes (SIGKILL); its exit is reported as usual.
    async fn kill(&self, id: &str) -> Result<(), AgentError>;
    /// Stops (SIGTERM, `grace`, SIGKILL) and removes a replica and its log.
    async fn remove(&self, id: &str, grace: Duration) -> Result<(), AgentError>;
    /// Every replica orca runs on this node.
    async fn list(&self) -> Result<Vec<Instance>, AgentError>;
    /// The replicas of one service on this node.
    async fn list_service(&self, service: &str) -> Result<Vec<Instance>, AgentError>;
    /// Events from now on.
    async fn events(&self) -> Result<mpsc::Receiver<AgentEvent>, AgentError>;
    /// The last `n` log lines of a replica.
    async fn logs_tail(&self, id: &str, n: usize) -> Result<Vec<LogLine>, AgentError>;
    /// New log lines of a replica as they come.
    fn logs_follow(&self, id: &str) -> mpsc::Receiver<LogLine>;
    /// Memory and CPU use of a replica.
    async fn usage(&self, id: &str) -> Result<cri::metrics::Usage, AgentError>;
    /// Runs `command` in a replica and collects its output (see
    /// [`cri::ExecOutput`]); kills it after `timeout`.
    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecOutput, AgentError>;
    /// Runs `command` in a replica interactively: input and output as they
    /// come (see [`cri::Attached`]); dropping the input kills it.
    async fn attach(
        &self,
        id: &str,
        command: &[String],
        opts: cri::AttachOptions,
    ) -> Result<cri::Attached, AgentError>;
    /// The named volumes this node holds, with their sizes.
    async fn volumes(&self) -> Result<Vec<volumes::VolumeInfo>, AgentError> {
        Ok(Vec::new())
    }
    /// Deletes a volume and its data (false: there was none). Refused
    /// while a replica on the node mounts it.
    async fn remove_volume(&self, project: &str, name: &str) -> Result<bool, AgentError> {
        let _ = (project, name);
        Err(AgentError::Other(format!(
            "node {} holds no volumes",
            self.node_id()
        )))
    }
    /// The archive of a volume as it streams (gzip when `gzip`). With
    /// `pause`, the replicas on the node that mount it are paused while it
    /// is read (how long: `paused`).
    async fn export_volume(
        &self,
        project: &str,
        name: &str,
        pause: bool,
        gzip: bool,
    ) -> Result<backup::Export, AgentError> {
        let _ = (project, name, pause, gzip);
        Err(AgentError::Other(format!(
            "node {} holds no volumes",
            self.node_id()
        )))
    }
    /// Receives an archive of a volume, checks it (an archive that would
    /// write outside the volume is refused, with nothing written) and
    /// unpacks it beside the volume, which stays as it is.
    async fn receive_volume(
        &self,
        project: &str,
        name: &str,
        gzip: bool,
        data: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<backup::Received, AgentError> {
        let _ = (project, name, gzip, data);
        Err(AgentError::Other(format!(
            "node {} holds no volumes",
            self.node_id()
        )))
    }
    /// Puts what [`NodeAgent::receive_volume`] unpacked in place of the
    /// volume's content (refused while a replica mounts it).
    async fn commit_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let _ = (project, name);
        Err(AgentError::Other(format!(
            "node {} holds no volumes",
            self.node_id()
        )))
    }
    /// Opens a port for volume `project/name` to arrive on straight from
    /// another node ([`NodeAgent::send_volume`]).
    async fn listen_volume(
        &self,
        project: &str,
        name: &str,
    ) -> Result<direct::Listening, AgentError> {
        let _ = (project, name);
        Err(AgentError::Other(format!(
            "node {} takes no direct transfers",
            self.node_id()
        )))
    }
    /// Sends volume `project/name` straight to the node `to` describes.
    async fn send_volume(
        &self,
        project: &str,
        name: &str,
        to: &direct::DirectTarget,
    ) -> Result<direct::Sent, AgentError> {
        let _ = (project, name, to);
        Err(AgentError::Other(format!(
            "node {} sends no direct transfers",
            self.node_id()
        )))
    }
    /// What arrived on the port a listen opened, unpacked beside the volume
    /// as [`NodeAgent::receive_volume`] does; with `cancel`, the port closes
    /// instead (`None`).
    async fn await_volume(
        &self,
        token: &str,
        cancel: bool,
    ) -> Result<Option<backup::Received>, AgentError> {
        let _ = (token, cancel);
        Err(AgentError::NotFound("no such transfer".into()))
    }
    /// Drops what [`NodeAgent::receive_volume`] left.
    async fn discard_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let _ = (project, name);
        Ok(())
    }
    /// The replicas on the node that mount the volume (running or not).
    async fn volume_users(&self, project: &str, name: &str) -> Result<Vec<String>, AgentError> {
        let _ = (project, name);
        Ok(Vec::new())
    }
    /// Ends the connection to a remote node (it was removed); nothing for
    /// a node in process.
    fn disconnect(&self) {}
    /// What a remote node's DNS server and ingress answer with (the server
    /// updates its own in place).
    async fn serve(&self, tables: &crate::cluster::wire::Tables) -> Result<(), AgentError> {
        let _ = tables;
        Ok(())
    }
    /// Routes to the other nodes' replicas: exactly `peers`.
    async fn set_peers(&self, peers: &[network::Peer]) -> Result<(), AgentError> {
        let _ = peers;
        Ok(())
    }
    /// Has the node check a replica's readiness (reported as
    /// [`AgentEvent::Health`]) and liveness (a replica failing it is
    /// killed), until the replica stops running. Only remote nodes do: the
    /// server checks its own node's replicas itself.
    async fn check(
        &self,
        id: &str,
        readiness: Option<probe::Check>,
        liveness: Option<probe::Check>,
    ) -> Result<(), AgentError> {
        let _ = (readiness, liveness);
        Err(AgentError::Other(format!(
            "node {} checks no replica for the server ({id})",
            self.node_id()
        )))
    }
}
