//! The control plane: desired state in the store, the nodes (a registry
//! with its own owner task, see [`crate::nodes`]), the state (one owner
//! task, see [`state`]), and a worker per service that converges what runs
//! onto what is wanted ([`reconcile`]): gather what every node runs, plan
//! (pure), schedule new replicas onto nodes (pure), execute. What the
//! nodes serve (DNS, routes, certificates) is built and pushed by
//! [`serve`]; the API's handlers are in [`endpoints`].
//!
//! Changes to one service are serialised twice over: API writes take the
//! service's lock around read-modify-write of its record, and only that
//! service's worker acts on the nodes, always from the latest record.

mod endpoints;
mod feed;
pub(crate) mod jobs;
pub(crate) mod ports;
mod reconcile;
mod serve;
mod state;
#[cfg(test)]
mod tests;
mod view;

use endpoints::{access, cluster, deploy, pull};
pub(crate) use reconcile::health;
use reconcile::{decide, events, execute, gather, progress, rollout, worker};
pub use reconcile::{plan, schedule};
pub(crate) use serve::acme;
use serve::{certs, publish, push};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::{AgentError, NodeAgent};
use crate::metrics::Metrics;
use crate::nodes::{Hello, Nodes, Timing};
use crate::store::Repo;

pub use state::State;

/// How often every worker looks again even without events.
pub const RESYNC: Duration = Duration::from_secs(30);
/// How long [`ControlPlane::shutdown`] waits for the tasks to end.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(10);
/// Grace period of a stop when the spec sets none.
pub const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Settings of the control plane that come from cluster.toml.
#[derive(Debug, Clone)]
pub struct Settings {
    pub cluster_name: String,
    pub api_address: String,
    pub node_labels: std::collections::BTreeMap<String, String>,
    /// Tokens from the config file.
    pub tokens: Vec<api::auth::TokenEntry>,
    /// The cipher of secrets; without it no secret can be stored or used.
    pub secrets: Option<Arc<crate::secrets::SecretBox>>,
    /// `/metrics` needs a viewer token (it names every service and domain).
    pub metrics_token: bool,
    /// Project names refused besides the top-level domains.
    pub reserved_names: Vec<String>,
    /// No heartbeat for this long: the node is disconnected.
    pub heartbeat_grace: Duration,
    /// Disconnected this long: its replicas are placed elsewhere (zero:
    /// never), unless the service says otherwise.
    pub reschedule_after: Duration,
    /// `[cluster] schedule_catchup_secs`: see [`jobs::timer`].
    pub schedule_catchup: Duration,
    /// SHA-256 (hex) of the cluster CA's certificate, put into join tokens.
    pub ca_sha256: Option<String>,
    /// `[network] subnet`: each node's replicas take a /24 of it.
    pub subnet: String,
    /// The server's own node's address for the other nodes.
    pub node_address: Option<String>,
    /// How nodes reach each other's replicas (see [`network::Backend`]):
    /// every node must say the same.
    pub overlay: Option<String>,
    /// Where `tls = "acme"` certificates come from (none: not issued).
    pub acme: Option<acme::AcmeSettings>,
    /// The server's own ingress serves HTTPS.
    pub https: bool,
    /// `[proxy] cert_dir`: the only place `tls.cert` and `tls.key` are read from.
    pub cert_dir: std::path::PathBuf,
    /// `[volumes] host_paths` of the server's own node: where bind mounts
    /// may come from (each node checks its own again at start).
    pub host_paths: Vec<std::path::PathBuf>,
    /// `[volumes] devices` of the server's own node (checked again at start).
    pub devices: Vec<String>,
    /// orca's own listeners, which no service may publish.
    pub own_ports: Vec<ports::claims::Own>,
    /// The control plane's servers, as last read (none: not known).
    pub servers: Option<tokio::sync::watch::Receiver<Vec<api::status::ServerStatus>>>,
}

impl Default for Settings {
    /// Nothing set, and the contract's cluster timings.
    fn default() -> Self {
        Self {
            cluster_name: String::new(),
            api_address: String::new(),
            node_labels: Default::default(),
            tokens: Vec::new(),
            secrets: None,
            metrics_token: false,
            reserved_names: Vec::new(),
            cert_dir: serve::cert_file::DEFAULT_CERT_DIR.into(),
            heartbeat_grace: Duration::from_secs(10),
            reschedule_after: Duration::from_secs(30),
            schedule_catchup: Duration::from_secs(300),
            ca_sha256: None,
            subnet: "10.88.0.0/16".into(),
            node_address: None,
            overlay: None,
            acme: None,
            https: false,
            host_paths: Vec::new(),
            devices: Vec::new(),
            own_ports: Vec::new(),
            servers: None,
        }
    }
}

