//! The [`Store`] on sled, under `data_dir/db`. Every write is flushed to
//! disk before it returns.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{Store, StoreError, Tree};

/// sled, one tree per [`Tree`].
pub struct SledStore {
    db: sled::Db,
    dir: std::path::PathBuf,
}

/// Free space a write leaves untouched: sled cannot be let near a full
/// disk (after a failed write its writers wait for good), so a write that
/// would leave less than this is refused before sled sees it.
pub const RESERVE: u64 = 8 * 1024 * 1024;

/// Bytes free for an unprivileged writer on the filesystem of `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Whether a write of `len` bytes fits with [`RESERVE`] to spare (a
/// change is logged, and may be copied once when sled compacts).
fn fits(free: u64, len: usize) -> bool {
    free >= RESERVE.saturating_add(2 * len as u64)
}

fn backend(op: &'static str) -> impl Fn(sled::Error) -> StoreError {
    move |e| {
        let full = matches!(&e, sled::Error::Io(io)
            if io.raw_os_error() == Some(libc::ENOSPC) || io.kind() == std::io::ErrorKind::StorageFull);
        let reason = e.to_string();
        if full {
            StoreError::Full { op, reason }
        } else {
            StoreError::Backend { op, reason }
        }
    }
}

/// How long [`SledStore::open`] waits for the database's file lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// Whether sled refused to open because another handle holds its file lock.
/// sled reports it only as an `Other` I/O error with this text.
fn is_lock_held(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().starts_with("could not acquire lock"))
}

impl SledStore {
    /// Opens (or creates) the database in `dir`.
    ///
    /// sled releases its file lock from a background thread after the last
    /// handle is dropped, so a reopen in the same process can find it still
    /// held for a moment; the lock is waited for up to [`LOCK_WAIT`]. Held
    /// longer, the directory belongs to another process: [`StoreError::Locked`].
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_waiting(dir, LOCK_WAIT)
    }

    fn open_waiting(dir: &Path, wait: Duration) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .mode(sled::Mode::LowSpace)
            .cache_capacity(8 * 1024 * 1024);
        let started = Instant::now();
        loop {
            match config.open() {
                Ok(db) => {
                    return Ok(Self {
                        db,
                        dir: dir.to_path_buf(),
                    })
                }
                Err(e) if is_lock_held(&e) => {
                    if started.elapsed() >= wait {
                        return Err(StoreError::Locked {
                            path: dir.display().to_string(),
                            waited_ms: started.elapsed().as_millis(),
                        });
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(e) => return Err(backend("open")(e)),
            }
        }
    }

    /// Refuses a write of `len` bytes that would leave less than
    /// [`RESERVE`] free (see there).
    fn room_for(&self, op: &'static str, len: usize) -> Result<(), StoreError> {
        match free_bytes(&self.dir) {
            Some(free) if !fits(free, len) => Err(StoreError::Full {
                op,
                reason: format!(
                    "{free} bytes free, less than the {} MiB kept in reserve",
                    RESERVE >> 20
                ),
            }),
            _ => Ok(()),
        }
    }

    fn tree(&self, tree: Tree) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(tree.name()).map_err(backend("open tree"))
    }
}

/// Flushes a change to `key` (it held `before`); when that fails, the
/// change is undone in memory too, so a write answered with an error is
/// never applied later (the undo reaches the disk with the next flush).
fn flushed(t: &sled::Tree, key: &str, before: Option<sled::IVec>) -> Result<(), StoreError> {
    let Err(e) = t.flush() else {
        return Ok(());
    };
    let undone = match before {
        Some(v) => t.insert(key.as_bytes(), v).map(|_| ()),
        None => t.remove(key.as_bytes()).map(|_| ()),
    };
    if let Err(u) = undone {
        tracing::error!(key, error = %u, "could not undo a change that was not saved");
    }
    Err(backend("flush")(e))
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
        self.room_for("put", key.len() + value.len())?;
        let t = self.tree(tree)?;
        let before = t.insert(key.as_bytes(), value).map_err(backend("put"))?;
        flushed(&t, key, before)
    }

    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        self.room_for("delete", key.len())?;
        let t = self.tree(tree)?;
        let before = t.remove(key.as_bytes()).map_err(backend("delete"))?;
        flushed(&t, key, before)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_must_leave_the_reserve_free() {
        assert!(fits(RESERVE + 2_000, 1_000));
        assert!(!fits(RESERVE + 1_999, 1_000));
        assert!(!fits(0, 0));
        assert!(free_bytes(Path::new("/")).is_some());
    }

    #[test]
    fn a_store_another_handle_holds_is_a_locked_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = SledStore::open(dir.path()).unwrap();
        let started = Instant::now();
        let err = SledStore::open_waiting(dir.path(), Duration::from_millis(200))
            .err()
            .expect("a second open while the first is held must fail");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert!(matches!(err, StoreError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("another orca"), "{err}");
        drop(held);
        // Released in the background: the normal open waits for it.
        SledStore::open(dir.path()).unwrap();
    }
}
