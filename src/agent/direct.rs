//! A volume moved straight from node to node, not through the server. The
//! target listens on a port of its own with a certificate made for this
//! one transfer ([`LocalAgent::listen_volume`]); the server hands the
//! source that address, the certificate's SHA-256 and a one-time token
//! over the cluster's mTLS streams; the source connects, checks that it
//! talks to the holder of that certificate, and sends the token and then
//! the archive ([`LocalAgent::send_volume`]). The target takes the first
//! connection that shows the token, unpacks what follows beside the
//! volume as a received archive is ([`LocalAgent::await_volume`]), or
//! gives up its port when told to.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::archive::Piece;
use super::backup::Received;
use super::local::LocalAgent;
use super::AgentError;
use crate::checked_tls::{fingerprint, CheckedServer};

/// The name in a transfer's certificate (checked by its SHA-256, not by name).
const NAME: &str = "orca-transfer";
/// How long a target waits for its source to connect and show the token.
const ACCEPT_WITHIN: Duration = Duration::from_secs(30);
/// A listener nobody came to collect (its server went away) is dropped
/// at the next listen after this.
const STALE: Duration = Duration::from_secs(600);
/// Bytes read per piece.
const PIECE: usize = 1 << 20;

/// Where a target takes a transfer.
#[derive(Clone, Serialize, Deserialize)]
pub struct Listening {
    pub port: u16,
    pub cert_sha256: String,
    pub token: String,
}

/// Where a source sends a transfer: the target's address and what it said.
#[derive(Clone, Serialize, Deserialize)]
pub struct DirectTarget {
    pub address: String,
    pub port: u16,
    pub cert_sha256: String,
    pub token: String,
}

/// Never the token in a log.
impl std::fmt::Debug for Listening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Listening {{ port: {} }}", self.port)
    }
}

impl std::fmt::Debug for DirectTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DirectTarget {{ {}:{} }}", self.address, self.port)
    }
}

/// What a source sent: the archive's size and SHA-256.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sent {
    pub bytes: u64,
    pub sha256: String,
}

/// A target's listener until its transfer is collected.
pub(super) struct Pending {
    project: String,
    name: String,
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    since: Instant,
}

/// A target's transfers by token: listeners not yet collected, and those
/// being waited on (which a cancel wakes).
#[derive(Default)]
pub(super) struct PendingTransfers {
    open: std::sync::Mutex<HashMap<String, Pending>>,
    waiting: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
}

fn other(e: impl std::fmt::Display) -> AgentError {
    AgentError::Other(e.to_string())
}

/// A fresh certificate and key, and the server side of TLS with them.
fn acceptor() -> Result<(tokio_rustls::TlsAcceptor, String), AgentError> {
    let made = rcgen::generate_simple_self_signed(vec![NAME.to_string()]).map_err(other)?;
    let der = made.cert.der().clone();
    let sha = fingerprint(&der);
    let key = rustls::pki_types::PrivateKeyDer::try_from(made.signing_key.serialize_der())
        .map_err(other)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(other)?;
    // Nothing for the source to leave unread: unread bytes make its close
    // a reset, which can cost the target the end of the data.
    config.send_tls13_tickets = 0;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(config)), sha))
}

