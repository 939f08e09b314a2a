//! A volume move's copy straight from node to node: the target opens a
//! port with a certificate of its own for this one transfer, the server
//! passes its address, the certificate's SHA-256 and a one-time token to
//! the source over the cluster's mTLS streams, and the source sends the
//! archive there (see [`crate::agent::direct`]). The data then crosses the
//! network once and never passes through the server. When the target
//! cannot be asked or reached (an older node, no address, nodes that only
//! reach the server), the copy goes through the server as before.

use api::ApiError;

use crate::agent::direct::DirectTarget;
use crate::agent::{AgentError, NodeAgent};
use crate::control::ControlPlane;

/// The address other nodes reach node `id` at, if it has one.
fn address_of(table: &crate::nodes::Table, id: &str) -> Option<String> {
    let n = table.get(id)?;
    let host = n
        .record
        .address
        .rsplit_once(':')
        .map_or(n.record.address.as_str(), |(h, _)| h);
    let ip: std::net::IpAddr = host.parse().ok()?;
    (!ip.is_unspecified()).then(|| ip.to_string())
}

impl ControlPlane {
    /// The direct copy of volume `project/name` from node `from` to node
    /// `to`, unpacked beside (not yet in place of) anything there: its
    /// size and SHA-256, once both sides agree; `None` when it cannot be
    /// made directly (nothing was written: the caller goes through the
    /// server instead).
    pub(super) async fn copy_direct(
        &self,
        project: &str,
        name: &str,
        (from, to): (&str, &str),
        source: &dyn NodeAgent,
        target: &dyn NodeAgent,
    ) -> Result<Option<(u64, String)>, ApiError> {
        let key = format!("{project}/{name}");
        let table = self.inner().nodes.snapshot();
        // A node of another version may not know the calls.
        let current = |id: &str| {
            table
                .get(id)
                .is_some_and(|n| n.record.version == env!("CARGO_PKG_VERSION"))
        };
        let Some(address) = address_of(&table, to).filter(|_| current(from) && current(to)) else {
            return Ok(None);
        };
        let listening = match target.listen_volume(project, name).await {
            Ok(l) => l,
            Err(e) => {
                tracing::info!(volume = %key, node = to, error = %e, "no direct transfer: the target opened no port");
                return Ok(None);
            }
        };
        let token = listening.token.clone();
        let direct = DirectTarget {
            address,
            port: listening.port,
            cert_sha256: listening.cert_sha256,
            token: listening.token,
        };
        let send = async {
            let sent = source.send_volume(project, name, &direct).await;
            if sent.is_err() {
                // The target stops waiting if nothing reached it.
                let _ = target.await_volume(&token, true).await;
            }
            sent
        };
        let (sent, received) = tokio::join!(send, target.await_volume(&token, false));
        match (sent, received) {
            (Ok(sent), Ok(Some(received))) => {
                if sent.sha256 != received.sha256 {
                    return Err(ApiError::internal(format!(
                        "volume {key}: the copy's SHA-256 {} differs from the source's {}",
                        received.sha256, sent.sha256
                    )));
                }
                Ok(Some((received.bytes, sent.sha256)))
            }
            // The target took nothing: through the server instead.
            (Err(e), Err(AgentError::NotFound(_)) | Ok(None)) => {
                tracing::info!(volume = %key, from, to, error = %e, "no direct transfer: going through the server");
                Ok(None)
            }
            (Err(e), _) | (Ok(_), Err(e)) => Err(ApiError::internal(format!(
                "volume {key}: the copy from {from} to {to} failed: {e}"
            ))),
            (Ok(_), Ok(None)) => Err(ApiError::internal(format!(
                "volume {key}: the target gave up the transfer"
            ))),
        }
    }
}
