//! The store: what the API acknowledged, kept durable. A small key-value
//! trait ([`Store`]) with a sled implementation (one server's default),
//! an etcd one (`[store] backend = "etcd"`, see [`settings`]) and an
//! in-memory one for logic tests, and [`Repo`], the typed view the control
//! plane uses.

#[cfg(test)]
mod conformance;
pub(crate) mod etcd_store;
#[cfg(test)]
mod mem;
mod records;
pub mod settings;
mod sled_store;
pub mod snapshot;

use std::sync::Arc;

pub use etcd_store::{EtcdStore, Fence};
#[cfg(test)]
pub use mem::MemStore;
pub use records::{
    spec_changed, AcmeCert, Canary, JobRecord, JoinTokenRecord, NodeRecord, Reverted,
    ServiceRecord, VersionRecord, VolumeRecord, MAX_HISTORY,
};
pub use sled_store::SledStore;

/// The kinds of things stored, each in its own keyspace.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Tree {
    Services,
    Tokens,
    Webhooks,
    Nodes,
    /// Replica addresses (the network's IPAM).
    Ipam,
    /// Encrypted secrets.
    Secrets,
    /// Archives imported from the air-gap directory.
    Imports,
    /// Join tokens of the cluster (hashes, never the secrets).
    JoinTokens,
    /// ACME: the account (sealed) and the certificates issued (keys sealed).
    Acme,
    /// Named volumes and the node each lives on.
    Volumes,
    /// The cluster itself: its CA (key sealed), shared by every server.
    Cluster,
}

impl Tree {
    /// Every tree.
    pub const ALL: [Tree; 11] = [
        Tree::Services,
        Tree::Tokens,
        Tree::Webhooks,
        Tree::Nodes,
        Tree::Ipam,
        Tree::Secrets,
        Tree::Imports,
        Tree::JoinTokens,
        Tree::Acme,
        Tree::Volumes,
        Tree::Cluster,
    ];

    /// The tree named `name` (see [`Tree::name`]).
    pub fn from_name(name: &str) -> Option<Tree> {
        Tree::ALL.into_iter().find(|t| t.name() == name)
    }

