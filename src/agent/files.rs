//! A replica's `files` on its node: plain files under
//! `data_dir/files/<id>/`, secret files on a tmpfs of orca's own
//! (`/run/orca/<cluster>-<namespace>/secrets/<id>/`, never on disk), each
//! bind-mounted read-only at its target, owned by the replica's user with
//! its mode. And `devices`: host device nodes allowed by the node's
//! `[volumes] devices` patterns.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// One file of a replica, its content resolved by the server.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMount {
    pub target: String,
    pub content: String,
    pub mode: u32,
    /// A secret: kept on the tmpfs only.
    pub secret: bool,
}

impl std::fmt::Debug for FileMount {
    /// Never a secret's content in a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileMount")
            .field("target", &self.target)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("secret", &self.secret)
            .finish()
    }
}

/// The label of a replica with secret files: they live on a tmpfs, so a
/// host reboot takes them, and such a replica cannot start again in place.
pub const SECRET_FILES_LABEL: &str = "orca.secret-files";

/// tmpfs' magic number (statfs).
const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Where a node keeps replicas' files.
#[derive(Debug, Clone, Default)]
pub struct Files {
    disk: PathBuf,
    secrets: PathBuf,
}

fn err(op: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{op} {}: {e}", path.display())
}

impl Files {
    pub fn new(data_dir: &Path, run_dir: &Path) -> Self {
        Self {
            disk: data_dir.join("files"),
            secrets: run_dir.join("secrets"),
        }
    }

    /// Mounts the secrets' tmpfs unless one is there.
    fn secrets_tmpfs(&self) -> Result<(), String> {
        std::fs::create_dir_all(&self.secrets).map_err(|e| err("create", &self.secrets, e))?;
        let st =
            nix::sys::statfs::statfs(&self.secrets).map_err(|e| err("statfs", &self.secrets, e))?;
        if st.filesystem_type().0 as i64 == TMPFS_MAGIC {
            return Ok(());
        }
        nix::mount::mount(
            Some("tmpfs"),
            &self.secrets,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOEXEC,
            Some("mode=0700,size=64m"),
        )
        .map_err(|e| err("mount a tmpfs on", &self.secrets, e))
    }

    fn dirs(&self, id: &str) -> (PathBuf, PathBuf) {
        (self.disk.join(id), self.secrets.join(id))
    }

    /// Where the replica's files will be, as read-only bind mounts (the
    /// files themselves are written by [`Files::write`] before the start).
    pub fn binds(&self, id: &str, files: &[FileMount]) -> Vec<cri::BindMount> {
        let (disk, secrets) = self.dirs(id);
        files
            .iter()
            .enumerate()
            .map(|(n, f)| cri::BindMount {
                source: if f.secret { &secrets } else { &disk }.join(n.to_string()),
                destination: f.target.clone(),
                read_only: true,
            })
            .collect()
    }

    /// Writes the replica's files, owned by `owner` with their modes.
    pub fn write(&self, id: &str, files: &[FileMount], owner: (u32, u32)) -> Result<(), String> {
        if files.iter().any(|f| f.secret) {
            self.secrets_tmpfs()?;
        }
        for (f, bind) in files.iter().zip(self.binds(id, files)) {
            let path = bind.source;
            let dir = path.parent().unwrap_or(Path::new("/"));
            std::fs::create_dir_all(dir).map_err(|e| err("create", dir, e))?;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err("chmod", dir, e))?;
            let _ = std::fs::remove_file(&path);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| err("create", &path, e))?;
            file.write_all(f.content.as_bytes())
                .map_err(|e| err("write", &path, e))?;
            std::os::unix::fs::fchown(&file, Some(owner.0), Some(owner.1))
                .map_err(|e| err("chown", &path, e))?;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o7777))
                .map_err(|e| err("chmod", &path, e))?;
        }
        Ok(())
    }

    /// True while replica `id`'s secret files are there (a host reboot
    /// empties the tmpfs they live on).
    pub fn secrets_present(&self, id: &str) -> bool {
        self.dirs(id).1.is_dir()
    }

    /// Removes what a replica's files left (none: nothing to do).
    pub fn release(&self, id: &str) {
        let (disk, secrets) = self.dirs(id);
        for dir in [disk, secrets] {
            if let Err(e) = std::fs::remove_dir_all(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(dir = %dir.display(), error = %e, "removing a replica's files");
                }
            }
        }
    }

    /// The ids that have files here.
    pub fn ids(&self) -> Vec<String> {
        let mut out = Vec::new();
        for dir in [&self.disk, &self.secrets] {
            if let Ok(entries) = std::fs::read_dir(dir) {
                out.extend(
                    entries
                        .flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned()),
                );
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// One `devices` entry: the host's node and where the replica sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceSpec {
    pub host: String,
    pub container: String,
}

/// Whether `path` matches a `[volumes] devices` pattern (`*` any run of
/// characters but `/`, `?` one such character).
pub fn glob_match(pattern: &str, path: &str) -> bool {
    fn go(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], s) || (!s.is_empty() && s[0] != b'/' && go(p, &s[1..])),
            (Some(b'?'), Some(c)) if *c != b'/' => go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &s[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), path.as_bytes())
}