/// Cheap to clone; everything behind one `Arc`.
#[derive(Clone)]
pub struct ControlPlane {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    repo: Repo,
    nodes: Nodes,
    settings: Settings,
    metrics: Metrics,
    /// Observed and runtime state, owned by its own task (see [`state`]).
    state: state::StateHandle,
    /// Per-service locks for read-modify-write of records.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Per-service worker wake-ups.
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Tokens from the store, reloaded when they change.
    stored_tokens: Mutex<Vec<api::auth::TokenEntry>>,
    /// Encoded status answers per project filter, with the state epoch and
    /// time they were built at (see `status::STATUS_CACHE_TTL`).
    status_cache: Mutex<HashMap<Option<String>, (u64, std::time::Instant, bytes::Bytes)>>,
    containerd_up: AtomicBool,
    /// The ingress table, when this node runs the proxy.
    routes: Option<Arc<network::proxy::Routes>>,
    /// Service names for the node's DNS server, when it runs one.
    dns: Option<Arc<network::dns::DnsTable>>,
    /// What the nodes serve, as last built; a task gives it to them in order.
    published: tokio::sync::watch::Sender<publish::View>,
    /// Which view each node was given last (see [`push`]).
    delivered: tokio::sync::watch::Sender<push::Delivered>,
    /// What happened, for `GET /api/v1/events`.
    feed: Arc<crate::feed::Feed>,
    /// The TLS services' certificates (see [`certs`]), and its wake-up.
    certs: tokio::sync::watch::Sender<certs::Certs>,
    certs_wake: Arc<Notify>,
    /// ACME: the certificates it holds (or why not), by domain, and the
    /// HTTP-01 answers in flight (see [`acme`]).
    acme: tokio::sync::watch::Sender<HashMap<String, Result<network::proxy::TlsPair, String>>>,
    acme_wake: Arc<Notify>,
    challenges: tokio::sync::watch::Sender<HashMap<String, String>>,
    /// Every task the control plane starts, and what ends them (see
    /// [`ControlPlane::shutdown`]).
    tasks: TaskTracker,
    cancel: CancellationToken,
}

impl ControlPlane {
    /// A control plane over `repo`, with `agent` as the server's own node
    /// (None: it runs no replicas); call [`ControlPlane::start`] to begin
    /// reconciling. Must be called inside a Tokio runtime.
    pub fn new(
        repo: Repo,
        agent: Option<Arc<dyn NodeAgent>>,
        settings: Settings,
        metrics: Metrics,
        routes: Option<Arc<network::proxy::Routes>>,
        dns: Option<Arc<network::dns::DnsTable>>,
    ) -> anyhow::Result<Self> {
        let local = agent.map(|agent| {
            let hello = Hello {
                node_id: agent.node_id().to_string(),
                address: settings
                    .node_address
                    .clone()
                    .unwrap_or_else(|| settings.api_address.clone()),
                labels: settings.node_labels.clone(),
                capacity: agent.capacity(),
                version: env!("CARGO_PKG_VERSION").to_string(),
                overlay: settings.overlay.clone(),
                https: settings.https,
                access: crate::agent::access::HostAccess::new(
                    &settings.host_paths,
                    &settings.devices,
                ),
            };
            (agent, hello)
        });
        let timing = Timing {
            heartbeat_grace: settings.heartbeat_grace,
            ..Timing::default()
        };
        let nodes = Nodes::start(repo.clone(), local, timing)?;
        let stored_tokens = repo.tokens()?;
        let mut state = State::default();
        for record in repo.services()? {
            state.put_record(record);
        }
        state.volumes = Arc::new(repo.volumes()?.into_iter().map(|v| (v.key(), v)).collect());
        Ok(Self {
            inner: Arc::new(Inner {
                repo,
                nodes,
                settings,
                metrics,
                state: state::StateHandle::start(state),
                locks: Mutex::new(HashMap::new()),
                workers: Mutex::new(HashMap::new()),
                stored_tokens: Mutex::new(stored_tokens),
                status_cache: Mutex::new(HashMap::new()),
                containerd_up: AtomicBool::new(true),
                routes,
                dns,
                published: tokio::sync::watch::channel(publish::View::default()).0,
                delivered: tokio::sync::watch::channel(push::Delivered::default()).0,
                feed: Arc::new(crate::feed::Feed::new()),
                certs: tokio::sync::watch::channel(certs::Certs::new()).0,
                certs_wake: Arc::new(Notify::new()),
                acme: tokio::sync::watch::channel(HashMap::new()).0,
                acme_wake: Arc::new(Notify::new()),
                challenges: tokio::sync::watch::channel(HashMap::new()).0,
                tasks: TaskTracker::new(),
                cancel: CancellationToken::new(),
            }),
        })
    }

