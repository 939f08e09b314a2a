//! The in-process node agent: replicas as containerd containers, found again
//! by their labels, logging through the orca binary's log shim into
//! `data_dir/logs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use cri::container::{LogTarget, TaskState};
use cri::events::CriEvent;
use cri::{ContainerConfig, Cri, CriError, NetworkMode};
use tokio::sync::mpsc;

use super::{
    AgentError, AgentEvent, Capacity, Instance, InstanceSpec, LogLine, NodeAgent, ProcessState,
};

/// Label with the replica's slot number.
pub const SLOT_LABEL: &str = "orca.slot";
/// Label with the node that runs the replica.
pub const NODE_LABEL: &str = "orca.node";

/// A node agent over a local containerd.
pub struct LocalAgent {
    cri: Cri,
    node_id: String,
    log_dir: PathBuf,
    shim: PathBuf,
    capacity: Capacity,
}

impl LocalAgent {
    /// `log_dir` holds one log file per replica; `shim` is the binary
    /// containerd starts as each replica's logger (the orca binary).
    pub fn new(cri: Cri, node_id: String, log_dir: PathBuf, shim: PathBuf) -> Self {
        Self {
            cri,
            node_id,
            log_dir,
            shim,
            capacity: host_capacity(),
        }
    }

    fn log_file(&self, id: &str) -> PathBuf {
        self.log_dir.join(format!("{id}.log"))
    }

    fn log_target(&self, id: &str) -> LogTarget {
        LogTarget::Shim {
            binary: self.shim.clone(),
            file: self.log_file(id),
        }
    }
}

/// CPU cores and memory of this host.
pub fn host_capacity() -> Capacity {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Capacity { cpu, memory_bytes }
}

fn instance_of(info: cri::container::ContainerInfo) -> Option<Instance> {
    let l = &info.labels;
    let service = l.get(cri::labels::SERVICE)?.clone();
    let state = match &info.task {
        None => ProcessState::Created,
        Some(t) if t.state.is_alive() => ProcessState::Running,
        Some(t) if t.state == TaskState::Stopped => ProcessState::Exited {
            code: t.exit_code.unwrap_or(0),
        },
        Some(_) => ProcessState::Created,
    };
    Some(Instance {
        id: info.id.clone(),
        service,
        project: l.get(cri::labels::PROJECT).cloned().unwrap_or_default(),
        version: l
            .get(cri::labels::VERSION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        slot: l
            .get(SLOT_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX),
        pid: info
            .task
            .as_ref()
            .filter(|t| t.state.is_alive())
            .map(|t| t.pid),
        state,
    })
}

#[async_trait::async_trait]
impl NodeAgent for LocalAgent {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    async fn pull(&self, image: &str) -> Result<String, AgentError> {
        Ok(self.cri.pull(image).await?.digest)
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<u32, AgentError> {
        let image = match self.cri.image(&spec.image).await {
            Ok(i) => i,
            Err(e) if e.is_not_found() => self.cri.pull(&spec.image).await?,
            Err(e) => return Err(e.into()),
        };
        let log = self.log_target(&spec.id);
        let mut labels = HashMap::from([
            (cri::labels::SERVICE.to_string(), spec.service.clone()),
            (cri::labels::PROJECT.to_string(), spec.project.clone()),
            (cri::labels::VERSION.to_string(), spec.version.to_string()),
            (cri::labels::INSTANCE.to_string(), spec.id.clone()),
            (SLOT_LABEL.to_string(), spec.slot.to_string()),
            (NODE_LABEL.to_string(), self.node_id.clone()),
        ]);
        if let Some(f) = log.file() {
            labels.insert(cri::labels::LOG_PATH.to_string(), f.display().to_string());
        }
        let resources = cri::Resources {
            memory: spec.memory_bytes.map(cri::MemoryLimit),
            cpu: spec.cpu.map(cri::CpuLimit::new).transpose()?,
        };
        let config = ContainerConfig {
            id: spec.id.clone(),
            hostname: Some(format!("{}-{}", spec.service, spec.slot)),
            command: spec.command.clone(),
            env: spec.env.clone(),
            resources,
            network: NetworkMode::Isolated,
            labels,
            ..Default::default()
        };
        self.cri.create_container(&image, &config).await?;
        match self.cri.start_task(&spec.id, &log).await {
            Ok(pid) => Ok(pid),
            Err(e) => {
                if let Err(cleanup) = self.cri.remove_container(&spec.id).await {
                    tracing::warn!(instance = %spec.id, error = %cleanup, "cleanup after a failed start");
                }
                cri::logs::remove_logs(&self.log_file(&spec.id));
                Err(e.into())
            }
        }
    }

    async fn restart(&self, id: &str) -> Result<u32, AgentError> {
        if let Some(task) = self.cri.task(id).await? {
            if task.state.is_alive() {
                return Ok(task.pid);
            }
            self.cri.delete_task(id).await?;
        }
        Ok(self.cri.start_task(id, &self.log_target(id)).await?)
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
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, AgentError> {
        let all = self
            .cri
            .list_containers(&[cri::labels::has(cri::labels::SERVICE)])
            .await?;
        Ok(all.into_iter().filter_map(instance_of).collect())
    }

    async fn list_service(&self, service: &str) -> Result<Vec<Instance>, AgentError> {
        let all = self
            .cri
            .list_containers(&[cri::labels::filter(cri::labels::SERVICE, service)])
            .await?;
        Ok(all.into_iter().filter_map(instance_of).collect())
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

    async fn usage(&self, id: &str) -> Result<cri::metrics::Usage, AgentError> {
        Ok(self.cri.usage(id).await?)
    }
}
