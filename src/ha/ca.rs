//! The cluster CA in the store (tree `cluster`), its key sealed with the
//! secrets key: every server that shares the store and the secrets key
//! signs and serves with the same CA, so a join token's pin holds for all
//! of them. A server with another secrets key cannot open it, and says so.

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::cluster::pki::Ca;
use crate::secrets::SecretBox;
use crate::store::{Repo, Tree};

const KEY: &str = "ca";
/// What the key is sealed as (bound into the seal).
const SEALED_AS: &str = "cluster/ca.key";

#[derive(Serialize, Deserialize)]
struct StoredCa {
    cert_pem: String,
    /// The key's PEM, sealed, in hex.
    key_sealed: String,
}

/// The stored CA, if the store has one.
pub fn load(repo: &Repo, secrets: &SecretBox) -> anyhow::Result<Option<Ca>> {
    let Some(stored) = repo
        .get_typed::<StoredCa>(Tree::Cluster, KEY)
        .context("read the cluster CA from the store")?
    else {
        return Ok(None);
    };
    let sealed = hex::decode(&stored.key_sealed).context("the stored CA key is not hex")?;
    let key = secrets.open_value(SEALED_AS, &sealed).map_err(|_| {
        anyhow::anyhow!(
            "the cluster CA in the store cannot be opened with this server's secrets.key: \
             every server needs the same one (orca server --join-server copies it)"
        )
    })?;
    Ok(Some(
        Ca::from_pem(stored.cert_pem, &key).context("the stored cluster CA")?,
    ))
}

/// Stores the CA of `dir` (a server's files from before it shared a
/// store) or a new one. The leader alone calls it, through its fence.
pub fn create(
    repo: &Repo,
    secrets: &SecretBox,
    cluster: &str,
    dir: &std::path::Path,
) -> anyhow::Result<Ca> {
    let (cert_pem, key_pem) = match Ca::files_in(dir) {
        Some(files) => files,
        None => Ca::generate(cluster).context("make the cluster CA")?,
    };
    let ca = Ca::from_pem(cert_pem.clone(), &key_pem).context("the cluster CA")?;
    let stored = StoredCa {
        cert_pem,
        key_sealed: hex::encode(secrets.seal(SEALED_AS, &key_pem)),
    };
    repo.put_typed(Tree::Cluster, KEY, &stored)
        .context("store the cluster CA")?;
    Ok(ca)
}
