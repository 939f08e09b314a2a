//! Answers about what runs: service status with per-instance detail, the
//! cluster's nodes, versions, tokens.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::join_tokens::{JoinTokenCreated, JoinTokenInfo, JoinTokenRequest};

/// A service's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// Wanted, not running yet (pulling, starting, or nowhere to run).
    Pending,
    /// Every wanted replica runs.
    Running,
    /// Some run, or replicas are crash-looping.
    Degraded,
    /// None of the wanted replicas runs and they keep failing.
    Failed,
    /// Stopped on request.
    Stopped,
    /// A job whose last run ended with every replica exiting 0.
    Completed,
}

/// What a replica is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InstanceState {
    Running,
    Starting,
    /// Running, but on its way out (removed, or of no wanted version).
    Stopping,
    /// Exited, and waiting out its restart delay.
    Backoff,
    Exited,
    /// On a node that cannot be reached: what it does is not known
    /// (`last_state` and `last_seen` say what was last known).
    Unknown,
}

impl InstanceState {
    /// As it is written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Running => "running",
            InstanceState::Starting => "starting",
            InstanceState::Stopping => "stopping",
            InstanceState::Backoff => "backoff",
            InstanceState::Exited => "exited",
            InstanceState::Unknown => "unknown",
        }
    }
}

/// How an instance last ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct LastExit {
    pub code: u32,
    pub oom_killed: bool,
    /// RFC 3339.
    pub at: String,
}

/// One replica.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub node: String,
    pub ip: Option<String>,
    pub state: InstanceState,
    pub healthy: Option<bool>,
    pub restarts: u32,
    pub last_exit: Option<LastExit>,
    pub canary: bool,
    pub version: u64,
    pub pid: Option<u32>,
    /// For an `unknown` replica: the state its node last reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_state: Option<InstanceState>,
    /// For an `unknown` replica: when its node was last heard from
    /// (RFC 3339; null if not since this server started).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<String>,
    /// For an exited replica: its exit code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<u32>,
    /// For a job's replica: the run it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<u64>,
}

/// One service in `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServiceStatus {
    pub name: String,
    pub project: String,
    pub status: ServiceState,
    pub replicas: u32,
    pub running_replicas: u32,
    pub image: String,
    pub domain: Option<String>,
    pub version: u64,
    /// Why the service is not running as wanted, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub instances: Vec<InstanceStatus>,
    /// The latest rollout (`null` for a stopped service), so that a client
    /// can wait for the version it asked for.
    #[serde(default)]
    pub rollout: Option<Rollout>,
    /// The ports it publishes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortStatus>,
    /// For a job (restart on-failure or never): its runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobStatus>,
}

/// A job's runs in status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JobStatus {
    /// `on-failure` or `never`.
    pub restart: String,
    /// The latest run asked for (0: none yet).
    pub run: u64,
    /// The latest run has not ended.
    pub active: bool,
    /// When the latest run was asked for (RFC 3339), and by what.
    pub last_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The next time the schedule is due (RFC 3339); null without one.
    pub next_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The exit code of the run that ended last: the first non-zero one
    /// of its replicas, else 0; null before any run ended.
    pub last_exit_code: Option<u32>,
    /// Every replica's exit code in that run, by slot.
    #[serde(default)]
    pub exit_codes: Vec<u32>,
    /// When that run ended (RFC 3339).
    pub finished_at: Option<String>,
    /// Scheduled runs skipped because a run was still going.
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<String>,
}

/// Where a rollout stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RolloutPhase {
    /// Replicas of the version are coming up, or old ones are leaving.
    Progressing,
    /// Every wanted replica runs the version and is ready; nothing else runs.
    Complete,
    /// The version failed and the service went back to the one before.
    Reverted,
    /// The version cannot come up and there is nothing to go back to.
    Failed,
    /// The version runs beside the stable one with a share of the traffic.
    Canary,
}

/// A service's rollout in `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Rollout {
    /// The version being (or last) rolled out.
    pub version: u64,
    pub phase: RolloutPhase,
    /// A sentence for people.
    pub message: String,
    /// Replicas of `version` that run and are ready.
    pub updated: u32,
    /// Replicas of `version` wanted.
    pub total: u32,
    /// Replicas of other versions (or past the wanted count) still there.
    #[serde(default)]
    pub old: u32,
    /// Seconds a rollout may take before it is reverted.
    #[serde(default)]
    pub deadline_secs: u64,
    /// A canary's share of the traffic, in percent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
}