    pub fn name(self) -> &'static str {
        match self {
            Tree::Services => "services",
            Tree::Tokens => "tokens",
            Tree::Webhooks => "webhooks",
            Tree::Nodes => "nodes",
            Tree::Ipam => "ipam",
            Tree::Secrets => "secrets",
            Tree::Imports => "imports",
            Tree::JoinTokens => "join_tokens",
            Tree::Acme => "acme",
            Tree::Volumes => "volumes",
            Tree::Cluster => "cluster",
        }
    }
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {op} failed: {reason}")]
    Backend { op: &'static str, reason: String },
    /// The data directory's filesystem is full; nothing was changed.
    #[error("store {op} failed: the data directory is full ({reason})")]
    Full { op: &'static str, reason: String },
    #[error("stored {what} does not decode: {reason}")]
    Corrupt { what: String, reason: String },
    #[error(
        "the store at {path} stayed locked for {waited_ms} ms; is another orca running with this data_dir?"
    )]
    Locked { path: String, waited_ms: u128 },
    /// This server does not lead (or no longer does): its writes are
    /// refused, by itself or by etcd.
    #[error("store {op} refused: this server is not the leader")]
    NotLeader { op: &'static str },
    /// The store was handed on (`orca store migrate`): the server takes
    /// no change until it restarts on the new one.
    #[error("store {op} refused: this server's store was moved to another (orca store migrate); restart it on the new store")]
    Frozen { op: &'static str },
}

/// Durable key-value storage. `put` and `delete` return only once the
/// change is on disk: a reply sent after them survives a kill -9.
pub trait Store: Send + Sync {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError>;
    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError>;
    fn list(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError>;

    /// Every entry of every tree. A backend that can read all of them at
    /// one point of its history (etcd: one range at one revision) does.
    fn list_every(&self) -> Result<Vec<(Tree, String, Vec<u8>)>, StoreError> {
        let mut every = Vec::new();
        for tree in Tree::ALL {
            every.extend(self.list(tree)?.into_iter().map(|(k, v)| (tree, k, v)));
        }
        Ok(every)
    }
}

/// Typed access over a [`Store`], whose writes a snapshot can hold.
#[derive(Clone)]
pub struct Repo {
    store: Arc<snapshot::Gated>,
}

impl Repo {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store: Arc::new(snapshot::Gated::new(store)),
        }
    }

    /// The last snapshot before a move (see [`snapshot::Gated::freeze`]).
    pub fn freeze(&self, taken_at: String) -> Result<api::store::StoreSnapshot, StoreError> {
        self.store.freeze(taken_at)
    }

    /// A consistent snapshot of the whole store (see [`snapshot`]).
    pub fn snapshot(&self, taken_at: String) -> Result<api::store::StoreSnapshot, StoreError> {
        self.store.snapshot(taken_at)
    }

    fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        match self.store.get(tree, key)? {
            None => Ok(None),
            Some(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StoreError::Corrupt {
                        what: format!("{}/{key}", tree.name()),
                        reason: e.to_string(),
                    })
            }
        }
    }

    fn put_json<T: serde::Serialize>(
        &self,
        tree: Tree,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|e| StoreError::Backend {
            op: "encode",
            reason: e.to_string(),
        })?;
        self.store.put(tree, key, &bytes)
    }

    fn list_json<T: serde::de::DeserializeOwned>(&self, tree: Tree) -> Result<Vec<T>, StoreError> {
        self.store
            .list(tree)?
            .into_iter()
            .map(|(k, v)| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: format!("{}/{k}", tree.name()),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    pub fn service(&self, name: &str) -> Result<Option<ServiceRecord>, StoreError> {
        self.get_json(Tree::Services, name)
    }
    pub fn put_service(&self, record: &ServiceRecord) -> Result<(), StoreError> {
        self.put_json(Tree::Services, &record.spec.name, record)
    }
    pub fn services(&self) -> Result<Vec<ServiceRecord>, StoreError> {
        self.list_json(Tree::Services)
    }

    #[cfg(test)]
    pub fn node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        self.get_json(Tree::Nodes, id)
    }
    pub fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.put_json(Tree::Nodes, &node.id, node)
    }
    pub fn join_tokens(&self) -> Result<Vec<JoinTokenRecord>, StoreError> {
        self.list_json(Tree::JoinTokens)
    }
    pub fn join_token(&self, id: &str) -> Result<Option<JoinTokenRecord>, StoreError> {
        self.get_json(Tree::JoinTokens, id)
    }
    pub fn put_join_token(&self, token: &JoinTokenRecord) -> Result<(), StoreError> {
        self.put_json(Tree::JoinTokens, &token.id, token)
    }
    pub fn delete_join_token(&self, id: &str) -> Result<bool, StoreError> {
        let existed = self.store.get(Tree::JoinTokens, id)?.is_some();
        self.store.delete(Tree::JoinTokens, id)?;
        Ok(existed)
    }
    pub fn nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        self.list_json(Tree::Nodes)
    }
    pub fn delete_node(&self, id: &str) -> Result<(), StoreError> {
        self.store.delete(Tree::Nodes, id)
    }

    pub fn volumes(&self) -> Result<Vec<VolumeRecord>, StoreError> {
        self.list_json(Tree::Volumes)
    }
    pub fn put_volume(&self, v: &VolumeRecord) -> Result<(), StoreError> {
        self.put_json(Tree::Volumes, &v.key(), v)
    }
    pub fn delete_volume(&self, key: &str) -> Result<(), StoreError> {
        self.store.delete(Tree::Volumes, key)
    }

    pub fn tokens(&self) -> Result<Vec<api::auth::TokenEntry>, StoreError> {
        self.list_json(Tree::Tokens)
    }
    pub fn put_token(&self, token: &api::auth::TokenEntry) -> Result<(), StoreError> {
        self.put_json(Tree::Tokens, &token.name, token)
    }
    pub fn delete_token(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.store.get(Tree::Tokens, name)?.is_some();
        self.store.delete(Tree::Tokens, name)?;
        Ok(existed)
    }

    /// The ACME account's credentials, sealed.
    pub fn acme_account(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Tree::Acme, "account")
    }
    pub fn put_acme_account(&self, sealed: &[u8]) -> Result<(), StoreError> {
        self.store.put(Tree::Acme, "account", sealed)
    }
    /// The certificate ACME issued for `domain`, if any.
    pub fn acme_cert(&self, domain: &str) -> Result<Option<AcmeCert>, StoreError> {
        self.get_json(Tree::Acme, &format!("cert:{domain}"))
    }
    pub fn put_acme_cert(&self, cert: &AcmeCert) -> Result<(), StoreError> {
        self.put_json(Tree::Acme, &format!("cert:{}", cert.domain), cert)
    }

    /// A secret, sealed.
    pub fn secret(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(Tree::Secrets, name)
    }
    pub fn put_secret(&self, name: &str, sealed: &[u8]) -> Result<(), StoreError> {
        self.store.put(Tree::Secrets, name, sealed)
    }
    pub fn delete_secret(&self, name: &str) -> Result<bool, StoreError> {
        let existed = self.store.get(Tree::Secrets, name)?.is_some();
        self.store.delete(Tree::Secrets, name)?;
        Ok(existed)
    }
    pub fn secret_names(&self) -> Result<Vec<String>, StoreError> {
        Ok(self
            .store
            .list(Tree::Secrets)?
            .into_iter()
            .map(|(k, _)| k)
            .collect())
    }

    /// The value of `key` in `tree`, decoded.
    pub fn get_typed<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        self.get_json(tree, key)
    }
    /// Every value of `tree`, decoded.
    pub fn list_typed<T: serde::de::DeserializeOwned>(
        &self,
        tree: Tree,
    ) -> Result<Vec<T>, StoreError> {
        self.list_json(tree)
    }
    /// Stores `value` under `key`, durably.
    pub fn put_typed<T: serde::Serialize>(
        &self,
        tree: Tree,
        key: &str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.put_json(tree, key, value)
    }
    /// Deletes `key`; whether it was there.
    pub fn delete_in(&self, tree: Tree, key: &str) -> Result<bool, StoreError> {
        let existed = self.store.get(tree, key)?.is_some();
        self.store.delete(tree, key)?;
        Ok(existed)
    }
}