    /// Subscribes to node events, adopts what runs, and starts a worker for
    /// every known service and every orphan.
    pub async fn start(&self) -> anyhow::Result<()> {
        if let Some(secrets) = &self.inner.settings.secrets {
            // Not fatal: an unmoved secret is only unusable (no lookup
            // falls back to it), and the next start tries again.
            match endpoints::cluster::migrate_legacy_secrets(&self.inner.repo, secrets) {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::info!(moved, "secrets without a project moved to project default")
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not move secrets without a project to project default")
                }
            }
        }
        self.inner.spawn(certs::run(Arc::downgrade(&self.inner)));
        self.inner.spawn(acme::run(Arc::downgrade(&self.inner)));
        self.inner
            .spawn(jobs::runs::clock(Arc::downgrade(&self.inner)));
        worker::start(self.inner.clone()).await
    }

    /// Ends every task of the control plane (workers, checkers, removals,
    /// event followers, streams to clients) at its next await, and waits
    /// for them, up to `SHUTDOWN_WAIT`. What runs on the nodes keeps
    /// running; the next start picks it up.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        if tokio::time::timeout(SHUTDOWN_WAIT, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.inner.tasks.len(),
                "control plane tasks still running at shutdown"
            );
        }
    }

    /// The node registry (the cluster's gRPC service adds nodes to it).
    pub fn nodes(&self) -> &Nodes {
        &self.inner.nodes
    }

    /// How the cluster's nodes reach each other's replicas, if set.
    pub fn overlay(&self) -> Option<&str> {
        self.inner.settings.overlay.as_deref()
    }

    /// The cluster subnet, of which each node's replicas take a /24.
    pub fn subnet(&self) -> &str {
        &self.inner.settings.subnet
    }

    /// The ingress table, when this node runs the proxy.
    pub fn routes(&self) -> Option<&Arc<network::proxy::Routes>> {
        self.inner.routes.as_ref()
    }

    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }
}

impl Inner {
    /// Runs `task` until it ends or the control plane shuts down.
    pub(crate) fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = task => {}
            }
        })
    }

    /// The state as of the last change answered, to read.
    pub(crate) fn state(&self) -> Arc<State> {
        self.state.read()
    }

    pub(crate) fn service_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(name.to_string()).or_default().clone()
    }

    /// The agent of a ready node.
    pub(crate) fn node_agent(&self, node: &str) -> Result<Arc<dyn NodeAgent>, AgentError> {
        self.nodes
            .snapshot()
            .agent(node)
            .ok_or_else(|| AgentError::Unreachable {
                node: node.to_string(),
                reason: "not connected".into(),
            })
    }

    /// The agent of the node that runs replica `id`.
    pub(crate) fn agent_of(&self, id: &str) -> Result<Arc<dyn NodeAgent>, AgentError> {
        let node = {
            let st = self.state();
            st.instances
                .get(crate::agent::service_of(id))
                .and_then(|list| list.iter().find(|i| i.id == id))
                .map(|i| i.node.clone())
        };
        match node {
            Some(node) => self.node_agent(&node),
            None => Err(AgentError::NotFound(format!("no replica {id}"))),
        }
    }

    /// The server's own node id, if it runs replicas.
    pub(crate) fn local_node(&self) -> Option<String> {
        self.nodes.snapshot().local.clone()
    }

    pub(crate) fn set_containerd_up(&self, up: bool) {
        self.containerd_up.store(up, Ordering::Relaxed);
    }

    pub(crate) fn containerd_up(&self) -> bool {
        self.containerd_up.load(Ordering::Relaxed)
    }
}