impl LocalAgent {
    /// Opens a port for volume `project/name` to arrive on.
    pub(super) async fn listen_volume(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Listening, AgentError> {
        self.volumes.dir(project, name).map_err(other)?;
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", 0))
            .await
            .map_err(other)?;
        let port = listener.local_addr().map_err(other)?.port();
        let (acceptor, cert_sha256) = acceptor()?;
        let token = hex::encode(rand::random::<[u8; 32]>());
        let mut pending = self.direct.open.lock().map_err(other)?;
        pending.retain(|_, p| p.since.elapsed() < STALE);
        pending.insert(
            token.clone(),
            Pending {
                project: project.into(),
                name: name.into(),
                listener,
                acceptor,
                since: Instant::now(),
            },
        );
        Ok(Listening {
            port,
            cert_sha256,
            token,
        })
    }

    /// Takes the transfer `token` opened for: the first connection that
    /// shows the token, unpacked beside the volume (see
    /// [`super::NodeAgent::receive_volume`]). With `cancel`, closes the
    /// port instead.
    pub(super) async fn await_volume(
        &self,
        token: &str,
        cancel: bool,
    ) -> Result<Option<Received>, AgentError> {
        let gone = || AgentError::NotFound("no such transfer".into());
        // Both locks, in this order, so that a cancel finds the transfer
        // either open or waited on.
        let (pending, cancelled) = {
            let mut open = self.direct.open.lock().map_err(other)?;
            let mut waiting = self.direct.waiting.lock().map_err(other)?;
            match (open.remove(token), cancel) {
                (Some(_), true) => return Ok(None),
                // Being waited on: the wait ends, having taken nothing.
                (None, true) => {
                    waiting.get(token).ok_or_else(gone)?.notify_one();
                    return Ok(None);
                }
                (None, false) => return Err(gone()),
                (Some(p), false) => {
                    let cancelled = Arc::new(tokio::sync::Notify::new());
                    waiting.insert(token.to_string(), cancelled.clone());
                    (p, cancelled)
                }
            }
        };
        let accepted = tokio::select! {
            a = tokio::time::timeout(ACCEPT_WITHIN, accept(&pending, token)) => a.map_err(|_| {
                other(format!("no source connected within {} s", ACCEPT_WITHIN.as_secs()))
            }),
            () = cancelled.notified() => Err(AgentError::NotFound(
                "the transfer was called off before its source connected".into(),
            )),
        };
        if let Ok(mut w) = self.direct.waiting.lock() {
            w.remove(token);
        }
        let stream = accepted??;
        let (tx, rx) = mpsc::channel(16);
        let read = async move {
            let mut stream = stream;
            loop {
                let mut buf = bytes::BytesMut::with_capacity(PIECE);
                while buf.len() < PIECE {
                    if stream.read_buf(&mut buf).await? == 0 {
                        break;
                    }
                }
                let last = buf.len() < PIECE;
                if !buf.is_empty() && tx.send(buf.freeze()).await.is_err() {
                    return Ok::<(), std::io::Error>(());
                }
                if last {
                    return Ok(());
                }
            }
        };
        let (received, read) = tokio::join!(
            self.receive(&pending.project, &pending.name, false, rx),
            read
        );
        read.map_err(|e| other(format!("the transfer broke off: {e}")))?;
        received.map(Some)
    }

    /// Sends volume `project/name` to the target that `to` describes, as
    /// an uncompressed archive; what was sent.
    pub(super) async fn send_volume(
        &self,
        project: &str,
        name: &str,
        to: &DirectTarget,
    ) -> Result<Sent, AgentError> {
        let mut stream = connect(to).await?;
        stream.write_all(to.token.as_bytes()).await.map_err(other)?;
        let mut export = self.export(project, name, false, false).await?;
        let mut bytes = 0u64;
        while let Some(piece) = export.data.recv().await {
            match piece {
                Piece::Data(d) => {
                    bytes += d.len() as u64;
                    stream
                        .write_all(&d)
                        .await
                        .map_err(|e| other(format!("sending to {}: {e}", to.address)))?;
                }
                Piece::End(Ok(sha256)) => {
                    stream.shutdown().await.map_err(other)?;
                    // Until the target has read it all and closes too.
                    let mut rest = Vec::new();
                    let _ = tokio::time::timeout(
                        Duration::from_secs(60),
                        stream.read_to_end(&mut rest),
                    )
                    .await;
                    return Ok(Sent { bytes, sha256 });
                }
                Piece::End(Err(e)) => return Err(other(format!("reading the volume: {e}"))),
            }
        }
        Err(other("the volume's archive ended early"))
    }
}

/// The first connection to `pending` that shows `token` (any other is
/// dropped).
async fn accept(
    pending: &Pending,
    token: &str,
) -> Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, AgentError> {
    loop {
        let (tcp, from) = pending.listener.accept().await.map_err(other)?;
        let _ = tcp.set_nodelay(true);
        let Ok(mut tls) = pending.acceptor.accept(tcp).await else {
            continue;
        };
        let mut shown = vec![0u8; token.len()];
        let read = tokio::time::timeout(Duration::from_secs(5), tls.read_exact(&mut shown)).await;
        let same = subtle::ConstantTimeEq::ct_eq(shown.as_slice(), token.as_bytes());
        if matches!(read, Ok(Ok(_))) && bool::from(same) {
            return Ok(tls);
        }
        tracing::warn!(%from, "a connection to a volume transfer's port without its token");
    }
}

/// TLS to `to`, whose certificate must be the one it announced.
async fn connect(
    to: &DirectTarget,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, AgentError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(other)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned(to.cert_sha256.clone(), provider)))
        .with_no_client_auth();
    let address = format!("{}:{}", to.address, to.port);
    let tcp = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&address),
    )
    .await
    .map_err(|_| other(format!("connecting to {address}: timed out")))?
    .map_err(|e| other(format!("connecting to {address}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(NAME).map_err(other)?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| other(format!("TLS to {address}: {e}")))
}

/// Trusts the one certificate whose SHA-256 the server passed on (the
/// handshake shows that the peer holds its key).
fn pinned(sha256: String, provider: Arc<rustls::crypto::CryptoProvider>) -> CheckedServer {
    CheckedServer::new(
        provider,
        Box::new(move |end_entity, _, _| {
            let sha = fingerprint(end_entity);
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                sha.as_bytes(),
                sha256.as_bytes(),
            )) {
                Ok(())
            } else {
                Err(rustls::Error::General(
                    "the transfer's target shows another certificate".into(),
                ))
            }
        }),
    )
}
