//! The server's side of the cluster port: TLS with the cluster CA,
//! `Join` (token and signing request in, the node's certificate out) and
//! `Connect` (a node's long-lived stream, which becomes a
//! [`RemoteAgent`] in the node registry). The server never dials a node.
//! Only a leading server takes either; one that does not lead turns the
//! node away (`UNAVAILABLE`), and the node asks the next server. Every
//! command on a stream carries the term of the leader that took it, and
//! the stream ends with that term.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

use super::agent::NOT_LEADING;
use super::pki::{fingerprint, Ca};
use super::remote::RemoteAgent;
use super::wire::service::cluster_server::{Cluster, ClusterServer};
use super::wire::{Down, JoinReply, JoinRequest, ServerJoinReply, ServerJoinRequest, Up};
use crate::ha::switch::{Leading, Role};
use crate::nodes::NodeError;

/// The SHA-256 of the client certificate a connection showed, if any.
#[derive(Debug, Clone)]
struct PeerCert(Option<String>);

#[derive(Debug, Clone, Copy)]
struct PeerAddr(SocketAddr);

/// See the module doc.
pub struct ClusterService {
    role: tokio::sync::watch::Receiver<Role>,
    ca: Arc<Ca>,
    /// The secrets key, given to a server that joins with a server token.
    secrets_key: Arc<zeroize::Zeroizing<Vec<u8>>>,
}

impl ClusterService {
    /// The term this server leads, or the refusal a node gets.
    fn leading(&self) -> Result<Arc<Leading>, Status> {
        match &*self.role.borrow() {
            Role::Leading(l) => Ok(l.clone()),
            Role::Following(Some(leader)) => Err(Status::unavailable(format!(
                "{NOT_LEADING}; the leader's cluster port is {}",
                leader.cluster
            ))),
            Role::Following(None) => Err(Status::unavailable(format!(
                "{NOT_LEADING}, and no leader is known yet"
            ))),
        }
    }
}

