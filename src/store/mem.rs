//! An in-memory [`Store`] for logic tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Store, StoreError, Tree};

/// Everything in one map; a mutex because tests share it across tasks.
#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<(Tree, String), Vec<u8>>>,
    /// Writes fail while set, as on a full or broken disk.
    failing: std::sync::atomic::AtomicBool,
}

impl MemStore {
    /// Makes every write fail (true) or work again (false).
    pub fn fail_writes(&self, fail: bool) {
        self.failing
            .store(fail, std::sync::atomic::Ordering::Relaxed);
    }

    fn check(&self, op: &'static str) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StoreError::Backend {
                op,
                reason: "writes fail (test)".into(),
            });
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Tree, String), Vec<u8>>> {
        self.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store for MemStore {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock().get(&(tree, key.to_string())).cloned())
    }
    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.check("put")?;
        self.lock().insert((tree, key.to_string()), value.to_vec());
        Ok(())
    }
    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        self.check("delete")?;
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
