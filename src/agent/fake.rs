//! A fake node for the control plane's logic tests: replicas are entries
//! in a map, "processes" get made-up PIDs, crashes are sent as events, and
//! every call is recorded.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::{
    AgentError, AgentEvent, Capacity, Instance, InstanceSpec, LogLine, NodeAgent, ProcessState,
};

#[derive(Default)]
struct Inner {
    instances: BTreeMap<String, Instance>,
    next_pid: u32,
    calls: Vec<String>,
    events: Vec<mpsc::Sender<AgentEvent>>,
}

/// See the module doc. Images named `missing...` fail to pull; images
/// named `broken...` fail to start.
#[derive(Default)]
pub struct FakeAgent {
    inner: Mutex<Inner>,
    /// Its node id; "fake-node" when unset.
    node: Option<String>,
    /// Its size; 4 CPUs and 8 GiB when unset.
    capacity: Option<Capacity>,
    /// How often it was told its connection ends.
    pub disconnects: std::sync::atomic::AtomicUsize,
    /// How often a replica's usage was asked for.
    pub usage_calls: std::sync::atomic::AtomicUsize,
}

impl FakeAgent {
    /// A fake node with its own id.
    pub fn named(id: &str) -> Self {
        Self {
            node: Some(id.to_string()),
            ..Self::default()
        }
    }

