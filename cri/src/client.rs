//! The connection to containerd: the unix-socket channel, the namespace every
//! call carries, the version check, and waiting out a containerd restart.
//!
//! tonic's channel reconnects by itself after containerd restarts (calls
//! answer `Unavailable` for a second or two meanwhile); [`Cri::wait_ready`]
//! waits that out with backoff for callers that must resync afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use containerd_client::services::v1::{
    containers_client::ContainersClient, content_client::ContentClient, diff_client::DiffClient,
    events_client::EventsClient, images_client::ImagesClient, leases_client::LeasesClient,
    snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
    version_client::VersionClient,
};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::Request;

use crate::error::{error_chain, CriError, Result};
use crate::image::PullGate;
use crate::registry::{RegistryClient, RegistryConfig};

/// The snapshotter orca unpacks into and runs containers from.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The runtime containers are created with.
pub const RUNTIME: &str = "io.containerd.runc.v2";

/// How to reach containerd.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// containerd's gRPC socket.
    pub socket: PathBuf,
    /// The containerd namespace for everything orca creates.
    pub namespace: String,
    /// How long the first connection may take.
    pub connect_timeout: Duration,
    /// Registry settings for pulls.
    pub registry: RegistryConfig,
}

impl ConnectOptions {
    /// Options for `socket` and `namespace`, defaults otherwise.
    pub fn new(socket: impl Into<PathBuf>, namespace: impl Into<String>) -> Self {
        Self {
            socket: socket.into(),
            namespace: namespace.into(),
            connect_timeout: Duration::from_secs(5),
            registry: RegistryConfig::default(),
        }
    }
}

/// containerd's version as it reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub version: String,
    pub revision: String,
}

/// A handle on containerd, cheap to clone. All calls run in one namespace.
#[derive(Clone)]
pub struct Cri {
    inner: Arc<Inner>,
}

struct Inner {
    channel: Channel,
    socket: PathBuf,
    namespace: String,
    namespace_header: AsciiMetadataValue,
    registry: RegistryClient,
    pulls: PullGate,
}

impl std::fmt::Debug for Cri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cri")
            .field("socket", &self.inner.socket)
            .field("namespace", &self.inner.namespace)
            .finish()
    }
}

impl Cri {
    /// Connects to containerd and checks that it answers.
    pub async fn connect(options: ConnectOptions) -> Result<Self> {
        let socket = options.socket.clone();
        validate_namespace(&options.namespace)?;
        let namespace_header =
            AsciiMetadataValue::try_from(options.namespace.as_str()).map_err(|_| {
                CriError::InvalidConfig {
                    field: "namespace",
                    reason: format!("{:?} is not a valid header value", options.namespace),
                }
            })?;
        if !socket.exists() {
            return Err(CriError::Unavailable {
                socket,
                reason: "no socket there (is containerd running?)".into(),
            });
        }
        let channel = tokio::time::timeout(options.connect_timeout, channel_to(&socket))
            .await
            .map_err(|_| CriError::Unavailable {
                socket: socket.clone(),
                reason: format!(
                    "no answer within {}s",
                    options.connect_timeout.as_secs_f32()
                ),
            })??;
        let cri = Cri {
            inner: Arc::new(Inner {
                channel,
                socket,
                namespace: options.namespace,
                namespace_header,
                registry: RegistryClient::new(options.registry)?,
                pulls: PullGate::default(),
            }),
        };
        let version = cri.version().await?;
        tracing::debug!(version = %version.version, socket = %cri.inner.socket.display(), "connected to containerd");
        Ok(cri)
    }

    /// The namespace every call runs in.
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The socket this handle talks to.
    pub fn socket(&self) -> &Path {
        &self.inner.socket
    }

    /// containerd's version; also the cheapest liveness check.
    pub async fn version(&self) -> Result<Version> {
        let reply = VersionClient::new(self.inner.channel.clone())
            .version(())
            .await
            .map_err(|status| self.unavailable_or("Version.Version", "", status))?
            .into_inner();
        Ok(Version {
            version: reply.version,
            revision: reply.revision,
        })
    }

    /// Waits until containerd answers again, backing off from 50 ms to 1 s.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<Version> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut delay = Duration::from_millis(50);
        loop {
            match self.version().await {
                Ok(v) => return Ok(v),
                Err(e) if tokio::time::Instant::now() + delay > deadline => return Err(e),
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Maps a failed call: `Unavailable` names the socket, the rest keep
    /// their call and id.
    pub(crate) fn unavailable_or(
        &self,
        call: &'static str,
        id: &str,
        status: tonic::Status,
    ) -> CriError {
        if status.code() == tonic::Code::Unavailable {
            CriError::Unavailable {
                socket: self.inner.socket.clone(),
                reason: status.message().to_string(),
            }
        } else {
            CriError::from_status(call, id, status)
        }
    }

    /// Wraps a message in a request carrying the namespace.
    pub(crate) fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.inner.namespace_header.clone());
        request
    }