/// The node for `d`, if `allowed` lets it through and it is a device:
/// its kind, numbers, mode and owner on the host.
pub fn device_node(d: &DeviceSpec, allowed: &[String]) -> Result<cri::DeviceNode, String> {
    if !allowed.iter().any(|p| glob_match(p, &d.host)) {
        return Err(format!(
            "device {} is not allowed by this node's [volumes] devices ({})",
            d.host,
            allowed.join(", ")
        ));
    }
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::metadata(&d.host).map_err(|e| format!("device {}: {e}", d.host))?;
    let kind = if m.file_type().is_char_device() {
        'c'
    } else if m.file_type().is_block_device() {
        'b'
    } else {
        return Err(format!("{} is not a device node", d.host));
    };
    let rdev = m.rdev();
    Ok(cri::DeviceNode {
        path: d.container.clone(),
        kind,
        major: nix::sys::stat::major(rdev) as i64,
        minor: nix::sys::stat::minor(rdev) as i64,
        mode: m.mode() & 0o777,
        uid: m.uid(),
        gid: m.gid(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_patterns_match_one_level() {
        assert!(glob_match("/dev/ttyUSB*", "/dev/ttyUSB0"));
        assert!(glob_match("/dev/tty???0", "/dev/ttyUSB0"));
        assert!(glob_match("/dev/video0", "/dev/video0"));
        assert!(!glob_match("/dev/ttyUSB*", "/dev/ttyACM0"));
        assert!(!glob_match("/dev/*", "/dev/bus/usb/001"));
        assert!(!glob_match("/dev/video0", "/dev/video01"));
    }

    #[test]
    fn only_allowed_device_nodes_pass() {
        let d = |host: &str| DeviceSpec {
            host: host.into(),
            container: host.into(),
        };
        let node = device_node(&d("/dev/null"), &["/dev/null".into()]).unwrap();
        assert_eq!((node.kind, node.major, node.minor), ('c', 1, 3));
        assert!(device_node(&d("/dev/null"), &[])
            .unwrap_err()
            .contains("[volumes] devices"));
        // A regular file is no device, even when allowed.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "x").unwrap();
        let f = f.display().to_string();
        assert!(device_node(&d(&f), std::slice::from_ref(&f))
            .unwrap_err()
            .contains("not a device"));
    }

    #[test]
    fn files_are_written_with_mode_and_owner_and_released() {
        use std::os::unix::fs::MetadataExt;
        let data = tempfile::tempdir().unwrap();
        // A tmpfs of its own is mounted only for secrets; plain files here.
        let files = Files::new(data.path(), data.path());
        let list = [FileMount {
            target: "/etc/app.conf".into(),
            content: "a=1\n".into(),
            mode: 0o640,
            secret: false,
        }];
        let binds = files.binds("web.0.abc", &list);
        files.write("web.0.abc", &list, (1234, 1234)).unwrap();
        let m = std::fs::metadata(&binds[0].source).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (1234, 1234, 0o640));
        assert_eq!(std::fs::read_to_string(&binds[0].source).unwrap(), "a=1\n");
        assert!(binds[0].read_only);
        assert_eq!(files.ids(), ["web.0.abc"]);
        files.release("web.0.abc");
        assert!(files.ids().is_empty());
        assert!(!format!("{:?}", list[0]).contains("a=1"));
    }
}
