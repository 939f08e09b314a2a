//! The air-gap directory (`[registry] import_dir`): every `.tar` dropped
//! there (an OCI layout or a `docker save` archive) is imported into
//! containerd once, at start and whenever one appears, and what it brought
//! is recorded in the store. A file is taken once it has not changed for a
//! moment (so one still being copied in waits); a changed file is imported
//! again, a failed one only once it changes.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::store::{Repo, Tree};

/// How often the directory is looked at.
pub const SCAN_EVERY: Duration = Duration::from_secs(2);
/// A file unchanged for this long is complete.
const SETTLED: Duration = Duration::from_secs(1);

/// What importing one file did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub file: String,
    pub size: u64,
    /// Modification time, in seconds since the epoch.
    pub modified: u64,
    /// The images it named, as `name@digest`.
    pub images: Vec<String>,
    /// Why it could not be imported, if it could not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// RFC 3339.
    pub at: String,
}

/// A `.tar` in the directory, complete and not imported in this form yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    pub path: PathBuf,
    pub file: String,
    pub size: u64,
    pub modified: u64,
}

/// The files of `dir` to import now, given what was imported (pure but for
/// reading the directory).
pub fn pending(dir: &Path, done: &[ImportRecord], now: SystemTime) -> Vec<Pending> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<Pending> = entries
        .flatten()
        .filter_map(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            let modified_at = meta.modified().ok()?;
            let settled = now.duration_since(modified_at).is_ok_and(|d| d >= SETTLED);
            let modified = modified_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let seen = done
                .iter()
                .any(|r| r.file == file && r.size == meta.len() && r.modified == modified);
            (file.ends_with(".tar") && settled && !seen).then(|| Pending {
                path: e.path(),
                file,
                size: meta.len(),
                modified,
            })
        })
        .collect();
    out.sort_by(|a, b| a.file.cmp(&b.file));
    out
}

/// Imports what is pending in `dir` once; the records it made.
pub async fn scan(dir: &Path, cri: &cri::Cri, repo: &Repo) -> Vec<ImportRecord> {
    let done: Vec<ImportRecord> = repo.list_typed(Tree::Imports).unwrap_or_default();
    let mut made = Vec::new();
    for p in pending(dir, &done, SystemTime::now()) {
        let result = cri.import_archive(&p.path, None).await;
        let (images, error) = match result {
            Ok(images) => {
                let names = images
                    .iter()
                    .map(|i| format!("{}@{}", i.name, i.digest))
                    .collect();
                (names, None)
            }
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        match &error {
            None => tracing::info!(file = %p.file, images = ?images, "imported"),
            Some(e) => tracing::warn!(file = %p.file, error = %e, "import failed"),
        }
        let record = ImportRecord {
            file: p.file.clone(),
            size: p.size,
            modified: p.modified,
            images,
            error,
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        };
        let (repo, key, value) = (repo.clone(), p.file.clone(), record.clone());
        let saved =
            tokio::task::spawn_blocking(move || repo.put_typed(Tree::Imports, &key, &value)).await;
        if !matches!(saved, Ok(Ok(()))) {
            tracing::warn!(file = %p.file, "could not record the import");
        }
        made.push(record);
    }
    made
}

/// Scans `dir` now and every [`SCAN_EVERY`] until `stop` resolves.
pub async fn run(
    dir: PathBuf,
    cri: cri::Cri,
    repo: Repo,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut stop = std::pin::pin!(stop);
    loop {
        scan(&dir, &cri, &repo).await;
        tokio::select! {
            _ = tokio::time::sleep(SCAN_EVERY) => {}
            _ = &mut stop => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settled_new_or_changed_archives_are_pending() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tar"), b"aaaa").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
        std::fs::create_dir(dir.path().join("sub.tar")).unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        // Just written: not settled yet.
        assert!(pending(dir.path(), &[], SystemTime::now()).is_empty());
        let found = pending(dir.path(), &[], later);
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].file.as_str(), found[0].size), ("a.tar", 4));
        let record = ImportRecord {
            file: "a.tar".into(),
            size: 4,
            modified: found[0].modified,
            images: vec![],
            error: None,
            at: String::new(),
        };
        assert!(pending(dir.path(), std::slice::from_ref(&record), later).is_empty());
        // Changed: pending again.
        std::fs::write(dir.path().join("a.tar"), b"aaaaaa").unwrap();
        assert_eq!(pending(dir.path(), &[record], later).len(), 1);
    }
}