    /// Like [`Cri::req`], also holding what the call creates under `lease`.
    pub(crate) fn req_leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut request = self.req(message);
        if let Ok(value) = AsciiMetadataValue::try_from(lease) {
            request.metadata_mut().insert("containerd-lease", value);
        }
        request
    }

    pub(crate) fn registry(&self) -> &RegistryClient {
        &self.inner.registry
    }

    pub(crate) fn pulls(&self) -> &PullGate {
        &self.inner.pulls
    }

    pub(crate) fn containers(&self) -> ContainersClient<Channel> {
        ContainersClient::new(self.inner.channel.clone())
    }
    pub(crate) fn content(&self) -> ContentClient<Channel> {
        ContentClient::new(self.inner.channel.clone()).max_decoding_message_size(16 * 1024 * 1024)
    }
    pub(crate) fn diff(&self) -> DiffClient<Channel> {
        DiffClient::new(self.inner.channel.clone())
    }
    pub(crate) fn events(&self) -> EventsClient<Channel> {
        EventsClient::new(self.inner.channel.clone())
    }
    pub(crate) fn images(&self) -> ImagesClient<Channel> {
        ImagesClient::new(self.inner.channel.clone())
    }
    pub(crate) fn leases(&self) -> LeasesClient<Channel> {
        LeasesClient::new(self.inner.channel.clone())
    }
    pub(crate) fn snapshots(&self) -> SnapshotsClient<Channel> {
        SnapshotsClient::new(self.inner.channel.clone())
    }
    pub(crate) fn tasks(&self) -> TasksClient<Channel> {
        TasksClient::new(self.inner.channel.clone())
    }

    /// Creates a lease that expires by itself after `ttl`, so content and
    /// snapshots made under it survive garbage collection until they are
    /// referenced, and a crash mid-way leaks nothing for long.
    pub(crate) async fn lease(&self, ttl: Duration) -> Result<Lease> {
        use containerd_client::services::v1::CreateRequest;
        let expire = humantime::format_rfc3339_seconds(std::time::SystemTime::now() + ttl);
        let labels = HashMap::from([("containerd.io/gc.expire".to_string(), expire.to_string())]);
        let reply = self
            .leases()
            .create(self.req(CreateRequest {
                id: String::new(),
                labels,
            }))
            .await
            .map_err(|s| self.unavailable_or("Leases.Create", "", s))?
            .into_inner();
        let id = reply.lease.map(|l| l.id).unwrap_or_default();
        Ok(Lease {
            cri: self.clone(),
            id,
        })
    }
}

/// A containerd lease; [`Lease::release`] deletes it. If it is dropped
/// without a release, its expiry label lets containerd collect it.
pub(crate) struct Lease {
    cri: Cri,
    pub(crate) id: String,
}

impl Lease {
    pub(crate) async fn release(self) {
        use containerd_client::services::v1::DeleteRequest;
        let request = self.cri.req(DeleteRequest {
            id: self.id.clone(),
            sync: false,
        });
        if let Err(status) = self.cri.leases().delete(request).await {
            tracing::warn!(lease = %self.id, %status, "could not delete lease; it expires by itself");
        }
    }
}

async fn channel_to(socket: &Path) -> Result<Channel> {
    let path = socket.to_path_buf();
    let endpoint = Endpoint::try_from("http://[::]:50051").map_err(|e| CriError::Unavailable {
        socket: path.clone(),
        reason: e.to_string(),
    })?;
    let connector_path = path.clone();
    endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let path = connector_path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| CriError::Unavailable {
            socket: path,
            reason: error_chain(&e),
        })
}

/// containerd namespaces: letters, digits, `_`, `-`, `.`; starting with a
/// letter or digit; at most 76 characters.
fn validate_namespace(ns: &str) -> Result<()> {
    if crate::spec::is_containerd_name(ns) {
        Ok(())
    } else {
        Err(CriError::InvalidConfig {
            field: "namespace",
            reason: format!("{ns:?} is not a valid containerd namespace"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces() {
        assert!(validate_namespace("orca").is_ok());
        assert!(validate_namespace("orca-test.1_a").is_ok());
        assert!(validate_namespace("").is_err());
        assert!(validate_namespace("-x").is_err());
        assert!(validate_namespace("a/b").is_err());
    }

    #[tokio::test]
    async fn missing_socket_is_a_clear_error() {
        let err = Cri::connect(ConnectOptions::new("/nonexistent/containerd.sock", "orca"))
            .await
            .unwrap_err();
        let s = err.to_string();
        assert!(
            s.starts_with("containerd unavailable at /nonexistent/containerd.sock"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn socket_without_server_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.sock");
        // A socket file nobody listens on.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let err = Cri::connect(ConnectOptions::new(&path, "orca"))
            .await
            .unwrap_err();
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }
}
