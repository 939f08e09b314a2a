//! `orca server --join-server HOST:6881,... --token <server join token>`:
//! before a new server opens anything, it asks a leading server of the
//! control plane for the secrets key, over the cluster port's TLS with
//! the CA the token pins, and keeps it in `data_dir/secrets.key` (0600).
//! A server that has another key already is refused: it could open
//! nothing the others sealed.

use std::path::Path;

use anyhow::Context;

use crate::cluster::enroll::{channel, check_server, Fatal};
use crate::cluster::pki;
use crate::cluster::token::JoinToken;
use crate::cluster::wire::service::cluster_client::ClusterClient;
use crate::cluster::wire::ServerJoinRequest;

/// See the module doc. `servers` is one `HOST:PORT` or several, comma-
/// separated; each is asked in turn until the leader answers.
pub async fn join(
    servers: &str,
    token: &str,
    server_id: &str,
    key_path: &Path,
) -> anyhow::Result<()> {
    let parsed = JoinToken::parse(token).map_err(|e| Fatal(e.to_string()))?;
    let parsed = &parsed;
    let got = crate::cluster::servers::first_taken(servers, "server join", |one| async move {
        match ask(&one, parsed, token, server_id).await {
            Ok(key) => Ok(Some(key)),
            // Joined before (a restart with the same arguments): the key
            // kept then is checked against the store's CA at start.
            Err(e) if key_path.exists() && format!("{e:#}").contains("join token") => {
                tracing::info!(error = %format!("{e:#}"), "joined before: starting with the secrets key kept then");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    })
    .await?;
    match got {
        Some(key) => keep(&key, key_path),
        None => Ok(()),
    }
}

/// The secrets key, from `server`.
async fn ask(
    server: &str,
    parsed: &JoinToken,
    token: &str,
    server_id: &str,
) -> anyhow::Result<Vec<u8>> {
    check_server(server, &parsed.ca_sha256).await?;
    let tls = pki::agent_tls(&parsed.ca_sha256, None)?;
    let mut client = ClusterClient::new(channel(server, tls).await?);
    let reply = client
        .join_server(ServerJoinRequest {
            token: token.to_string(),
            server_id: server_id.to_string(),
        })
        .await
        .map_err(|s| match s.code() {
            tonic::Code::Unavailable => anyhow::anyhow!("{server}: {}", s.message()),
            _ => Fatal(format!("the server refused the join: {}", s.message())).into(),
        })?
        .into_inner();
    let key = hex::decode(&reply.secrets_key).context("the secrets key is not hex")?;
    if key.len() != 32 {
        anyhow::bail!("the secrets key has {} bytes, not 32", key.len());
    }
    Ok(key)
}

/// Writes `key` to `path` (0600), or checks that the key there is it.
fn keep(key: &[u8], path: &Path) -> anyhow::Result<()> {
    match std::fs::read(path) {
        Ok(have) if have == key => Ok(()),
        Ok(_) => Err(Fatal(format!(
            "{} holds another secrets key than the cluster's: this server could open nothing the others sealed; \
             move it away (nothing in the shared store was sealed with it) and join again",
            path.display()
        ))
        .into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
            }
            pki::write_new_private(path, key)?;
            tracing::info!(file = %path.display(), "joined the control plane: secrets key kept");
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}
