//! A node that joined, as the control plane sees it: a [`NodeAgent`] whose
//! calls go down the node's stream and whose answers, events and log
//! lines come back up it. A node that does not answer in time, or whose
//! stream has ended, is `Unreachable`; its own failures keep their kind.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::wire::{Answer, Call, Down, WireError};
use crate::agent::backup::Received;
use crate::agent::direct::{DirectTarget, Listening, Sent};
use crate::agent::{
    AgentError, AgentEvent, Capacity, Instance, InstanceSpec, LogLine, NodeAgent, PullMode, Pulled,
};

/// How long a quick call may take.
const QUICK: Duration = Duration::from_secs(15);
/// How long a pull may take.
const PULL: Duration = Duration::from_secs(600);
/// How long a start may take (it may pull first).
const START: Duration = Duration::from_secs(300);

type Pending = oneshot::Sender<Result<Answer, WireError>>;

/// See the module doc.
pub struct RemoteAgent {
    node_id: String,
    capacity: Capacity,
    down: Mutex<Option<mpsc::Sender<Result<Down, tonic::Status>>>>,
    next: AtomicU64,
    pending: Mutex<HashMap<u64, Pending>>,
    events: Mutex<Vec<mpsc::Sender<AgentEvent>>>,
    follows: Mutex<HashMap<u64, mpsc::Sender<LogLine>>>,
    /// Where each interactive exec's output goes, by call id.
    attached: Mutex<HashMap<u64, mpsc::Sender<cri::AttachOutput>>>,
    /// Where each volume export's pieces go, by call id.
    transfers: Mutex<HashMap<u64, mpsc::Sender<crate::agent::archive::Piece>>>,
    /// Dropped to end the stream to the node (it was removed).
    kill: Mutex<Option<oneshot::Sender<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RemoteAgent {
    pub fn new(
        node_id: String,
        capacity: Capacity,
        down: mpsc::Sender<Result<Down, tonic::Status>>,
        kill: oneshot::Sender<()>,
    ) -> Self {
        Self {
            kill: Mutex::new(Some(kill)),
            node_id,
            capacity,
            down: Mutex::new(Some(down)),
            next: AtomicU64::new(1),
            pending: Mutex::new(HashMap::new()),
            events: Mutex::new(Vec::new()),
            follows: Mutex::new(HashMap::new()),
            attached: Mutex::new(HashMap::new()),
            transfers: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) async fn call_with_id(
        &self,
        id: u64,
        call: Call,
        limit: Duration,
    ) -> Result<Answer, AgentError> {
        self.call_as(id, call, limit).await
    }

    pub(super) async fn send_down(&self, message: Down) -> Result<(), AgentError> {
        self.sender()?
            .send(Ok(message))
            .await
            .map_err(|_| self.unreachable("connection closed"))
    }

    pub(super) fn transfer(&self, id: u64) -> Option<mpsc::Sender<crate::agent::archive::Piece>> {
        lock(&self.transfers).get(&id).cloned()
    }

    pub(super) fn start_transfer(&self, id: u64, tx: mpsc::Sender<crate::agent::archive::Piece>) {
        lock(&self.transfers).insert(id, tx);
    }

    pub(super) fn end_transfer(&self, id: u64) {
        lock(&self.transfers).remove(&id);
    }

    fn unreachable(&self, reason: impl Into<String>) -> AgentError {
        AgentError::Unreachable {
            node: self.node_id.clone(),
            reason: reason.into(),
        }
    }

    fn sender(&self) -> Result<mpsc::Sender<Result<Down, tonic::Status>>, AgentError> {
        lock(&self.down)
            .clone()
            .ok_or_else(|| self.unreachable("connection closed"))
    }

    pub(super) async fn call(&self, call: Call, limit: Duration) -> Result<Answer, AgentError> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.call_as(id, call, limit).await
    }

    /// [`Self::call`] under a given call id.
    async fn call_as(&self, id: u64, call: Call, limit: Duration) -> Result<Answer, AgentError> {
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let sent = self.sender()?.send(Ok(Down::call(id, call))).await;
        if sent.is_err() {
            lock(&self.pending).remove(&id);
            return Err(self.unreachable("connection closed"));
        }
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(Ok(answer))) => Ok(answer),
            Ok(Ok(Err(e))) => Err(e.into_agent_error()),
            Ok(Err(_)) => Err(self.unreachable("connection closed")),
            Err(_) => {
                lock(&self.pending).remove(&id);
                Err(self.unreachable(format!("no answer within {}s", limit.as_secs())))
            }
        }
    }

    /// An answer came up.
    pub fn answered(&self, id: u64, result: Result<Answer, WireError>) {
        if let Some(tx) = lock(&self.pending).remove(&id) {
            let _ = tx.send(result);
        }
    }

    /// An event came up.
    pub fn event(&self, event: AgentEvent) {
        lock(&self.events).retain(|tx| match tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(node = %self.node_id, "event dropped: a follower is behind");
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    /// A line of a followed log came up; false when nobody follows it any more.
    pub async fn log_line(&self, id: u64, line: LogLine) -> bool {
        let tx = lock(&self.follows).get(&id).cloned();
        match tx {
            Some(tx) => tx.send(line).await.is_ok(),
            None => false,
        }
    }

    /// A followed log ended.
    pub fn log_end(&self, id: u64) {
        lock(&self.follows).remove(&id);
    }

    /// Output of an interactive exec came up. It never waits: a reader so
    /// far behind that its buffer is full loses the session, rather than
    /// holding up the node's stream (and its heartbeats).
    pub fn attached_output(&self, id: u64, output: cri::AttachOutput) {
        let mut attached = lock(&self.attached);
        let Some(tx) = attached.get(&id) else {
            return;
        };
        let last = matches!(output, cri::AttachOutput::Exit(_));
        if tx.try_send(output).is_err() || last {
            attached.remove(&id);
        }
    }

    /// The stream ended: every waiting call fails as unreachable, and
    /// event followers see their stream end.
    pub fn closed(&self) {
        lock(&self.down).take();
        lock(&self.kill).take();
        lock(&self.pending).clear();
        lock(&self.events).clear();
        lock(&self.follows).clear();
        lock(&self.attached).clear();
        lock(&self.transfers).clear();
    }

    pub(super) fn unexpected(&self, answer: Answer) -> AgentError {
        AgentError::Other(format!(
            "node {} gave an unexpected answer: {answer:?}",
            self.node_id
        ))
    }
}

#[async_trait::async_trait]
impl NodeAgent for RemoteAgent {
    fn node_id(&self) -> &str {
        &self.node_id
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }

    async fn pull(&self, image: &str, mode: PullMode) -> Result<Pulled, AgentError> {
        let call = Call::Pull {
            image: image.to_string(),
            mode,
        };
        match self.call(call, PULL).await? {
            Answer::Pulled(p) => Ok(p),
            other => Err(self.unexpected(other)),
        }
    }

    async fn start(&self, spec: &InstanceSpec) -> Result<crate::agent::Started, AgentError> {
        match self
            .call(Call::Start(Box::new(spec.clone())), START)
            .await?
        {
            Answer::Started(started) => Ok(started),
            other => Err(self.unexpected(other)),
        }
    }

    async fn restart(&self, id: &str) -> Result<u32, AgentError> {
        match self.call(Call::Restart { id: id.into() }, QUICK).await? {
            Answer::Pid(pid) => Ok(pid),
            other => Err(self.unexpected(other)),
        }
    }

    async fn set_network(
        &self,
        projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
        internal: &[std::net::Ipv4Addr],
        ports: &[network::ports::PortRule],
    ) -> Result<(), AgentError> {
        let call = Call::Isolation {
            projects: projects.clone(),
            internal: internal.to_vec(),
            ports: ports.to_vec(),
        };
        self.call(call, QUICK).await.map(|_| ())
    }

    async fn kill(&self, id: &str) -> Result<(), AgentError> {
        self.call(Call::Kill { id: id.into() }, QUICK)
            .await
            .map(|_| ())
    }

    async fn remove(&self, id: &str, grace: Duration) -> Result<(), AgentError> {
        let call = Call::Remove {
            id: id.into(),
            grace_ms: grace.as_millis() as u64,
        };
        self.call(call, grace + QUICK).await.map(|_| ())
    }

    async fn list(&self) -> Result<Vec<Instance>, AgentError> {
        match self.call(Call::List, QUICK).await? {
            Answer::Instances(list) => Ok(list),
            other => Err(self.unexpected(other)),
        }
    }

    async fn list_service(&self, service: &str) -> Result<Vec<Instance>, AgentError> {
        let call = Call::ListService {
            service: service.into(),
        };
        match self.call(call, QUICK).await? {
            Answer::Instances(list) => Ok(list),
            other => Err(self.unexpected(other)),
        }
    }

    async fn events(&self) -> Result<mpsc::Receiver<AgentEvent>, AgentError> {
        self.sender()?;
        let (tx, rx) = mpsc::channel(1024);
        lock(&self.events).push(tx);
        Ok(rx)
    }

    async fn logs_tail(&self, id: &str, n: usize) -> Result<Vec<LogLine>, AgentError> {
        match self
            .call(Call::LogsTail { id: id.into(), n }, QUICK)
            .await?
        {
            Answer::Logs(lines) => Ok(lines),
            other => Err(self.unexpected(other)),
        }
    }

    fn logs_follow(&self, id: &str) -> mpsc::Receiver<LogLine> {
        let (tx, rx) = mpsc::channel(256);
        let call_id = self.next.fetch_add(1, Ordering::Relaxed);
        let Ok(down) = self.sender() else {
            return rx;
        };
        lock(&self.follows).insert(call_id, tx.clone());
        let call = Call::LogsFollow { id: id.into() };
        tokio::spawn(async move {
            if down.send(Ok(Down::call(call_id, call))).await.is_err() {
                return;
            }
            // When the reader goes, the node stops following.
            tx.closed().await;
            let _ = down.send(Ok(Down::Cancel { id: call_id })).await;
        });
        rx
    }

    async fn volumes(&self) -> Result<Vec<crate::agent::volumes::VolumeInfo>, AgentError> {
        match self.call(Call::Volumes, QUICK).await? {
            Answer::Volumes(v) => Ok(v),
            other => Err(self.unexpected(other)),
        }
    }

    async fn remove_volume(&self, project: &str, name: &str) -> Result<bool, AgentError> {
        self.remove(project, name, START).await
    }

    async fn export_volume(
        &self,
        project: &str,
        name: &str,
        pause: bool,
        gzip: bool,
    ) -> Result<crate::agent::backup::Export, AgentError> {
        self.export(project, name, pause, gzip).await
    }

    async fn receive_volume(
        &self,
        project: &str,
        name: &str,
        gzip: bool,
        data: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<crate::agent::backup::Received, AgentError> {
        self.receive(project, name, gzip, data).await
    }

    async fn listen_volume(&self, p: &str, n: &str) -> Result<Listening, AgentError> {
        self.listen(p, n).await
    }

    async fn send_volume(&self, p: &str, n: &str, to: &DirectTarget) -> Result<Sent, AgentError> {
        self.send(p, n, to).await
    }

    async fn await_volume(
        &self,
        token: &str,
        cancel: bool,
    ) -> Result<Option<Received>, AgentError> {
        self.await_transfer(token, cancel).await
    }

    async fn commit_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let call = Call::CommitVolume {
            project: project.into(),
            name: name.into(),
        };
        self.call(call, START).await.map(|_| ())
    }

    async fn discard_volume(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let call = Call::DiscardVolume {
            project: project.into(),
            name: name.into(),
        };
        self.call(call, QUICK).await.map(|_| ())
    }

    async fn volume_users(&self, project: &str, name: &str) -> Result<Vec<String>, AgentError> {
        let call = Call::VolumeUsers {
            project: project.into(),
            name: name.into(),
        };
        match self.call(call, QUICK).await? {
            Answer::Ids(ids) => Ok(ids),
            other => Err(self.unexpected(other)),
        }
    }

    async fn usage(&self, id: &str) -> Result<cri::metrics::Usage, AgentError> {
        match self.call(Call::Usage { id: id.into() }, QUICK).await? {
            Answer::Usage(u) => Ok(u),
            other => Err(self.unexpected(other)),
        }
    }

    async fn exec(
        &self,
        id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<cri::ExecOutput, AgentError> {
        let call = Call::Exec {
            id: id.into(),
            command: command.to_vec(),
            timeout_ms: timeout.as_millis() as u64,
        };
        // The node kills the command at the timeout; the answer then needs
        // the time to come back.
        match self.call(call, timeout + QUICK).await? {
            Answer::Exec(out) => Ok(out),
            other => Err(self.unexpected(other)),
        }
    }

    async fn attach(
        &self,
        id: &str,
        command: &[String],
        opts: cri::AttachOptions,
    ) -> Result<cri::Attached, AgentError> {
        let call_id = self.next.fetch_add(1, Ordering::Relaxed);
        let (out, output) = mpsc::channel(1024);
        lock(&self.attached).insert(call_id, out);
        let call = Call::Attach {
            id: id.into(),
            command: command.to_vec(),
            opts,
        };
        let started = match self.call_as(call_id, call, QUICK).await {
            Ok(Answer::Done) => self.sender(),
            Ok(other) => Err(self.unexpected(other)),
            Err(e) => Err(e),
        };
        let down = match started {
            Ok(down) => down,
            Err(e) => {
                lock(&self.attached).remove(&call_id);
                return Err(e);
            }
        };
        let (input, mut rx) = mpsc::channel(64);
        tokio::spawn(async move {
            while let Some(input) = rx.recv().await {
                let sent = down.send(Ok(Down::Attach { id: call_id, input })).await;
                if sent.is_err() {
                    return;
                }
            }
            // The caller is gone: the node kills the command.
            let _ = down.send(Ok(Down::Cancel { id: call_id })).await;
        });
        Ok(cri::Attached { input, output })
    }

    fn disconnect(&self) {
        self.closed();
    }

    async fn serve(&self, tables: &super::wire::Tables) -> Result<(), AgentError> {
        let call = Call::Serve(Box::new(tables.clone()));
        self.call(call, QUICK).await.map(|_| ())
    }

    async fn set_peers(&self, peers: &[network::Peer]) -> Result<(), AgentError> {
        self.call(Call::Peers(peers.to_vec()), QUICK)
            .await
            .map(|_| ())
    }

    async fn check(
        &self,
        id: &str,
        readiness: Option<crate::agent::probe::Check>,
        liveness: Option<crate::agent::probe::Check>,
    ) -> Result<(), AgentError> {
        let call = Call::Check {
            id: id.into(),
            readiness: readiness.map(Box::new),
            liveness: liveness.map(Box::new),
        };
        self.call(call, QUICK).await.map(|_| ())
    }
}