/// The network's address book, kept in the store.
impl network::IpamStore for Repo {
    fn load(&self) -> Result<Vec<(String, std::net::Ipv4Addr)>, String> {
        self.list_json::<(String, std::net::Ipv4Addr)>(Tree::Ipam)
            .map_err(|e| e.to_string())
    }
    fn save(&self, owner: &str, ip: std::net::Ipv4Addr) -> Result<(), String> {
        self.put_json(Tree::Ipam, owner, &(owner, ip))
            .map_err(|e| e.to_string())
    }
    fn remove(&self, owner: &str) -> Result<(), String> {
        self.store
            .delete(Tree::Ipam, owner)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(store: Arc<dyn Store>) {
        assert_eq!(store.get(Tree::Services, "a").unwrap(), None);
        store.put(Tree::Services, "a", b"1").unwrap();
        store.put(Tree::Services, "b", b"2").unwrap();
        store.put(Tree::Nodes, "a", b"n").unwrap();
        assert_eq!(
            store.get(Tree::Services, "a").unwrap().as_deref(),
            Some(&b"1"[..])
        );
        let all = store.list(Tree::Services).unwrap();
        assert_eq!(
            all,
            vec![
                ("a".to_string(), b"1".to_vec()),
                ("b".to_string(), b"2".to_vec())
            ]
        );
        store.delete(Tree::Services, "a").unwrap();
        store.delete(Tree::Services, "never").unwrap();
        assert_eq!(store.list(Tree::Services).unwrap().len(), 1);
        assert_eq!(store.list(Tree::Nodes).unwrap().len(), 1);
    }

    #[test]
    fn mem_store() {
        exercise(Arc::new(MemStore::default()));
    }

    #[test]
    fn sled_store_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        exercise(Arc::new(SledStore::open(dir.path()).unwrap()));
        let reopened = SledStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.get(Tree::Services, "b").unwrap().as_deref(),
            Some(&b"2"[..])
        );
    }
}