    /// A fake node with its own id and size.
    pub fn sized(id: &str, cpu: f64, memory_bytes: u64) -> Self {
        Self {
            capacity: Some(Capacity { cpu, memory_bytes }),
            ..Self::named(id)
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts a replica in place as if it ran before the control plane started.
    pub fn preload(&self, instance: Instance) {
        self.lock().instances.insert(instance.id.clone(), instance);
    }

    /// The replicas now.
    pub fn instances(&self) -> Vec<Instance> {
        self.lock().instances.values().cloned().collect()
    }

    /// Calls so far, like `start web.0.abc` or `remove web.1.def`.
    pub fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    /// Makes a replica's process exit with `code`, as containerd would report.
    pub async fn crash(&self, id: &str, code: u32, oom_killed: bool) {
        let senders = {
            let mut inner = self.lock();
            if let Some(i) = inner.instances.get_mut(id) {
                i.state = ProcessState::Exited { code };
                i.pid = None;
            }
            inner.events.clone()
        };
        for tx in senders {
            let _ = tx
                .send(AgentEvent::Exited {
                    id: id.to_string(),
                    code,
                    oom_killed,
                    at: SystemTime::now(),
                })
                .await;
        }
    }
}

#[async_trait::async_trait]
impl NodeAgent for FakeAgent {
    fn disconnect(&self) {
        self.disconnects
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }

    fn node_id(&self) -> &str {
        self.node.as_deref().unwrap_or("fake-node")
    }

    fn capacity(&self) -> Capacity {
        if let Some(c) = self.capacity {
            return c;
        }
        Capacity {
            cpu: 4.0,
            memory_bytes: 8 << 30,
        }
    }

    async fn pull(&self, image: &str, _mode: super::PullMode) -> Result<super::Pulled, AgentError> {
        self.lock().calls.push(format!("pull {image}"));
        if image.starts_with("missing") {
            return Err(AgentError::Runtime(cri::CriError::ImageNotFound {
                reference: image.to_string(),
            }));
        }
        Ok(super::Pulled {
            digest: format!("sha256:{:064x}", image.len()),
            note: None,
        })
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<super::Started, AgentError> {
        let mut inner = self.lock();
        inner.calls.push(format!("start {}", spec.id));
        if spec.image.starts_with("broken") {
            return Err(AgentError::Other(format!(
                "exec {}: no such file",
                spec.image
            )));
        }
        inner.next_pid += 1;
        let pid = 1000 + inner.next_pid;
        inner.instances.insert(
            spec.id.clone(),
            Instance {
                id: spec.id.clone(),
                node: self.node_id().to_string(),
                service: spec.service.clone(),
                project: spec.project.clone(),
                version: spec.version,
                slot: spec.slot,
                pid: Some(pid),
                state: ProcessState::Running,
                ip: None,
                run: 0,
                restart: Default::default(),
            },
        );
        Ok(super::Started { pid, ip: None })
    }

    async fn restart(&self, id: &str) -> Result<u32, AgentError> {
        let mut inner = self.lock();
        inner.calls.push(format!("restart {id}"));
        inner.next_pid += 1;
        let pid = 1000 + inner.next_pid;
        let i = inner
            .instances
            .get_mut(id)
            .ok_or_else(|| AgentError::Other(format!("no replica {id}")))?;
        i.state = ProcessState::Running;
        i.pid = Some(pid);
        Ok(pid)
    }

    async fn set_network(
        &self,
        projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
        _internal: &[std::net::Ipv4Addr],
        ports: &[network::ports::PortRule],
    ) -> Result<(), AgentError> {
        let mut me = self.lock();
        me.calls
            .push(format!("isolation {} projects", projects.len()));
        if !ports.is_empty() {
            me.calls.push(format!("ports {}", ports.len()));
        }
        Ok(())
    }

    async fn kill(&self, id: &str) -> Result<(), AgentError> {
        self.lock().calls.push(format!("kill {id}"));
        Ok(())
    }

    async fn remove(&self, id: &str, _grace: Duration) -> Result<(), AgentError> {
        let mut inner = self.lock();
        inner.calls.push(format!("remove {id}"));
        inner.instances.remove(id);
        Ok(())
    }

    async fn list(&self) -> Result<Vec<Instance>, AgentError> {
        Ok(self.instances())
    }

    async fn list_service(&self, service: &str) -> Result<Vec<Instance>, AgentError> {
        Ok(self
            .instances()
            .into_iter()
            .filter(|i| i.service == service)
            .collect())
    }

    async fn events(&self) -> Result<mpsc::Receiver<AgentEvent>, AgentError> {
        let (tx, rx) = mpsc::channel(64);
        self.lock().events.push(tx);
        Ok(rx)
    }

    async fn logs_tail(&self, id: &str, _n: usize) -> Result<Vec<LogLine>, AgentError> {
        Ok(vec![LogLine::parse(&format!(
            "2026-01-01T00:00:00Z stdout F hello from {id}"
        ))])
    }

    fn logs_follow(&self, _id: &str) -> mpsc::Receiver<LogLine> {
        mpsc::channel(1).1
    }

    async fn usage(&self, _id: &str) -> Result<cri::metrics::Usage, AgentError> {
        self.usage_calls
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(cri::metrics::Usage {
            memory_bytes: 4096,
            ..Default::default()
        })
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        _timeout: Duration,
    ) -> Result<cri::ExecOutput, AgentError> {
        let inner = self.lock();
        if !inner.instances.contains_key(id) {
            return Err(AgentError::NotFound(id.to_string()));
        }
        Ok(cri::ExecOutput {
            stdout: command.join(" "),
            ..Default::default()
        })
    }

    /// Echoes the command, then what comes on stdin until it closes.
    async fn attach(
        &self,
        id: &str,
        command: &[String],
        _opts: cri::AttachOptions,
    ) -> Result<cri::Attached, AgentError> {
        if !self.lock().instances.contains_key(id) {
            return Err(AgentError::NotFound(id.to_string()));
        }
        let (input, mut rx) = tokio::sync::mpsc::channel(16);
        let (tx, output) = tokio::sync::mpsc::channel(16);
        let first = command.join(" ").into_bytes();
        tokio::spawn(async move {
            let _ = tx.send(cri::AttachOutput::Stdout(first)).await;
            while let Some(cri::AttachInput::Stdin(bytes)) = rx.recv().await {
                let _ = tx.send(cri::AttachOutput::Stdout(bytes)).await;
            }
            let _ = tx.send(cri::AttachOutput::Exit(0)).await;
        });
        Ok(cri::Attached { input, output })
    }
}
