//! The node registry: every node of the cluster (the server's own and the
//! agents that joined) with its agent handle while connected, its state,
//! drain, capacity, labels, last heartbeat and last known replicas.
//!
//! One task owns it ([`owner`]); everyone else holds a [`Nodes`] handle,
//! sends it messages, and reads the snapshot it publishes after each change.

mod owner;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};

use crate::agent::{Capacity, Instance, NodeAgent};
use crate::store::{NodeRecord, Repo};

/// Whether a node can be asked to do things.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Connected and heard from within the grace period.
    Ready,
    /// Not connected, or silent past the grace period. Its replicas are
    /// taken to run as last reported.
    Disconnected,
}

impl NodeState {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Ready => "ready",
            NodeState::Disconnected => "disconnected",
        }
    }
}

/// One node.
#[derive(Clone)]
pub struct Node {
    /// What is kept in the store.
    pub record: NodeRecord,
    pub state: NodeState,
    /// Since when it has been in `state`.
    pub since: Instant,
    pub last_heartbeat: Option<SystemTime>,
    /// The handle to its agent while a connection exists.
    pub agent: Option<Arc<dyn NodeAgent>>,
    /// Bumped per connection, so that a late message of an old
    /// connection changes nothing.
    pub session: u64,
    /// The server's own node.
    pub local: bool,
    /// Its containerd answered at the last heartbeat (a remote node's; the
    /// server tracks its own).
    pub containerd_up: bool,
}

impl Node {
    /// A remote node not connected (yet), as of `now`.
    pub fn disconnected(record: NodeRecord, now: Instant) -> Node {
        Node {
            record,
            state: NodeState::Disconnected,
            since: now,
            last_heartbeat: None,
            agent: None,
            session: 0,
            local: false,
            containerd_up: true,
        }
    }

    pub fn id(&self) -> &str {
        &self.record.id
    }

    /// Connected and heard from: may be asked.
    pub fn ready(&self) -> bool {
        self.state == NodeState::Ready && self.agent.is_some()
    }

    /// Ready, and its containerd answers: may take new replicas.
    pub fn schedulable(&self) -> bool {
        self.ready() && self.containerd_up
    }

    pub fn capacity(&self) -> Capacity {
        Capacity {
            cpu: self.record.cpu,
            memory_bytes: self.record.memory_bytes,
        }
    }

    /// The agent when the node is ready.
    pub fn ready_agent(&self) -> Option<&Arc<dyn NodeAgent>> {
        self.agent.as_ref().filter(|_| self.ready())
    }

    /// When it was last heard from (RFC 3339), if since this server started.
    pub fn last_seen(&self) -> Option<String> {
        self.last_heartbeat
            .map(|t| humantime::format_rfc3339_seconds(t).to_string())
    }

    /// How long it has been disconnected, if it is.
    pub fn disconnected_for(&self, now: Instant) -> Option<Duration> {
        (self.state == NodeState::Disconnected).then(|| now.duration_since(self.since))
    }
}

/// The registry as last published.
#[derive(Clone, Default)]
pub struct Table {
    pub nodes: BTreeMap<String, Node>,
    /// The server's own node, if it runs workloads.
    pub local: Option<String>,
}

impl Table {
    pub fn get(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// True if `id` is in the cluster and ready: what it reports of its
    /// replicas is current. A replica anywhere else is not known to run.
    pub fn reachable(&self, id: &str) -> bool {
        self.get(id).is_some_and(Node::ready)
    }

    /// The agent of `node` if it is ready.
    pub fn agent(&self, node: &str) -> Option<Arc<dyn NodeAgent>> {
        self.nodes.get(node)?.ready_agent().cloned()
    }

    /// The server's own agent.
    pub fn local_agent(&self) -> Option<Arc<dyn NodeAgent>> {
        self.nodes.get(self.local.as_deref()?)?.agent.clone()
    }
}

/// What a connecting node says about itself.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Hello {
    pub node_id: String,
    pub address: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
    pub version: String,
    /// How it reaches other nodes' replicas, like "vxlan on UDP 8472".
    #[serde(default)]
    pub overlay: Option<String>,
    /// Its ingress serves HTTPS (`[proxy] https_listen` is set).
    #[serde(default)]
    pub https: bool,
    /// What of its host replicas may reach (`[volumes]`).
    #[serde(default)]
    pub access: crate::agent::access::HostAccess,
}

/// Registry failures, worded for the operator.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum NodeError {
    #[error("node not found: {0}")]
    NotFound(String),
    /// The id is held by another certificate (or is the server's own).
    #[error("{0}")]
    Conflict(String),
    /// A connection the registry will not take.
    #[error("{0}")]
    Refused(String),
    /// A connection from a node that is not in the cluster (removed, or
    /// never joined).
    #[error("{0}")]
    NotMember(String),
    #[error("could not save the node: {0}")]
    Store(String),
    /// The data directory is full; nothing was changed.
    #[error("could not save the node: {0}")]
    Full(String),
    #[error("the node registry has stopped")]
    Stopped,
}

/// How the registry judges silence.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// No heartbeat for this long: disconnected.
    pub heartbeat_grace: Duration,
    /// How often the owner looks at the clock.
    pub tick: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            heartbeat_grace: Duration::from_secs(10),
            tick: Duration::from_millis(500),
        }
    }
}