/// `GET /api/v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct StatusResponse {
    pub services: Vec<ServiceStatus>,
}

/// Capacity or allocation of a node.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct NodeResources {
    pub cpu: f64,
    pub memory_bytes: u64,
}

/// One node in `GET /api/v1/cluster/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodeStatus {
    pub id: String,
    pub address: String,
    pub labels: BTreeMap<String, String>,
    pub drained: bool,
    /// While a drain still has replicas to move.
    #[serde(default)]
    pub drain: Option<DrainProgress>,
    /// `ready` or `disconnected`.
    pub state: String,
    /// `up` or `down`: the node's containerd, as the node last said.
    #[serde(default)]
    pub containerd: String,
    pub resources: NodeResources,
    /// What the replicas placed on the node reserve (`resources.reserve`,
    /// the memory limit by default): what placement counts, not usage.
    #[serde(default)]
    pub reserved: NodeResources,
    /// The same as `reserved`, under its earlier name.
    pub allocated: NodeResources,
    /// The CPU limits of the replicas on the node, summed: they may add
    /// up past its cores (CPU is shared by time when all are busy).
    #[serde(default)]
    pub cpu_limits: f64,
    pub instances: u32,
    /// RFC 3339; null for a node not heard from since the server started.
    #[serde(default)]
    pub last_heartbeat: Option<String>,
    /// orca's version on the node.
    #[serde(default)]
    pub version: String,
    /// The server's own node.
    #[serde(default)]
    pub server: bool,
    /// The /24 of the cluster subnet its replicas take.
    #[serde(default)]
    pub subnet: Option<String>,
    /// The ports it accepts on now (`1883/tcp`), with the service:
    /// every mesh port with a ready replica anywhere, and host ports of
    /// its own replicas.
    #[serde(default)]
    pub ports: Vec<NodePort>,
}

/// A port a service publishes, as status shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct PortStatus {
    pub published: u16,
    pub target: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// `mesh` or `host`.
    pub mode: String,
    /// The one node address it accepts on, if limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
}

impl From<crate::spec::PublishedPort> for PortStatus {
    fn from(p: crate::spec::PublishedPort) -> Self {
        PortStatus {
            published: p.published,
            target: p.target,
            protocol: p.protocol.as_str().to_string(),
            mode: match p.mode {
                crate::spec::PortMode::Mesh => "mesh",
                crate::spec::PortMode::Host => "host",
            }
            .to_string(),
            host_ip: p.host_ip.map(|ip| ip.to_string()),
        }
    }
}

/// A published port a node accepts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct NodePort {
    /// `1883/tcp`.
    pub port: String,
    pub service: String,
    /// `mesh` or `host`.
    pub mode: String,
}

/// A drain in progress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct DrainProgress {
    /// RFC 3339: what has not moved by then is stopped.
    pub deadline: Option<String>,
    /// Replicas still on the node.
    pub remaining: u32,
}

/// `GET /api/v1/cluster/info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ClusterInfo {
    pub cluster: String,
    pub version: String,
    pub nodes: Vec<NodeStatus>,
    /// The control plane's servers: one on sled, every one that shares
    /// the etcd store otherwise.
    #[serde(default)]
    pub servers: Vec<ServerStatus>,
}

/// One server of the control plane in `GET /api/v1/cluster/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ServerStatus {
    pub id: String,
    /// Its API, `HOST:PORT`.
    pub address: String,
    /// It leads: it alone schedules and commands the nodes.
    pub leader: bool,
    /// It holds its lease in the store now.
    pub healthy: bool,
}

/// A version of a service (`GET /api/v1/services/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VersionInfo {
    pub version: u64,
    pub image: String,
    /// The digest the version's replicas run, recorded when it was deployed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_digest: Option<String>,
    /// RFC 3339.
    pub deployed_at: String,
    pub deployed_by: String,
    /// "rollback to 3" and the like.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// `POST /api/v1/webhooks` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    /// `owner/name` as the git host names it.
    #[schemars(pattern(r"^[A-Za-z0-9._-]+/[A-Za-z0-9._/-]+$"), length(max = 200))]
    pub repo: String,
    #[schemars(pattern(crate::names::LABEL_PATTERN))]
    pub service: String,
    #[serde(default = "default_branch")]
    #[schemars(pattern(r"^\S+$"), length(min = 1, max = 200))]
    pub branch: String,
    /// The shared secret the git host signs deliveries with.
    #[schemars(length(min = 8))]
    pub secret: String,
}

