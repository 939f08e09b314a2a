//! The agent's side of a join: the server checked against the token's CA
//! pin before the secret is sent, a signing request for a key made here,
//! and what comes back kept 0600 in `data_dir/cluster`. Also how the agent
//! dials the server (TLS with the pin; the server is always `orca-server`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::pki::{self, SERVER_NAME};
use super::token::JoinToken;
use super::wire::service::cluster_client::ClusterClient;
use super::wire::JoinRequest;

/// What an agent keeps after joining (`data_dir/cluster/agent.json`, with
/// `node.key` and `node.crt` beside it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    pub node_id: String,
    pub ca_sha256: String,
    pub server: String,
    /// The cluster subnet, and which /24 of it this node's replicas take.
    pub subnet: String,
    pub node_index: u32,
}

/// A joined node's credentials, certificate and key.
pub struct Identity {
    pub(super) credentials: Credentials,
    pub(super) cert_pem: String,
    pub(super) key_pem: String,
}

impl Identity {
    /// The cluster subnet and this node's /24 of it.
    pub fn subnet(&self) -> (&str, u32) {
        (&self.credentials.subnet, self.credentials.node_index)
    }
}

/// A failure that retrying cannot mend.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Fatal(pub String);

fn paths(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        dir.join("agent.json"),
        dir.join("node.crt"),
        dir.join("node.key"),
    )
}

fn load(dir: &Path) -> anyhow::Result<Option<Identity>> {
    let (creds, cert, key) = paths(dir);
    if !creds.exists() {
        return Ok(None);
    }
    let read =
        |p: &Path| std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()));
    let credentials: Credentials = serde_json::from_str(&read(&creds)?)
        .with_context(|| format!("{} is not an agent's credentials", creds.display()))?;
    Ok(Some(Identity {
        credentials,
        cert_pem: read(&cert)?,
        key_pem: read(&key)?,
    }))
}

/// A gRPC channel to `server` over TLS as `tls` says.
/// HTTP/2 flow-control window of the cluster's streams, both ways.
pub(super) const WINDOW: u32 = 8 << 20;

pub(crate) async fn channel(
    server: &str,
    tls: rustls::ClientConfig,
) -> anyhow::Result<tonic::transport::Channel> {
    let tls = Arc::new(tls);
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{server}"))
        .with_context(|| format!("{server:?} is not HOST:PORT"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(20))
        .keep_alive_while_idle(true)
        // Room for a volume's pieces in flight (the default 64 KiB window
        // caps a transfer at a window per round trip).
        .initial_stream_window_size(Some(WINDOW))
        .initial_connection_window_size(Some(WINDOW * 2));
    let connector = tower::service_fn(move |uri: http::Uri| {
        let tls = tls.clone();
        async move {
            let host = uri.host().unwrap_or_default().to_string();
            let port = uri.port_u16().unwrap_or(6881);
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let stream = tokio_rustls::TlsConnector::from(tls)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    });
    Ok(endpoint.connect_with_connector(connector).await?)
}

/// Checks the server against the pin with a bare handshake, so that a
/// wrong CA is reported as that, not as a transport error.
pub(crate) async fn check_server(server: &str, ca_sha256: &str) -> anyhow::Result<()> {
    let tls = Arc::new(pki::agent_tls(ca_sha256, None)?);
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(server),
    )
    .await
    .with_context(|| format!("connect to {server}: timed out"))?
    .with_context(|| format!("connect to {server}"))?;
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME)?;
    match tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(Fatal(format!("cannot trust the server at {server}: {e}")).into()),
    }
}

/// Joins with `token`: checks the server, sends a signing request for a
/// new key, keeps what comes back.
async fn join(
    (server, all): (&str, &str),
    token: &str,
    node_id: &str,
    dir: &Path,
) -> anyhow::Result<Identity> {
    let token = JoinToken::parse(token).map_err(|e| Fatal(e.to_string()))?;
    check_server(server, &token.ca_sha256).await?;
    let (key_pem, csr_pem) = pki::node_request(node_id)?;
    let mut client =
        ClusterClient::new(channel(server, pki::agent_tls(&token.ca_sha256, None)?).await?);
    let reply = client
        .join(JoinRequest {
            token: token.to_string(),
            node_id: node_id.to_string(),
            csr_pem,
        })
        .await
        .map_err(|s| match s.code() {
            // Not the leader: another server of the list may be.
            tonic::Code::Unavailable => anyhow::anyhow!("{server}: {}", s.message()),
            _ => Fatal(format!("the server refused the join: {}", s.message())).into(),
        })?
        .into_inner();
    let ca = pki::pem_certs(&reply.ca_pem)?;
    if ca.first().map(|c| pki::fingerprint(c)).as_deref() != Some(token.ca_sha256.as_str()) {
        return Err(
            Fatal("the server sent a CA that does not match the token's pin".into()).into(),
        );
    }
    let credentials = Credentials {
        node_id: node_id.to_string(),
        ca_sha256: token.ca_sha256.clone(),
        server: all.to_string(),
        subnet: reply.subnet.clone(),
        node_index: reply.node_index,
    };
    let (creds, cert, key) = paths(dir);
    pki::write_private(&key, &key_pem)?;
    pki::write_private(&cert, &reply.cert_pem)?;
    pki::write_private(&creds, &serde_json::to_string_pretty(&credentials)?)?;
    Ok(Identity {
        credentials,
        cert_pem: reply.cert_pem,
        key_pem,
    })
}

/// What the agent needs to join.
pub struct AgentSetup {
    /// `HOST:PORT` of the servers' cluster ports, comma-separated (None:
    /// those joined with).
    pub server: Option<String>,
    pub token: Option<String>,
    pub node_id: String,
    pub dir: PathBuf,
}

/// The node's identity: as kept from an earlier join, or from joining now
/// (before anything on the node is touched, so a refused join changes
/// nothing).
pub async fn identity(setup: &AgentSetup) -> anyhow::Result<Identity> {
    if let Some(id) = load(&setup.dir)? {
        if id.credentials.node_id != setup.node_id {
            anyhow::bail!(
                "this agent joined as node {:?}, but its config says {:?}; \
                 remove {} to join again under the new id",
                id.credentials.node_id,
                setup.node_id,
                setup.dir.display()
            );
        }
        return Ok(id);
    }
    let server = setup
        .server
        .as_deref()
        .context("not joined yet: give --join HOST:6881")?;
    let token = setup
        .token
        .as_deref()
        .context("not joined yet: give --token (from `orca cluster join-token`)")?;
    // Any server may be asked; only the leader takes the join.
    let id = super::servers::first_taken(server, "join", |one| async move {
        join((&one, server), token, &setup.node_id, &setup.dir).await
    })
    .await?;
    tracing::info!(node = %setup.node_id, "orca agent joined the cluster");
    Ok(id)
}
