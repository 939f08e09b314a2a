//! The in-process node agent: replicas as containerd containers, found again
//! by their labels, logging through the orca binary's log shim into
//! `data_dir/logs`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cri::container::LogTarget;
use cri::events::CriEvent;
use cri::{BindMount, Cri, CriError};
use network::NodeNetwork;
use std::sync::Arc;
use tokio::sync::mpsc;

use super::{
    AgentError, AgentEvent, Capacity, Instance, InstanceSpec, LogLine, NodeAgent, PullMode, Pulled,
};

/// Label with the replica's slot number.
pub const SLOT_LABEL: &str = "orca.slot";
/// Label with the node that runs the replica.
pub const NODE_LABEL: &str = "orca.node";
/// The job run a replica belongs to (jobs only).
pub const RUN_LABEL: &str = "orca.run";
/// A job's restart policy (jobs only; absent means `always`).
pub const RESTART_LABEL: &str = "orca.restart";

/// A node agent over a local containerd.
pub struct LocalAgent {
    pub(super) cri: Cri,
    pub(super) node_id: String,
    pub(super) log_dir: PathBuf,
    /// Per-replica resolv.conf and hosts files.
    pub(super) net_dir: PathBuf,
    shim: PathBuf,
    capacity: Capacity,
    pub(super) network: Option<Arc<NodeNetwork>>,
    /// True when the node serves DNS on the bridge address.
    dns: bool,
    /// Named volumes and bind mount rules.
    pub(super) volumes: super::volumes::Volumes,
    /// Replicas' files and secret files.
    pub(super) files: super::files::Files,
    /// `[volumes] devices`: the device nodes replicas may be given.
    pub(super) devices: Vec<String>,
    /// Held from the lease check to the start of a replica with volumes,
    /// so that two starts never both find a volume free.
    pub(super) volume_starts: tokio::sync::Mutex<()>,
    /// Ports open for volumes sent straight from other nodes.
    pub(super) direct: super::direct::PendingTransfers,
}

impl LocalAgent {
    /// Replica logs go to `data_dir/logs`; `shim` is the binary containerd
    /// starts as each replica's logger (the orca binary). `network` gives
    /// each replica a namespace on the node's bridge; without it replicas
    /// get an isolated namespace with loopback only.
    pub fn new(
        cri: Cri,
        node_id: String,
        data_dir: &std::path::Path,
        shim: PathBuf,
        network: Option<Arc<NodeNetwork>>,
    ) -> Self {
        Self {
            cri,
            node_id,
            log_dir: data_dir.join("logs"),
            net_dir: data_dir.join("net"),
            shim,
            capacity: super::host::capacity(),
            network,
            dns: false,
            volumes: super::volumes::Volumes::new(data_dir, Vec::new()),
            files: super::files::Files::new(data_dir, &data_dir.join("run")),
            devices: Vec::new(),
            volume_starts: tokio::sync::Mutex::new(()),
            direct: Default::default(),
        }
    }

    /// What replicas may have of the host (`[volumes]`): bind mounts only
    /// beneath `host_paths`, device nodes matching `devices`; secret files
    /// on a tmpfs under `run_dir`.
    pub fn with_host(
        mut self,
        data_dir: &std::path::Path,
        run_dir: &std::path::Path,
        host_paths: Vec<PathBuf>,
        devices: Vec<String>,
    ) -> Self {
        self.volumes = super::volumes::Volumes::new(data_dir, host_paths);
        self.files = super::files::Files::new(data_dir, run_dir);
        self.devices = devices;
        self
    }

    /// Replicas resolve through the node's DNS server on the bridge address.
    pub fn with_dns(mut self) -> Self {
        self.dns = true;
        self
    }

    /// resolv.conf and hosts for a replica, as bind mounts.
    pub(super) fn net_files(
        &self,
        id: &str,
        hostname: &str,
        ip: Option<std::net::Ipv4Addr>,
    ) -> Result<Vec<BindMount>, AgentError> {
        let dir = self.net_dir.join(id);
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::Other(format!("create {}: {e}", dir.display())))?;
        let mut hosts =
            String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        if let Some(ip) = ip {
            hosts.push_str(&format!("{ip}\t{hostname}\n"));
        }
        let write = |name: &str, text: &str| {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| AgentError::Other(format!("write {}: {e}", path.display())))?;
            Ok::<_, AgentError>(path)
        };
        let hosts_path = write("hosts", &hosts)?;
        let resolv = match self.network.as_ref().filter(|_| self.dns) {
            Some(net) => format!("nameserver {}\noptions ndots:1\n", net.gateway()),
            None => super::host::resolv_conf(),
        };
        let resolv_path = write("resolv.conf", &resolv)?;
        Ok(vec![
            BindMount {
                source: hosts_path,
                destination: "/etc/hosts".into(),
                read_only: true,
            },
            BindMount {
                source: resolv_path,
                destination: "/etc/resolv.conf".into(),
                read_only: true,
            },
        ])
    }

    pub(super) fn log_file(&self, id: &str) -> PathBuf {
        self.log_dir.join(format!("{id}.log"))
    }

    pub(super) fn log_target(&self, id: &str) -> LogTarget {
        LogTarget::Shim {
            binary: self.shim.clone(),
            file: self.log_file(id),
        }
    }
}

