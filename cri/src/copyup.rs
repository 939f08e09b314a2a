//! The copy-up of a new volume: what a container's image holds at a path,
//! copied into the volume's empty directory with its owners, modes,
//! links and extended attributes, as Docker fills a new named volume.
//!
//! The image's layers are mounted read-only (an overlay of the lower
//! directories of the container's snapshot) on a private directory; the
//! path is resolved inside that root (`RESOLVE_IN_ROOT`, so an image's
//! `/data -> /etc` link leads to the image's `/etc`, never the host's),
//! and every entry below it is opened relative to its directory without
//! following a link. An image cannot make orca copy a host file.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use containerd_client::services::v1::snapshots::MountsRequest;
use nix::errno::Errno;
use nix::fcntl::{openat, readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{fstatat, Mode, SFlag};

use crate::client::{Cri, SNAPSHOTTER};
use crate::error::{CriError, Result};

/// What a copy-up found at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopiedUp {
    /// The image had a directory there; this many entries were copied.
    Copied(u64),
    /// Nothing (or no directory) there: the volume root was given to the
    /// replica's user.
    Nothing,
}

fn io(op: &'static str, path: &Path, e: impl Into<std::io::Error>) -> CriError {
    CriError::Io {
        op,
        path: path.to_path_buf(),
        source: e.into(),
    }
}

impl Cri {
    /// Copies what container `id`'s image holds at `path` into `dest` (a
    /// new, empty directory). When the image has no directory there,
    /// `dest` is given to `owner` (the replica's uid and gid) instead.
    /// Blocking work runs off the async runtime.
    pub async fn copy_up(
        &self,
        id: &str,
        path: &str,
        dest: &Path,
        owner: (u32, u32),
    ) -> Result<CopiedUp> {
        let mounts = self
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Snapshots.Mounts", id, s))?
            .into_inner()
            .mounts;
        let layers = lower_layers(&mounts);
        let (path, dest, id) = (path.to_string(), dest.to_path_buf(), id.to_string());
        tokio::task::spawn_blocking(move || copy_from_layers(&id, &layers, &path, &dest, owner))
            .await
            .map_err(|e| CriError::InvalidConfig {
                field: "copy-up",
                reason: e.to_string(),
            })?
    }
}

impl Cri {
    /// The uid and gid container `id`'s process runs as, from its spec.
    pub async fn process_user(&self, id: &str) -> Result<(u32, u32)> {
        let c = self.container_record(id).await?;
        let spec: oci_spec::runtime::Spec = c
            .spec
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|e| CriError::InvalidConfig {
                field: "runtime spec",
                reason: e.to_string(),
            })?
            .unwrap_or_default();
        Ok(spec
            .process()
            .as_ref()
            .map(|p| (p.user().uid(), p.user().gid()))
            .unwrap_or((0, 0)))
    }
}

/// The image's read-only layers of a snapshot's mounts, top first (the
/// container's own upper directory left out: it is empty before start).
fn lower_layers(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "overlay" => {
                for o in &m.options {
                    if let Some(l) = o.strip_prefix("lowerdir=") {
                        out.extend(l.split(':').map(PathBuf::from));
                    }
                }
            }
            // A single-layer image's active snapshot is that layer's copy.
            "bind" => out.push(PathBuf::from(&m.source)),
            _ => {}
        }
    }
    out
}

/// A read-only view of `layers` on a private directory, unmounted on drop.
struct View {
    dir: PathBuf,
    mounted: bool,
}

impl View {
    fn new(id: &str, layers: &[PathBuf]) -> Result<(View, PathBuf)> {
        if let [only] = layers {
            let view = View {
                dir: PathBuf::new(),
                mounted: false,
            };
            return Ok((view, only.clone()));
        }
        let dir = std::env::temp_dir().join(format!("orca-copyup-{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
        let lower = layers
            .iter()
            .map(|l| l.display().to_string())
            .collect::<Vec<_>>()
            .join(":");
        let opts = format!("lowerdir={lower}");
        mount(
            Some("overlay"),
            &dir,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
        .map_err(|e| io("mount the image's layers on", &dir, e))?;
        let view = View {
            dir: dir.clone(),
            mounted: true,
        };
        Ok((view, dir))
    }
}

impl Drop for View {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = umount2(&self.dir, MntFlags::MNT_DETACH) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "unmounting a copy-up view");
            }
            let _ = std::fs::remove_dir(&self.dir);
        }
    }
}

