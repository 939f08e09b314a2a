//! An in-memory [`Store`] for logic tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Store, StoreError, Tree};

/// Everything in one map; a mutex because tests share it across tasks.
#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<(Tree, String), Vec<u8>>>,
}

impl MemStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Tree, String), Vec<u8>>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(tree, key.to_string())).cloned())
    }
    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock().insert((tree, key.to_string()), value.to_vec());
        Ok(())
    }
    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        self.lock().remove(&(tree, key.to_string()));
        Ok(())
    }
    fn list(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|((t, _), _)| *t == tree)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
}