impl LocalAgent {
    fn with_addresses(&self, mut list: Vec<Instance>) -> Vec<Instance> {
        if let Some(net) = &self.network {
            for i in &mut list {
                i.ip = net.address(&i.id);
            }
        }
        list
    }

    /// Takes a removed replica off the network, logging what will not go.
    pub(super) async fn release_network(&self, id: &str) {
        if let Some(net) = &self.network {
            if let Err(e) = net.detach(id).await {
                tracing::warn!(instance = %id, error = %e, "network cleanup failed");
            }
        }
        let _ = std::fs::remove_dir_all(self.net_dir.join(id));
    }
}

#[async_trait::async_trait]
impl NodeAgent for LocalAgent {
    async fn set_peers(&self, peers: &[network::Peer]) -> Result<(), AgentError> {
        match &self.network {
            Some(net) => net
                .set_peers(peers)
                .await
                .map_err(|e| AgentError::Other(e.to_string())),
            None => Ok(()),
        }
    }

    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    async fn pull(&self, image: &str, mode: PullMode) -> Result<Pulled, AgentError> {
        let local = || async {
            match self.cri.image(image).await {
                Ok(i) => Ok(Some(i.digest)),
                Err(e) if e.is_not_found() => Ok(None),
                Err(e) => Err(AgentError::from(e)),
            }
        };
        let pulled = |digest| Pulled { digest, note: None };
        match mode {
            PullMode::Never => match local().await? {
                Some(digest) => Ok(pulled(digest)),
                None => Err(AgentError::Other(format!(
                    "image {image} is not on this node and pull is \"never\": \
                     load it with `orca image import FILE.tar` (or drop the archive in the import directory)"
                ))),
            },
            PullMode::Missing => match local().await? {
                Some(digest) => Ok(pulled(digest)),
                None => Ok(pulled(self.cri.pull(image).await?.digest)),
            },
            PullMode::Always { fallback } => match self.cri.pull(image).await {
                Ok(i) => Ok(pulled(i.digest)),
                Err(e) if fallback && e.is_unreachable() => match local().await? {
                    Some(digest) => Ok(Pulled {
                        note: Some(format!(
                            "registry unreachable ({e}); running the local image {digest}"
                        )),
                        digest,
                    }),
                    None => Err(e.into()),
                },
                Err(e) => Err(e.into()),
            },
        }
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<super::Started, AgentError> {
        self.start_replica(spec).await
    }

    async fn restart(&self, id: &str) -> Result<u32, AgentError> {
        self.restart_replica(id).await
    }

    async fn set_network(
        &self,
        projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
        internal: &[std::net::Ipv4Addr],
        ports: &[network::ports::PortRule],
    ) -> Result<(), AgentError> {
        let Some(net) = &self.network else {
            return Ok(());
        };
        let failed = |e: network::NetworkError| AgentError::Other(e.to_string());
        net.set_isolation(projects, internal)
            .await
            .map_err(failed)?;
        net.set_ports(&self.node_id, ports).await.map_err(failed)
    }

    async fn kill(&self, id: &str) -> Result<(), AgentError> {
        Ok(self.cri.kill(id, 9, true).await?)
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), AgentError> {
        match self.cri.task(id).await {
            Ok(Some(t)) if t.state.is_alive() => {
                self.cri.stop(id, grace).await?;
            }
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
        self.cri.remove_container(id).await?;
        cri::logs::remove_logs(&self.log_file(id));
        self.release_network(id).await;
        self.files.release(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, AgentError> {
        let all = self
            .cri
            .list_containers(&[cri::labels::has(cri::labels::SERVICE)])
            .await?;
        Ok(self.with_addresses(
            all.into_iter()
                .filter_map(|i| super::listed::instance_of(&self.node_id, i))
                .collect(),
        ))
    }

    async fn list_service(&self, service: &str) -> Result<Vec<Instance>, AgentError> {
        let all = self
            .cri
            .list_containers(&[cri::labels::filter(cri::labels::SERVICE, service)])
            .await?;
        Ok(self.with_addresses(
            all.into_iter()
                .filter_map(|i| super::listed::instance_of(&self.node_id, i))
                .collect(),
        ))
    }

    async fn events(&self) -> Result<mpsc::Receiver<AgentEvent>, AgentError> {
        let mut stream = self.cri.subscribe().await?;
        let (tx, rx) = mpsc::channel(1024);
        let cri = self.cri.clone();
        tokio::spawn(async move {
            while let Some(event) = stream.next().await {
                let mapped = match event {
                    CriEvent::TaskStart { container_id, pid } => Some(AgentEvent::Started {
                        id: container_id,
                        pid,
                    }),
                    CriEvent::TaskExit {
                        container_id,
                        exec_id,
                        exit_status,
                        exited_at,
                        ..
                    } if exec_id.is_empty() => {
                        // The cgroup lives until the task is deleted: read the OOM count now.
                        let oom_killed = cri.oom_killed(&container_id);
                        Some(AgentEvent::Exited {
                            id: container_id,
                            code: exit_status,
                            oom_killed,
                            at: exited_at.unwrap_or_else(SystemTime::now),
                        })
                    }
                    CriEvent::Resubscribed => Some(AgentEvent::Resync),
                    _ => None,
                };
                if let Some(m) = mapped {
                    if tx.send(m).await.is_err() {
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }

    async fn logs_tail(&self, id: &str, n: usize) -> Result<Vec<LogLine>, AgentError> {
        let file = self.log_file(id);
        tokio::task::spawn_blocking(move || cri::logs::tail(&file, n))
            .await
            .map_err(|e| AgentError::Other(e.to_string()))?
            .map_err(|e| {
                AgentError::Runtime(CriError::Io {
                    op: "read log",
                    path: PathBuf::new(),
                    source: e,
                })
            })
    }

    fn logs_follow(&self, id: &str) -> mpsc::Receiver<LogLine> {
        cri::logs::follow(&self.log_file(id), Duration::from_millis(100))
    }

    async fn volumes(&self) -> Result<Vec<super::volumes::VolumeInfo>, AgentError> {
        let v = self.volumes.clone();
        tokio::task::spawn_blocking(move || v.list())
            .await
            .map_err(|e| AgentError::Other(e.to_string()))
    }

    async fn remove_volume(&self, project: &str, name: &str) -> Result<bool, AgentError> {
        let _held = self.volume_starts.lock().await;
        let users = self.mounted_by(project, name).await?;
        if !users.is_empty() {
            return Err(AgentError::Other(format!(
                "volume {project}/{name} is mounted by {}",
                users.join(", ")
            )));
        }
        let v = self.volumes.clone();
        let (p, n) = (project.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || v.remove(&p, &n))
            .await
            .map_err(|e| AgentError::Other(e.to_string()))?
            .map_err(AgentError::Other)
    }

    async fn export_volume(
        &self,
        project: &str,
        name: &str,
        pause: bool,
        gzip: bool,
    ) -> Result<super::backup::Export, AgentError> {
        self.export(project, name, pause, gzip).await
    }

    async fn receive_volume(
        &self,
        project: &str,
        name: &str,
        gzip: bool,
        data: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<super::backup::Received, AgentError> {
        self.receive(project, name, gzip, data).await
    }

    async fn commit_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        self.commit(project, name).await
    }

    async fn listen_volume(
        &self,
        project: &str,
        name: &str,
    ) -> Result<super::direct::Listening, AgentError> {
        LocalAgent::listen_volume(self, project, name).await
    }

    async fn send_volume(
        &self,
        project: &str,
        name: &str,
        to: &super::direct::DirectTarget,
    ) -> Result<super::direct::Sent, AgentError> {
        LocalAgent::send_volume(self, project, name, to).await
    }

    async fn await_volume(
        &self,
        token: &str,
        cancel: bool,
    ) -> Result<Option<super::backup::Received>, AgentError> {
        LocalAgent::await_volume(self, token, cancel).await
    }

    async fn discard_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        self.discard(project, name)
    }

    async fn volume_users(&self, project: &str, name: &str) -> Result<Vec<String>, AgentError> {
        self.users(project, name).await
    }

    async fn usage(&self, id: &str) -> Result<cri::metrics::Usage, AgentError> {
        Ok(self.cri.usage(id).await?)
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecOutput, AgentError> {
        Ok(self.cri.exec(id, command, timeout).await?)
    }

    async fn attach(
        &self,
        id: &str,
        command: &[String],
        opts: cri::AttachOptions,
    ) -> Result<cri::Attached, AgentError> {
        Ok(self.cri.attach(id, command, opts).await?)
    }
}