fn copy_from_layers(
    id: &str,
    layers: &[PathBuf],
    path: &str,
    dest: &Path,
    owner: (u32, u32),
) -> Result<CopiedUp> {
    let give_to_owner = || {
        std::os::unix::fs::chown(dest, Some(owner.0), Some(owner.1))
            .map_err(|e| io("chown", dest, e))
            .map(|()| CopiedUp::Nothing)
    };
    if layers.is_empty() {
        return give_to_owner();
    }
    let (_view, root) = View::new(id, layers)?;
    let root_fd = nix::fcntl::open(
        &root,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io("open", &root, e))?;
    let how = OpenHow::new()
        .flags(OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT);
    let rel = path.trim_start_matches('/');
    let src =
        match nix::fcntl::openat2(root_fd.as_fd(), if rel.is_empty() { "." } else { rel }, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return give_to_owner(),
            Err(e) => return Err(io("open in the image", Path::new(path), e)),
        };
    let mut copied = 0;
    copy_dir(&src, dest, &mut copied)?;
    let st = nix::sys::stat::fstat(src.as_fd()).map_err(|e| io("stat", Path::new(path), e))?;
    set_meta(dest, st.st_uid, st.st_gid, st.st_mode, false)?;
    copy_xattrs_fd(&src, dest);
    Ok(CopiedUp::Copied(copied))
}

fn set_meta(path: &Path, uid: u32, gid: u32, mode: u32, link: bool) -> Result<()> {
    if link {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid)).map_err(|e| io("chown", path, e))?;
        return Ok(());
    }
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| io("chown", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(|e| io("chmod", path, e))
}

/// Extended attributes of an open source onto `dest`, best effort
/// (a filesystem without them keeps the data).
fn copy_xattrs_fd(src: &OwnedFd, dest: &Path) {
    use xattr::FileExt;
    let Ok(dup) = src.try_clone() else { return };
    let file = File::from(dup);
    if let Ok(names) = file.list_xattr() {
        for name in names {
            if name.as_bytes().starts_with(b"trusted.overlay.") {
                continue;
            }
            if let Ok(Some(v)) = file.get_xattr(&name) {
                let _ = xattr::set(dest, &name, &v);
            }
        }
    }
}

/// Copies the entries of directory `src` into `dest`, depth first.
fn copy_dir(src: &OwnedFd, dest: &Path, copied: &mut u64) -> Result<()> {
    let dup = src.try_clone().map_err(|e| io("dup", dest, e))?;
    let mut dir = nix::dir::Dir::from_fd(dup).map_err(|e| io("read dir", dest, e))?;
    let names: Vec<Vec<u8>> = dir
        .iter()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_bytes().to_vec())
        .filter(|n| n != b"." && n != b"..")
        .collect();
    for raw in &names {
        let name = OsStr::from_bytes(raw);
        let to = dest.join(name);
        let st = fstatat(src.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| io("stat", &to, e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        *copied += 1;
        if kind == SFlag::S_IFDIR {
            let fd = openat(
                src.as_fd(),
                name,
                OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io("open", &to, e))?;
            match std::fs::create_dir(&to) {
                Ok(()) => {}
                // Left by a copy cut short: completed now.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && to.is_dir() => {}
                Err(e) => return Err(io("create", &to, e)),
            }
            copy_dir(&fd, &to, copied)?;
            set_meta(&to, st.st_uid, st.st_gid, st.st_mode, false)?;
            copy_xattrs_fd(&fd, &to);
        } else if kind == SFlag::S_IFREG {
            let fd = openat(
                src.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| io("open", &to, e))?;
            let mut from = File::from(fd.try_clone().map_err(|e| io("dup", &to, e))?);
            let mut into = match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&to)
            {
                Ok(f) => f,
                // Copied by a copy cut short (or written since): kept.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("create", &to, e)),
            };
            std::io::copy(&mut from, &mut into).map_err(|e| io("copy", &to, e))?;
            set_meta(&to, st.st_uid, st.st_gid, st.st_mode, false)?;
            copy_xattrs_fd(&fd, &to);
        } else if kind == SFlag::S_IFLNK {
            let target = readlinkat(src.as_fd(), name).map_err(|e| io("readlink", &to, e))?;
            match symlink(&target, &to) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io("symlink", &to, e)),
            }
            set_meta(&to, st.st_uid, st.st_gid, st.st_mode, true)?;
        } else {
            // A device, FIFO or socket in an image's data directory: left
            // out (a replica makes its own).
            *copied -= 1;
        }
    }
    Ok(())
}