fn refusal(e: NodeError) -> Status {
    match e {
        NodeError::Conflict(m) => Status::already_exists(m),
        NodeError::Refused(m) => Status::permission_denied(m),
        // The agent stops its replicas on this answer (see `agent`).
        NodeError::NotMember(m) => Status::failed_precondition(m),
        NodeError::NotFound(m) => Status::not_found(m),
        other => Status::unavailable(other.to_string()),
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        let leading = self.leading()?;
        let control = &leading.control;
        let join = request.into_inner();
        if let Err(e) = api::names::checked_name("node id", &join.node_id) {
            return Err(Status::invalid_argument(e.message));
        }
        if let Err(reason) = control.redeem_join_token(&join.token, false) {
            tracing::warn!(?peer, node = %join.node_id, reason, "join refused");
            return Err(Status::permission_denied(reason));
        }
        let cert_pem = self
            .ca
            .sign_node(&join.csr_pem, &join.node_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let der = super::pki::pem_certs(&cert_pem)
            .ok()
            .and_then(|c| c.into_iter().next())
            .ok_or_else(|| Status::internal("signed certificate unreadable"))?;
        let subnet = control.subnet().to_string();
        let subnets = node_subnets(&subnet).map_err(Status::internal)?;
        let node_index = control
            .nodes()
            .enroll(&join.node_id, &fingerprint(&der), subnets)
            .await
            .map_err(|e| {
                tracing::warn!(?peer, node = %join.node_id, error = %e, "join refused");
                refusal(e)
            })?;
        tracing::info!(?peer, node = %join.node_id, "node joined");
        Ok(Response::new(JoinReply {
            cert_pem,
            ca_pem: self.ca.cert_pem().to_string(),
            subnet,
            node_index,
        }))
    }

    async fn join_server(
        &self,
        request: Request<ServerJoinRequest>,
    ) -> Result<Response<ServerJoinReply>, Status> {
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        let leading = self.leading()?;
        let join = request.into_inner();
        if let Err(e) = api::names::checked_name("server id", &join.server_id) {
            return Err(Status::invalid_argument(e.message));
        }
        if let Err(reason) = leading.control.redeem_join_token(&join.token, true) {
            tracing::warn!(?peer, server = %join.server_id, reason, "server join refused");
            return Err(Status::permission_denied(reason));
        }
        tracing::info!(?peer, server = %join.server_id, "a server joined: given the secrets key");
        Ok(Response::new(ServerJoinReply {
            secrets_key: hex::encode(self.secrets_key.as_slice()),
        }))
    }

    type ConnectStream = Pin<Box<dyn Stream<Item = Result<Down, Status>> + Send + 'static>>;

    async fn connect(
        &self,
        request: Request<Streaming<Up>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let cert = request
            .extensions()
            .get::<PeerCert>()
            .and_then(|p| p.0.clone())
            .ok_or_else(|| {
                Status::unauthenticated("no client certificate: join the cluster first")
            })?;
        let peer = request.extensions().get::<PeerAddr>().map(|p| p.0);
        let leading = self.leading()?;
        let control = &leading.control;
        let mut up = request.into_inner();
        let mut hello = match up.message().await? {
            Some(Up::Hello(h)) => h,
            _ => return Err(Status::invalid_argument("the first message must be Hello")),
        };
        if let (Some(theirs), Some(ours)) = (&hello.overlay, control.overlay()) {
            if theirs != ours {
                tracing::warn!(
                    ?peer,
                    node = hello.node_id,
                    theirs,
                    ours,
                    "connection refused: another network backend"
                );
                return Err(Status::permission_denied(format!(
                    "node {} runs [network] backend {theirs}, the cluster {ours}: give every node the same backend and vxlan_port",
                    hello.node_id
                )));
            }
        }
        if hello.address.is_empty() {
            hello.address = peer.map(|p| p.ip().to_string()).unwrap_or_default();
        }
        let (down_tx, down_rx) = mpsc::channel(256);
        let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
        let node = hello.node_id.clone();
        let agent = Arc::new(RemoteAgent::new(
            node.clone(),
            hello.capacity,
            down_tx.clone(),
            kill_tx,
        ));
        let nodes = control.nodes().clone();
        let session = nodes
            .connect(hello, agent.clone(), Some(cert))
            .await
            .map_err(|e| {
                tracing::warn!(?peer, node, error = %e, "connection refused");
                refusal(e)
            })?;
        tracing::info!(?peer, node, session, "node connected");
        drop(down_tx);
        tokio::spawn(read_up(up, agent, nodes, node, session));
        // The welcome goes first, before any call the control plane queued
        // as soon as the node counted as connected.
        let term = leading.term;
        let stream = tokio_stream::once(Ok(Down::Welcome { session, term }))
            .chain(
                tokio_stream::wrappers::ReceiverStream::new(down_rx).map(move |m| match m {
                    Ok(Down::Call { id, call, .. }) => Ok(Down::Call { id, call, term }),
                    other => other,
                }),
            )
            .take_until(kill_rx)
            .take_until(leading.ended.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }
}

/// How many node /24s `subnet` (like 10.88.0.0/16) has.
fn node_subnets(subnet: &str) -> Result<u32, String> {
    let prefix: u32 = subnet
        .rsplit_once('/')
        .and_then(|(_, p)| p.parse().ok())
        .filter(|p| (8..=24).contains(p))
        .ok_or_else(|| format!("[network] subnet {subnet:?} is not a /8 to /24"))?;
    Ok(1 << (24 - prefix))
}

/// Feeds what a node sends into its agent handle and the registry, until
/// the stream ends.
async fn read_up(
    mut up: Streaming<Up>,
    agent: Arc<RemoteAgent>,
    nodes: crate::nodes::Nodes,
    node: String,
    session: u64,
) {
    loop {
        let message = match up.message().await {
            Ok(Some(m)) => m,
            Ok(None) => break,
            Err(e) => {
                tracing::info!(node, session, error = %e, "node stream failed");
                break;
            }
        };
        match message {
            Up::Hello(_) => {}
            Up::Heartbeat { inventory } => nodes.heartbeat(&node, session, inventory).await,
            Up::Reply { id, result } => agent.answered(id, result),
            Up::Event(event) => agent.event(event),
            Up::Log { id, line } => {
                agent.log_line(id, line).await;
            }
            Up::LogEnd { id } => agent.log_end(id),
            Up::Attached { id, output } => agent.attached_output(id, output),
            Up::Piece { id, piece } => agent.piece(id, piece).await,
        }
    }
    agent.closed();
    nodes.gone(&node, session).await;
    tracing::info!(node, session, "node disconnected");
}

/// Serves the cluster port until `stop` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    role: tokio::sync::watch::Receiver<Role>,
    ca: Arc<Ca>,
    secrets_key: Arc<zeroize::Zeroizing<Vec<u8>>>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let tls = Arc::new(ca.server_tls()?);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let service = ClusterServer::new(ClusterService {
        role,
        ca,
        secrets_key,
    });
    tokio::pin!(stop);
    loop {
        let (tcp, addr) = tokio::select! {
            _ = &mut stop => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(tcp));
            let tls = match handshake.await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::info!(%addr, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            let cert = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| fingerprint(c));
            let svc = tower::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(PeerCert(cert.clone()));
                req.extensions_mut().insert(PeerAddr(addr));
                let mut service = service.clone();
                async move { tower::Service::call(&mut service, req).await }
            });
            let mut builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http2_only();
            builder
                .http2()
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Some(std::time::Duration::from_secs(5)))
                .keep_alive_timeout(std::time::Duration::from_secs(20))
                .initial_stream_window_size(super::enroll::WINDOW)
                .initial_connection_window_size(super::enroll::WINDOW * 2);
            let io = hyper_util::rt::TokioIo::new(tls);
            let served = builder
                .serve_connection(io, hyper_util::service::TowerToHyperService::new(svc))
                .await;
            if let Err(e) = served {
                tracing::debug!(%addr, error = %e, "cluster connection ended");
            }
        });
    }
}
