//! The [`Store`] on sled, under `data_dir/db`. Every write is flushed to
//! disk before it returns.

use std::path::Path;

use super::{Store, StoreError, Tree};

/// sled, one tree per [`Tree`].
pub struct SledStore {
    db: sled::Db,
}

fn backend(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        reason: e.to_string(),
    }
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(8 * 1024 * 1024)
            .open()
            .map_err(backend("open"))?;
        Ok(Self { db })
    }

    fn tree(&self, tree: Tree) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(tree.name()).map_err(backend("open tree"))
    }
}

impl Store for SledStore {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree(tree)?
            .get(key.as_bytes())
            .map_err(backend("get"))?
            .map(|v| v.to_vec()))
    }

    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let t = self.tree(tree)?;
        t.insert(key.as_bytes(), value).map_err(backend("put"))?;
        t.flush().map_err(backend("flush"))?;
        Ok(())
    }

    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        let t = self.tree(tree)?;
        t.remove(key.as_bytes()).map_err(backend("delete"))?;
        t.flush().map_err(backend("flush"))?;
        Ok(())
    }

    fn list(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.tree(tree)?
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(backend("scan"))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            })
            .collect()
    }
}