pub(crate) enum Msg {
    Enroll {
        id: String,
        cert_sha256: String,
        /// How many node /24s the cluster subnet has.
        subnets: u32,
        reply: oneshot::Sender<Result<u32, NodeError>>,
    },
    Connect {
        hello: Hello,
        agent: Arc<dyn NodeAgent>,
        cert_sha256: Option<String>,
        reply: oneshot::Sender<Result<u64, NodeError>>,
    },
    Heartbeat {
        id: String,
        session: u64,
        /// None: its containerd did not answer.
        inventory: Option<Vec<Instance>>,
    },
    Gone {
        id: String,
        session: u64,
    },
    Started {
        instance: Instance,
    },
    Drain {
        id: String,
        drained: bool,
        deadline: Option<u64>,
        reply: oneshot::Sender<Result<(), NodeError>>,
    },
    Remove {
        id: String,
        reply: oneshot::Sender<Result<NodeRecord, NodeError>>,
    },
}

impl Msg {
    /// The node the message is about.
    fn node_id(&self) -> &str {
        match self {
            Msg::Enroll { id, .. }
            | Msg::Heartbeat { id, .. }
            | Msg::Gone { id, .. }
            | Msg::Drain { id, .. }
            | Msg::Remove { id, .. } => id,
            Msg::Connect { hello, .. } => &hello.node_id,
            Msg::Started { instance } => &instance.node,
        }
    }
}

/// The handle to the registry: cheap to clone.
#[derive(Clone)]
pub struct Nodes {
    tx: mpsc::Sender<Msg>,
    snapshot: watch::Receiver<Arc<Table>>,
}

impl Nodes {
    /// Loads the nodes from `repo` (all disconnected, as last reported),
    /// adds the server's own node when `local` is given, and starts the
    /// owner. It ends once every handle is dropped.
    pub fn start(
        repo: Repo,
        local: Option<(Arc<dyn NodeAgent>, Hello)>,
        timing: Timing,
    ) -> Result<Nodes, NodeError> {
        let stored = repo.nodes().map_err(|e| NodeError::Store(e.to_string()))?;
        let table = owner::initial(stored, local, Instant::now())?;
        let (publish, snapshot) = watch::channel(Arc::new(table.clone()));
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(owner::run(table, repo, timing, rx, publish));
        Ok(Nodes { tx, snapshot })
    }

    /// The registry now.
    pub fn snapshot(&self) -> Arc<Table> {
        self.snapshot.borrow().clone()
    }

    /// Changes as they are published.
    pub fn changes(&self) -> watch::Receiver<Arc<Table>> {
        self.snapshot.clone()
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, NodeError>>) -> Msg,
    ) -> Result<T, NodeError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| NodeError::Stopped)?;
        answer.await.map_err(|_| NodeError::Stopped)?
    }

    /// Reserves `id` for the holder of the certificate `cert_sha256` (a
    /// join), with a /24 of the `subnets` the cluster subnet has; returns
    /// its index. Refused when another certificate holds the id, or when no
    /// /24 is left.
    pub async fn enroll(
        &self,
        id: &str,
        cert_sha256: &str,
        subnets: u32,
    ) -> Result<u32, NodeError> {
        self.ask(|reply| Msg::Enroll {
            id: id.to_string(),
            cert_sha256: cert_sha256.to_string(),
            subnets,
            reply,
        })
        .await
    }

    /// A node connected; returns its session. A remote node must present
    /// the certificate it was enrolled with.
    pub async fn connect(
        &self,
        hello: Hello,
        agent: Arc<dyn NodeAgent>,
        cert_sha256: Option<String>,
    ) -> Result<u64, NodeError> {
        self.ask(|reply| Msg::Connect {
            hello,
            agent,
            cert_sha256,
            reply,
        })
        .await
    }

    /// The node is alive; with its replicas when its containerd answered
    /// (None: containerd is down there).
    pub async fn heartbeat(&self, id: &str, session: u64, inventory: Option<Vec<Instance>>) {
        let _ = self
            .tx
            .send(Msg::Heartbeat {
                id: id.to_string(),
                session,
                inventory,
            })
            .await;
    }

    /// A replica was started on a remote node: kept with its last report
    /// until the next heartbeat, so that a server restart in between
    /// still knows it runs there.
    pub async fn started(&self, instance: Instance) {
        let _ = self.tx.send(Msg::Started { instance }).await;
    }

    /// The connection of `session` ended.
    pub async fn gone(&self, id: &str, session: u64) {
        let _ = self
            .tx
            .send(Msg::Gone {
                id: id.to_string(),
                session,
            })
            .await;
    }

    /// Drains (with a deadline, unix seconds) or undrains a node.
    pub async fn set_drained(
        &self,
        id: &str,
        drained: bool,
        deadline: Option<u64>,
    ) -> Result<(), NodeError> {
        self.ask(|reply| Msg::Drain {
            id: id.to_string(),
            drained,
            deadline,
            reply,
        })
        .await
    }

    /// Forgets a node and its certificate; returns what was known of it.
    pub async fn remove(&self, id: &str) -> Result<NodeRecord, NodeError> {
        self.ask(|reply| Msg::Remove {
            id: id.to_string(),
            reply,
        })
        .await
    }
}
