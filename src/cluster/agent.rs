//! `orca agent`: a worker node. It joins once (see [`super::enroll`]),
//! then holds one stream to the leading server: it tries the servers it
//! was given in turn (one that does not lead turns it away), and starts
//! over with jittered backoff. Commands of a leader older than the newest
//! it has seen are refused (see [`super::terms`]). Calls from the server run on the
//! local containerd; events, log lines and a heartbeat with every replica
//! go up. While disconnected, it keeps every replica running and restarts
//! crashed ones itself: losing the server never kills work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::enroll::channel;
pub use super::enroll::{identity, AgentSetup, Fatal, Identity};
use super::pki;
use super::wire::service::cluster_client::ClusterClient;
use super::wire::{Answer, Call, Down, Up, WireError};
use crate::agent::NodeAgent;
use crate::nodes::Hello;

/// How often a heartbeat (with the inventory) goes up.
pub const HEARTBEAT: Duration = Duration::from_secs(2);

/// What the node's own DNS server and ingress answer with, as the server
/// pushes it.
pub struct Served {
    pub dns: Arc<network::dns::DnsTable>,
    pub routes: Arc<network::proxy::Routes>,
}

/// See the module doc. Returns only on a fatal refusal (or `stop`).
pub async fn run(
    identity: Identity,
    server: Option<String>,
    hello: Hello,
    local: Arc<dyn NodeAgent>,
    served: Arc<Served>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = server.unwrap_or_else(|| identity.credentials.server.clone());
    let servers = super::servers::list(&server);
    let mut round: Vec<String> = Vec::new();
    let terms = Arc::new(super::terms::Terms::default());
    let tls = pki::agent_tls(
        &identity.credentials.ca_sha256,
        Some((&identity.cert_pem, &identity.key_pem)),
    )?;
    let connected = Arc::new(AtomicBool::new(false));
    let keeper = tokio::spawn(super::keeper::run(local.clone(), connected.clone()));
    tokio::pin!(stop);
    let mut failures = 0u32;
    let mut next = 0usize;
    // A server of this round answered "not the leader".
    let mut electing = false;
    let outcome = loop {
        if next >= round.len() {
            // Names are looked up again each round.
            round = super::servers::resolved(&servers).await;
            next = 0;
        }
        let server = &round[next];
        next += 1;
        let attempt = session(
            server,
            tls.clone(),
            &hello,
            &local,
            &served,
            &connected,
            &terms,
        );
        let ended = tokio::select! {
            _ = &mut stop => break Ok(()),
            ended = attempt => ended,
        };
        connected.store(false, Ordering::Relaxed);
        match ended {
            Ok(()) => failures = 0,
            Err(e) if e.downcast_ref::<Fatal>().is_some() => break Err(e),
            Err(e) if e.downcast_ref::<Removed>().is_some() => {
                // Its replicas were placed elsewhere when it was removed.
                stop_all(local.as_ref()).await;
                break Err(e);
            }
            Err(e) => {
                tracing::warn!(server, error = %format!("{e:#}"), "connection to the server failed");
                electing |= e.downcast_ref::<NotLeading>().is_some();
                if next < round.len() {
                    // The next server may lead: ask it at once.
                    continue;
                }
                failures += 1;
            }
        }
        // A server that answered "not the leader" is alive: an election
        // is on, and will soon name one. Ask again within half a second
        // or so, not after a growing wait.
        let wait = if std::mem::take(&mut electing) {
            super::servers::election_retry()
        } else {
            super::servers::backoff(failures)
        };
        tokio::select! {
            _ = &mut stop => break Ok(()),
            _ = tokio::time::sleep(wait) => {}
        }
    };
    keeper.abort();
    outcome
}

