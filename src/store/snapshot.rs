//! Consistent snapshots of the whole store, and restoring one into an
//! empty store. Every write goes through [`Gated`], which lets writes run
//! side by side but holds them while a snapshot lists the trees: the
//! snapshot is the state between two writes, on sled and on etcd alike.

use std::sync::{Arc, RwLock};

use api::store::{StoreEntry, StoreSnapshot, SNAPSHOT_FORMAT};

use super::{Store, StoreError, Tree};

/// A store whose writes a snapshot can hold.
pub struct Gated {
    inner: Arc<dyn Store>,
    gate: RwLock<()>,
    /// Set by [`Gated::freeze`]: every write is refused from then on.
    frozen: std::sync::atomic::AtomicBool,
}

impl Gated {
    pub fn new(inner: Arc<dyn Store>) -> Self {
        Self {
            inner,
            gate: RwLock::new(()),
            frozen: Default::default(),
        }
    }

    /// Every entry of every tree, with no write in flight meanwhile.
    pub fn snapshot(&self, taken_at: String) -> Result<StoreSnapshot, StoreError> {
        let _held = self.gate.write().unwrap_or_else(|p| p.into_inner());
        self.listed(taken_at)
    }

    /// Every entry of every tree (the caller holds the gate).
    fn listed(&self, taken_at: String) -> Result<StoreSnapshot, StoreError> {
        let entries = self
            .inner
            .list_every()?
            .into_iter()
            .map(|(tree, key, value)| StoreEntry {
                tree: tree.name().to_string(),
                key,
                value: hex::encode(value),
            })
            .collect();
        Ok(StoreSnapshot {
            format: SNAPSHOT_FORMAT.to_string(),
            taken_at,
            entries,
        })
    }
}

impl Gated {
    /// A last snapshot: every write after it is refused, until the server
    /// restarts (on the store the snapshot was moved to).
    pub fn freeze(&self, taken_at: String) -> Result<StoreSnapshot, StoreError> {
        let _held = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let snapshot = self.listed(taken_at)?;
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
        Ok(snapshot)
    }

    fn open_for(&self, op: &'static str) -> Result<(), StoreError> {
        if self.frozen.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Frozen { op });
        }
        Ok(())
    }
}

impl Store for Gated {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(tree, key)
    }

    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let _open = self.gate.read().unwrap_or_else(|p| p.into_inner());
        self.open_for("put")?;
        self.inner.put(tree, key, value)
    }

    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        let _open = self.gate.read().unwrap_or_else(|p| p.into_inner());
        self.open_for("delete")?;
        self.inner.delete(tree, key)
    }

    fn list(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.list(tree)
    }

    fn list_every(&self) -> Result<Vec<(Tree, String, Vec<u8>)>, StoreError> {
        self.inner.list_every()
    }
}

/// Why a snapshot cannot be restored.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error(
        "not a store snapshot of this format ({found:?}; this build reads {})",
        SNAPSHOT_FORMAT
    )]
    Format { found: String },
    #[error("entry {n}: {why}")]
    Entry { n: usize, why: String },
    #[error("the target store is not empty (tree {tree} has entries): restore only into a new data directory")]
    NotEmpty { tree: &'static str },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Fails unless `target` holds nothing.
pub fn empty(target: &dyn Store) -> Result<(), RestoreError> {
    for tree in Tree::ALL {
        if !target.list(tree)?.is_empty() {
            return Err(RestoreError::NotEmpty { tree: tree.name() });
        }
    }
    Ok(())
}

/// Writes every entry of `snapshot` into `target`, which must be empty:
/// nothing stored is ever overwritten by a restore. Checks the whole
/// snapshot before the first write.
pub fn restore(snapshot: &StoreSnapshot, target: &dyn Store) -> Result<usize, RestoreError> {
    if snapshot.format != SNAPSHOT_FORMAT {
        return Err(RestoreError::Format {
            found: snapshot.format.clone(),
        });
    }
    let mut decoded = Vec::with_capacity(snapshot.entries.len());
    for (n, e) in snapshot.entries.iter().enumerate() {
        let tree = Tree::from_name(&e.tree).ok_or_else(|| RestoreError::Entry {
            n,
            why: format!("unknown tree {:?}", e.tree),
        })?;
        let value = hex::decode(&e.value).map_err(|err| RestoreError::Entry {
            n,
            why: format!("value is not hex: {err}"),
        })?;
        decoded.push((tree, e.key.as_str(), value));
    }
    empty(target)?;
    for (tree, key, value) in &decoded {
        target.put(*tree, key, value)?;
    }
    Ok(decoded.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;

    #[test]
    fn a_snapshot_restores_into_an_empty_store_only() {
        let source = Gated::new(Arc::new(MemStore::default()));
        source.put(Tree::Services, "web", b"{\"v\":1}").unwrap();
        source.put(Tree::Secrets, "shop/KEY", &[0, 1, 255]).unwrap();
        let snap = source.snapshot("2026-12-07T00:00:00Z".into()).unwrap();
        assert_eq!(snap.entries.len(), 2);
        // Through JSON, as the API and the CLI carry it.
        let snap: StoreSnapshot =
            serde_json::from_str(&serde_json::to_string(&snap).unwrap()).unwrap();

        let target = MemStore::default();
        assert_eq!(restore(&snap, &target).unwrap(), 2);
        for tree in Tree::ALL {
            assert_eq!(target.list(tree).unwrap(), source.list(tree).unwrap());
        }
        // Never over what is there.
        let e = restore(&snap, &target).unwrap_err();
        assert!(matches!(e, RestoreError::NotEmpty { .. }), "{e}");

        let mut bad = snap.clone();
        bad.format = "something/2".into();
        assert!(matches!(
            restore(&bad, &MemStore::default()),
            Err(RestoreError::Format { .. })
        ));
        let mut bad = snap;
        bad.entries[1].tree = "nope".into();
        let empty = MemStore::default();
        assert!(matches!(
            restore(&bad, &empty),
            Err(RestoreError::Entry { n: 1, .. })
        ));
        // Checked whole before the first write.
        assert!(empty.list(Tree::Services).unwrap().is_empty());
    }
}