fn default_branch() -> String {
    "main".to_string()
}

impl WebhookRequest {
    pub fn validate(&self) -> Result<(), crate::ApiError> {
        crate::names::checked_name("service", &self.service)?;
        let repo_ok = !self.repo.is_empty()
            && self.repo.len() <= 200
            && self.repo.contains('/')
            && self
                .repo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if !repo_ok {
            return Err(crate::ApiError::bad_request(format!(
                "invalid repo {:?}: expected owner/name",
                self.repo
            )));
        }
        if self.branch.is_empty()
            || self.branch.len() > 200
            || self.branch.chars().any(|c| c.is_whitespace())
        {
            return Err(crate::ApiError::bad_request("invalid branch"));
        }
        if self.secret.len() < 8 {
            return Err(crate::ApiError::bad_request(
                "the webhook secret must be at least 8 characters",
            ));
        }
        Ok(())
    }
}

/// `POST /api/v1/services/{name}/exec` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// The program and its arguments (no shell: `["sh", "-c", "..."]` for one).
    #[schemars(length(min = 1))]
    pub command: Vec<String>,
    /// The replica; default the service's first ready replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Killed after this many seconds (default 30, at most 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = MAX_EXEC_TIMEOUT_SECS))]
    pub timeout_secs: Option<u64>,
}

/// Longest exec timeout.
pub const MAX_EXEC_TIMEOUT_SECS: u64 = 3600;
/// Exec timeout when none is given.
pub const DEFAULT_EXEC_TIMEOUT_SECS: u64 = 30;

impl ExecRequest {
    /// A command to run, within bounds: some program, no NUL byte (the
    /// runtime cannot pass one), 64 KiB at most in all; a timeout of 1 s
    /// to an hour; an instance id of letters, digits, '-' and '.'.
    pub fn check(&self) -> Result<(), crate::ApiError> {
        let bad = |m: String| Err(crate::ApiError::bad_request(m));
        if self.command.first().is_none_or(|p| p.is_empty()) {
            return bad("command must name a program: [\"ls\", \"/\"]".into());
        }
        if self.command.iter().any(|a| a.contains('\0')) {
            return bad("command must not contain a NUL byte".into());
        }
        let size: usize = self.command.iter().map(String::len).sum();
        if size > 64 * 1024 {
            return bad(format!("command is {size} bytes; at most 65536"));
        }
        if let Some(t) = self.timeout_secs {
            if !(1..=MAX_EXEC_TIMEOUT_SECS).contains(&t) {
                return bad(format!(
                    "timeout_secs {t}: must be between 1 and {MAX_EXEC_TIMEOUT_SECS}"
                ));
            }
        }
        if let Some(i) = &self.instance {
            let ok = !i.is_empty()
                && i.len() <= 128
                && i.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'
                });
            if !ok {
                let shown: String = i.chars().take(80).collect();
                return bad(format!(
                    "invalid instance {shown:?}: an instance id from status, like web.0.1a2b3c"
                ));
            }
        }
        Ok(())
    }
}

/// `POST /api/v1/services/{name}/exec` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct ExecResponse {
    pub instance: String,
    pub exit_code: u32,
    pub stdout: String,
    pub stderr: String,
    /// Output past 1 MiB per stream was dropped.
    #[serde(default)]
    pub truncated: bool,
    /// Killed at `timeout_secs` (exit code 137).
    #[serde(default)]
    pub timed_out: bool,
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schemars(pattern(crate::names::LABEL_PATTERN))]
    pub name: String,
    pub role: crate::auth::Role,
    /// Scope the token to one project.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(crate::names::LABEL_PATTERN))]
    pub project: Option<String>,
}

/// `POST /api/v1/tokens` answer: the only time the value is shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct TokenCreated {
    pub name: String,
    pub role: crate::auth::Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub token: String,
}