/// One connection: Hello, then calls down and everything else up, until
/// the stream ends.
async fn session(
    server: &str,
    tls: rustls::ClientConfig,
    hello: &Hello,
    local: &Arc<dyn NodeAgent>,
    served: &Arc<Served>,
    connected: &AtomicBool,
    terms: &Arc<super::terms::Terms>,
) -> anyhow::Result<()> {
    let mut client = ClusterClient::new(channel(server, tls).await?);
    let (up, up_rx) = mpsc::channel::<Up>(1024);
    up.send(Up::Hello(hello.clone())).await?;
    let response = client
        .connect(tokio_stream::wrappers::ReceiverStream::new(up_rx))
        .await
        .map_err(refused)?;
    let mut down = response.into_inner();
    let session = match down.message().await.map_err(refused)? {
        Some(Down::Welcome { session, term }) => (session, term),
        other => anyhow::bail!("unexpected first message from the server: {other:?}"),
    };
    let (session, term) = session;
    if !terms.admit(term) {
        anyhow::bail!(
            "the server leads term {term}, older than term {} this node follows: it was deposed",
            terms.newest()
        );
    }
    tracing::info!(server, session, term, node = %hello.node_id, "connected to the server");
    connected.store(true, Ordering::Relaxed);
    let mut work = Work {
        terms: terms.clone(),
        local: local.clone(),
        served: served.clone(),
        up: up.clone(),
        tasks: tokio::task::JoinSet::new(),
        follows: std::collections::HashMap::new(),
        attached: std::collections::HashMap::new(),
        receiving: std::collections::HashMap::new(),
    };
    work.tasks.spawn(heartbeats(local.clone(), up.clone()));
    work.tasks.spawn(forward_events(local.clone(), up));
    let result = loop {
        tokio::select! {
            // Cancel-safe: the stream keeps its state between calls.
            message = down.message() => match message {
                Ok(Some(message)) => work.take(message).await,
                Ok(None) => break Ok(()),
                Err(e) => break Err(refused(e)),
            },
            // Finished calls are let go of as they end.
            Some(_) = work.tasks.join_next(), if !work.tasks.is_empty() => {}
        }
    };
    work.tasks.shutdown().await;
    result
}

/// What one connection runs on the node: calls, checks and log follows,
/// all ended with it.
struct Work {
    terms: Arc<super::terms::Terms>,
    local: Arc<dyn NodeAgent>,
    served: Arc<Served>,
    up: mpsc::Sender<Up>,
    tasks: tokio::task::JoinSet<()>,
    /// Log follows and interactive execs by call id, for their cancel.
    follows: std::collections::HashMap<u64, tokio::task::AbortHandle>,
    /// The input of each interactive exec, by call id.
    attached: std::collections::HashMap<u64, mpsc::Sender<cri::AttachInput>>,
    /// The archive each volume receive takes, by call id.
    receiving: std::collections::HashMap<u64, mpsc::Sender<bytes::Bytes>>,
}

impl Work {
    /// One message from the server.
    async fn take(&mut self, message: Down) {
        let (local, up) = (self.local.clone(), self.up.clone());
        if let Down::Call { id, term, .. } = &message {
            if !self.terms.admit(*term) {
                let message = format!(
                    "refused: a command of term {term}, older than term {} this node follows",
                    self.terms.newest()
                );
                tracing::warn!(
                    term,
                    newest = self.terms.newest(),
                    "refused a command of a deposed leader"
                );
                let kind = super::wire::ErrorKind::Other;
                let result = Err(WireError { kind, message });
                let _ = up.send(Up::Reply { id: *id, result }).await;
                return;
            }
        }
        match message {
            Down::Welcome { .. } => {}
            Down::Call {
                id,
                call:
                    Call::Check {
                        id: instance,
                        readiness,
                        liveness,
                    },
                ..
            } => {
                self.tasks.spawn(super::checks::run(
                    local,
                    up.clone(),
                    instance,
                    readiness.map(|c| *c),
                    liveness.map(|c| *c),
                ));
                let result = Ok(Answer::Done);
                let _ = up.send(Up::Reply { id, result }).await;
            }
            Down::Call {
                id,
                call: Call::LogsFollow { id: instance },
                ..
            } => {
                let handle = self.tasks.spawn(follow_log(local, up, id, instance));
                self.follows.insert(id, handle);
            }
            Down::Call {
                id,
                call:
                    Call::Attach {
                        id: instance,
                        command,
                        opts,
                    },
                ..
            } => {
                let (input, rx) = mpsc::channel(256);
                let task = attach(local, up, id, instance, command, opts, rx);
                self.follows.insert(id, self.tasks.spawn(task));
                self.attached.insert(id, input);
            }
            Down::Call {
                id,
                call:
                    Call::ExportVolume {
                        project,
                        name,
                        pause,
                        gzip,
                    },
                ..
            } => {
                let task = super::transfer::export(local, up, id, (project, name, pause, gzip));
                self.follows.insert(id, self.tasks.spawn(task));
            }
            Down::Call {
                id,
                call:
                    Call::ReceiveVolume {
                        project,
                        name,
                        gzip,
                    },
                ..
            } => {
                let (tx, rx) = mpsc::channel(16);
                let task = super::transfer::receive(local, up, id, (project, name, gzip), rx);
                self.follows.insert(id, self.tasks.spawn(task));
                self.receiving.insert(id, tx);
            }
            Down::Piece { id, piece } => {
                super::transfer::take_piece(&mut self.receiving, id, piece).await
            }
            Down::Attach { id, input } => {
                if let Some(tx) = self.attached.get(&id) {
                    if tx.send(input).await.is_err() {
                        self.attached.remove(&id);
                    }
                }
            }
            Down::Call { id, call, .. } => {
                let served = self.served.clone();
                self.tasks.spawn(async move {
                    let result = super::calls::answer(local.as_ref(), &served, call).await;
                    let _ = up.send(Up::Reply { id, result }).await;
                });
            }
            Down::Cancel { id } => {
                self.attached.remove(&id);
                self.receiving.remove(&id);
                if let Some(h) = self.follows.remove(&id) {
                    h.abort();
                }
            }
        }
    }
}

