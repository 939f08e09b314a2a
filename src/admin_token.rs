//! The first start's admin credential: when neither cluster.toml nor the
//! store holds an admin token, `orca server` makes one, stores its hash and
//! writes the value to `data_dir/admin.token` (0600), so that the `orca` CLI
//! on the same host works at once (as `kubectl` does after k3s starts). The
//! value is never logged. Also where the CLI finds that file.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use api::auth::{token_hash, TokenEntry};
use api::Role;

use crate::store::{Repo, StoreError};

/// The file's name in `data_dir`.
pub const FILE: &str = "admin.token";
/// The data dir the CLI looks in without `ORCA_DATA_DIR`.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/orca";

#[derive(Debug, thiserror::Error)]
pub enum AdminTokenError {
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("save the admin token: {0}")]
    Store(#[from] StoreError),
}

/// Makes the admin token unless `configured` or the store has one; returns
/// the file it was written to when it did. The file is written (and synced)
/// before the hash is stored: a crash in between leaves no admin token in
/// the store, so the next start makes a new one, never a stored token
/// whose value nobody has.
pub fn ensure(
    configured: &[TokenEntry],
    repo: &Repo,
    data_dir: &Path,
) -> Result<Option<PathBuf>, AdminTokenError> {
    let stored = repo.tokens()?;
    if configured
        .iter()
        .chain(&stored)
        .any(|t| t.role == Role::Admin)
    {
        return Ok(None);
    }
    let value = format!(
        "orca-admin-{}",
        (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect::<String>()
    );
    let path = data_dir.join(FILE);
    write_private(&path, &value).map_err(|source| AdminTokenError::Write {
        path: path.display().to_string(),
        source,
    })?;
    let taken = |name: &str| configured.iter().chain(&stored).any(|t| t.name == name);
    let name = std::iter::once("admin".to_string())
        .chain((2..).map(|n| format!("admin-{n}")))
        .find(|n| !taken(n))
        .unwrap_or_else(|| "admin".into());
    repo.put_token(&TokenEntry {
        name,
        role: Role::Admin,
        hash: token_hash(&value),
        project: None,
    })?;
    Ok(Some(path))
}

/// Writes `value` to `path` (0600) through a temporary file and a rename,
/// synced, so that the file is either the old one or the whole new one.
fn write_private(path: &Path, value: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("token.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Where the CLI looks for the token: `$ORCA_DATA_DIR/admin.token`, else
/// `/var/lib/orca/admin.token`.
pub fn cli_path(data_dir: Option<&str>) -> PathBuf {
    Path::new(
        data_dir
            .filter(|d| !d.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR),
    )
    .join(FILE)
}

/// The token in `path`, when the file is there and readable (trimmed; an
/// empty file counts as none).
pub fn read(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let value = text.trim();
    (!value.is_empty()).then(|| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn repo(dir: &Path) -> Repo {
        Repo::new(std::sync::Arc::new(
            crate::store::SledStore::open(&dir.join("db")).unwrap(),
        ))
    }

    #[test]
    fn first_start_makes_one_admin_token_and_later_starts_keep_it() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let path = ensure(&[], &repo, dir.path()).unwrap().expect("made");
        assert_eq!(path, dir.path().join(FILE));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let value = read(&path).unwrap();
        let stored = repo.tokens().unwrap();
        let caller = api::auth::find_token(&stored, &value).expect("the file's value is stored");
        assert_eq!(caller.role, Role::Admin);
        assert_eq!(stored.len(), 1);
        // Again: the store holds an admin token now, the file stays.
        assert_eq!(ensure(&[], &repo, dir.path()).unwrap(), None);
        assert_eq!(read(&path).unwrap(), value);
        assert_eq!(repo.tokens().unwrap().len(), 1);
    }

    #[test]
    fn an_admin_token_in_the_config_means_none_is_made() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        let configured = [TokenEntry {
            name: "ops".into(),
            role: Role::Admin,
            hash: token_hash("0123456789abcdef"),
            project: None,
        }];
        assert_eq!(ensure(&configured, &repo, dir.path()).unwrap(), None);
        assert!(!dir.path().join(FILE).exists());
        assert!(repo.tokens().unwrap().is_empty());
    }

    #[test]
    fn a_viewer_named_admin_does_not_count_and_keeps_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let repo = repo(dir.path());
        repo.put_token(&TokenEntry {
            name: "admin".into(),
            role: Role::Viewer,
            hash: token_hash("0123456789abcdef"),
            project: None,
        })
        .unwrap();
        ensure(&[], &repo, dir.path()).unwrap().expect("made");
        let names: Vec<String> = repo.tokens().unwrap().into_iter().map(|t| t.name).collect();
        assert!(names.contains(&"admin".to_string()) && names.contains(&"admin-2".to_string()));
    }

    #[test]
    fn the_cli_path_follows_orca_data_dir() {
        assert_eq!(cli_path(None), Path::new("/var/lib/orca/admin.token"));
        assert_eq!(cli_path(Some("")), Path::new("/var/lib/orca/admin.token"));
        assert_eq!(cli_path(Some("/srv/o")), Path::new("/srv/o/admin.token"));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("e");
        std::fs::write(&empty, "\n").unwrap();
        assert_eq!(read(&empty), None);
        assert_eq!(read(&dir.path().join("missing")), None);
    }
}