/// The server says this node is not in the cluster (it was removed): the
/// agent stops what it runs and exits.
#[derive(Debug, thiserror::Error)]
#[error("the server refused this node: {0}; its replicas were stopped")]
pub struct Removed(pub String);

/// Stops and removes every replica this node runs (10 s grace each, all at
/// once).
async fn stop_all(local: &dyn NodeAgent) {
    let list = match local.list().await {
        Ok(list) => list,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list replicas to stop them");
            return;
        }
    };
    tracing::warn!(
        replicas = list.len(),
        "this node was removed from the cluster: stopping its replicas"
    );
    let stops = list
        .iter()
        .map(|i| local.remove(&i.id, Duration::from_secs(10)));
    for (i, done) in list.iter().zip(futures::future::join_all(stops).await) {
        if let Err(e) = done {
            tracing::warn!(instance = %i.id, error = %e, "could not stop a replica");
        }
    }
}

/// A refusal by the server (removed node, revoked certificate) is fatal;
/// anything else is retried.
fn refused(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::FailedPrecondition => Removed(status.message().to_string()).into(),
        tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated
        | tonic::Code::AlreadyExists => Fatal(format!(
            "the server refused this node: {}",
            status.message()
        ))
        .into(),
        tonic::Code::Unavailable if status.message().starts_with(NOT_LEADING) => {
            NotLeading(status.message().to_string()).into()
        }
        _ => anyhow::anyhow!("{}", status.message()),
    }
}

/// How a server that does not lead turns a node away (see `service`).
pub const NOT_LEADING: &str = "this server does not lead";

/// A server turned the node away: it does not lead.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct NotLeading(String);

async fn heartbeats(local: Arc<dyn NodeAgent>, up: mpsc::Sender<Up>) {
    loop {
        // Without an answer from containerd the heartbeat says so, with no
        // inventory (an empty one would read as "nothing runs").
        let inventory = match local.list().await {
            Ok(list) => Some(list),
            Err(e) => {
                tracing::warn!(error = %e, "cannot list replicas for the heartbeat");
                None
            }
        };
        if up.send(Up::Heartbeat { inventory }).await.is_err() {
            return;
        }
        tokio::time::sleep(HEARTBEAT).await;
    }
}

async fn forward_events(local: Arc<dyn NodeAgent>, up: mpsc::Sender<Up>) {
    loop {
        match local.events().await {
            Ok(mut rx) => {
                while let Some(event) = rx.recv().await {
                    if up.send(Up::Event(event)).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot follow containerd's events"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Events may have been missed meanwhile.
        if up
            .send(Up::Event(crate::agent::AgentEvent::Resync))
            .await
            .is_err()
        {
            return;
        }
    }
}

async fn follow_log(local: Arc<dyn NodeAgent>, up: mpsc::Sender<Up>, id: u64, instance: String) {
    let mut lines = local.logs_follow(&instance);
    while let Some(line) = lines.recv().await {
        if up.send(Up::Log { id, line }).await.is_err() {
            return;
        }
    }
    let _ = up.send(Up::LogEnd { id }).await;
}

/// Runs an interactive exec (call `id`): answers once it runs, then
/// relays its input down and its output up until it exits. Aborting the
/// task drops the session's input, which kills the command.
async fn attach(
    local: Arc<dyn NodeAgent>,
    up: mpsc::Sender<Up>,
    id: u64,
    instance: String,
    command: Vec<String>,
    opts: cri::AttachOptions,
    mut input: mpsc::Receiver<cri::AttachInput>,
) {
    let session = local.attach(&instance, &command, opts).await;
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            let result = Err(WireError::from(&e));
            let _ = up.send(Up::Reply { id, result }).await;
            return;
        }
    };
    let result = Ok(Answer::Done);
    if up.send(Up::Reply { id, result }).await.is_err() {
        return;
    }
    loop {
        tokio::select! {
            output = session.output.recv() => {
                let Some(output) = output else { return };
                if up.send(Up::Attached { id, output }).await.is_err() {
                    return;
                }
            }
            msg = input.recv() => match msg {
                Some(msg) => {
                    let _ = session.input.send(msg).await;
                }
                // The server forgot the session: the command goes with it.
                None => return,
            },
        }
    }
}
