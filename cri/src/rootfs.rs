//! Reading one file of an image's root filesystem from its snapshot's
//! layer directories, without mounting anything and without ever leaving
//! them: the overlay's merged view resolved by hand, each layer's part
//! opened beneath its directory with no link followed (`openat2`,
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`). Symbolic links are
//! followed inside the image's root (an absolute target starts at the
//! image's `/`, `..` stops there), whiteouts and opaque directories hide
//! what lies below them, and only a regular file of bounded size is read,
//! opened without following a link. An image cannot make orca read a host
//! file, a device or a FIFO, nor hold it with an endless file.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{readlinkat, AtFlags, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use xattr::FileExt;

use crate::error::{CriError, Result};

/// The largest file read (account files are a few KiB).
pub const MAX_FILE: u64 = 1 << 20;
/// Links followed in one lookup before giving up, as the kernel's limit.
const MAX_LINKS: usize = 40;
/// overlayfs marks a directory that hides everything below it so.
const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// The layer directories of a snapshot's mounts, top first: the upper
/// directory, then the lower ones from the top, as overlayfs stacks them.
pub fn layer_dirs(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "bind" => dirs.push(PathBuf::from(&m.source)),
            "overlay" => {
                for o in &m.options {
                    if let Some(u) = o.strip_prefix("upperdir=") {
                        dirs.insert(0, PathBuf::from(u));
                    }
                }
                for o in &m.options {
                    if let Some(l) = o.strip_prefix("lowerdir=") {
                        dirs.extend(l.split(':').map(PathBuf::from));
                    }
                }
            }
            _ => {}
        }
    }
    dirs
}

/// What one name is in the merged view.
enum Entry {
    Missing,
    Dir,
    Link(PathBuf),
    /// A regular file, opened (never through a link).
    File(std::fs::File),
    /// A device, FIFO or socket.
    Special,
}

fn hostile(path: &str, reason: impl Into<String>) -> CriError {
    CriError::InvalidConfig {
        field: "image",
        reason: format!("the image's {path} {}", reason.into()),
    }
}

/// Opens `rel` inside one layer directory without following any symbolic
/// link on the way or at the end and without leaving the directory: a
/// layer's `etc -> /etc` is a link like any other, never a way out.
fn open_in_layer(layer: &Path, rel: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let root = nix::fcntl::open(
        layer,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let how = OpenHow::new()
        .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    nix::fcntl::openat2(root.as_fd(), rel, how)
}

/// The topmost layer's entry for `rel` (its parents already resolved to
/// directories of the merged view). As overlayfs does, a whiteout, an
/// opaque directory, or a layer where a parent is not a directory (a
/// file, or a link such as `etc -> /etc` under a directory above) ends
/// the search downwards.
fn entry(layers: &[PathBuf], rel: &Path) -> std::io::Result<Entry> {
    let Some(name) = rel.file_name() else {
        return Ok(Entry::Dir);
    };
    let parent = rel.parent().unwrap_or(Path::new(""));
    for layer in layers {
        match open_in_layer(layer, parent, OFlag::O_PATH | OFlag::O_DIRECTORY) {
            Ok(dir) => match fstatat(dir.as_fd(), name, AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => {
                    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                    return Ok(if kind == SFlag::S_IFCHR && st.st_rdev == 0 {
                        // A whiteout: a character device 0:0.
                        Entry::Missing
                    } else if kind == SFlag::S_IFLNK {
                        Entry::Link(PathBuf::from(readlinkat(dir.as_fd(), name)?))
                    } else if kind == SFlag::S_IFDIR {
                        Entry::Dir
                    } else if kind == SFlag::S_IFREG {
                        let fd = open_in_layer(layer, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
                        Entry::File(std::fs::File::from(fd))
                    } else {
                        Entry::Special
                    });
                }
                Err(Errno::ENOENT) => {}
                Err(e) => return Err(e.into()),
            },
            Err(Errno::ENOENT) => {}
            // A parent here is no directory (a file, a whiteout of one, a
            // link): it hides the layers below.
            Err(Errno::ENOTDIR | Errno::ELOOP) => return Ok(Entry::Missing),
            Err(e) => return Err(e.into()),
        }
        // An opaque directory on the way down hides the layers below.
        let mut up = rel.parent();
        while let Some(dir) = up.filter(|d| !d.as_os_str().is_empty()) {
            match open_in_layer(layer, dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) {
                Ok(fd) => {
                    let file = std::fs::File::from(fd);
                    if file.get_xattr(OPAQUE_XATTR)?.as_deref() == Some(b"y") {
                        return Ok(Entry::Missing);
                    }
                }
                // Not in this layer: nothing here to hide the layers below.
                Err(Errno::ENOENT) => {}
                Err(Errno::ENOTDIR | Errno::ELOOP) => return Ok(Entry::Missing),
                Err(e) => return Err(e.into()),
            }
            up = dir.parent();
        }
    }
    Ok(Entry::Missing)
}

/// Reads `path` (absolute inside the image, like `/etc/passwd`) from the
/// merged view of `layers`: `None` when it does not exist, an error when
/// it is not a regular file, is larger than [`MAX_FILE`], or its links go
/// round. Blocking: call it off the async runtime.
pub fn read_file(layers: &[PathBuf], path: &str) -> Result<Option<String>> {
    let io = |e: std::io::Error| hostile(path, format!("cannot be read: {e}"));
    // Components still to resolve, and those resolved (always a directory).
    let mut todo: Vec<String> = components(path);
    todo.reverse();
    let mut done = PathBuf::new();
    let mut links = 0;
    while let Some(name) = todo.pop() {
        if name == ".." {
            done.pop();
            continue;
        }
        let here = done.join(&name);
        match entry(layers, &here).map_err(io)? {
            Entry::Missing => return Ok(None),
            Entry::Dir => done = here,
            Entry::Link(target) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(hostile(path, "has too many levels of symbolic links"));
                }
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done = PathBuf::new();
                }
                todo.extend(components(&target).into_iter().rev());
            }
            Entry::File(file) if todo.is_empty() => return read_capped(file, path).map(Some),
            // A file where a directory should be.
            Entry::File(_) => return Ok(None),
            Entry::Special if todo.is_empty() => {
                return Err(hostile(path, "is not a regular file"))
            }
            Entry::Special => return Ok(None),
        }
    }
    Err(hostile(path, "is a directory"))
}

/// The names of `path`, without empty ones and `.`.
fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

/// A regular file opened without following links, read up to the cap.
fn read_capped(f: std::fs::File, path: &str) -> Result<String> {
    let meta = f
        .metadata()
        .map_err(|e| hostile(path, format!("cannot be read: {e}")))?;
    if !meta.file_type().is_file() {
        return Err(hostile(path, "is not a regular file"));
    }
    if meta.len() > MAX_FILE {
        return Err(hostile(
            path,
            format!("is {} bytes, more than the {MAX_FILE} read", meta.len()),
        ));
    }
    let mut text = Vec::new();
    f.take(MAX_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| hostile(path, format!("cannot be read: {e}")))?;
    if text.len() as u64 > MAX_FILE {
        return Err(hostile(path, "grew past the size read"));
    }
    String::from_utf8(text).map_err(|_| hostile(path, "is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Layers {
        _dirs: Vec<tempfile::TempDir>,
        paths: Vec<PathBuf>,
    }

    /// `n` layer directories, top first, each with `etc/`.
    fn layers(n: usize) -> Layers {
        let dirs: Vec<tempfile::TempDir> = (0..n).map(|_| tempfile::tempdir().unwrap()).collect();
        for d in &dirs {
            std::fs::create_dir_all(d.path().join("etc")).unwrap();
        }
        let paths = dirs.iter().map(|d| d.path().to_path_buf()).collect();
        Layers { _dirs: dirs, paths }
    }

    #[test]
    fn the_top_layer_wins_and_whiteouts_hide() {
        let l = layers(3);
        std::fs::write(l.paths[1].join("etc/passwd"), "middle").unwrap();
        std::fs::write(l.paths[2].join("etc/passwd"), "bottom").unwrap();
        assert_eq!(
            read_file(&l.paths, "/etc/passwd").unwrap().as_deref(),
            Some("middle")
        );
        // A whiteout in the top layer (char 0:0) deletes it.
        nix::sys::stat::mknod(
            &l.paths[0].join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        assert_eq!(read_file(&l.paths, "/etc/passwd").unwrap(), None);
    }

    #[test]
    fn an_opaque_directory_hides_the_layers_below() {
        let l = layers(2);
        std::fs::write(l.paths[1].join("etc/group"), "below").unwrap();
        xattr::set(l.paths[0].join("etc"), OPAQUE_XATTR, b"y").unwrap();
        assert_eq!(read_file(&l.paths, "/etc/group").unwrap(), None);
    }

    #[test]
    fn links_resolve_inside_the_image_only() {
        let l = layers(2);
        std::fs::create_dir_all(l.paths[1].join("data")).unwrap();
        std::fs::write(l.paths[1].join("data/accounts"), "in the image").unwrap();
        // Absolute and climbing links land in the image's own root.
        symlink("/data/accounts", l.paths[0].join("etc/passwd")).unwrap();
        assert_eq!(
            read_file(&l.paths, "/etc/passwd").unwrap().as_deref(),
            Some("in the image")
        );
        symlink(
            "../../../../../../etc/hostname",
            l.paths[0].join("etc/group"),
        )
        .unwrap();
        assert_eq!(read_file(&l.paths, "/etc/group").unwrap(), None);
        // Loops end.
        symlink("/etc/b", l.paths[0].join("etc/a")).unwrap();
        symlink("/etc/a", l.paths[0].join("etc/b")).unwrap();
        let e = read_file(&l.paths, "/etc/a").unwrap_err().to_string();
        assert!(e.contains("too many levels"), "{e}");
    }

    #[test]
    fn a_lower_link_under_an_upper_directory_leads_nowhere() {
        // The hostile image: the lower layer has `etc -> /etc` (the host's,
        // if followed), the upper an empty `etc/`.
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        std::fs::create_dir(top.path().join("etc")).unwrap();
        symlink("/etc", bottom.path().join("etc")).unwrap();
        let paths = vec![top.path().to_path_buf(), bottom.path().to_path_buf()];
        assert!(std::path::Path::new("/etc/passwd").exists());
        assert_eq!(read_file(&paths, "/etc/passwd").unwrap(), None);
        // Alone, the link resolves inside the image, to itself: a loop,
        // never the host's file.
        let lower_only = vec![bottom.path().to_path_buf()];
        let e = read_file(&lower_only, "/etc/passwd")
            .unwrap_err()
            .to_string();
        assert!(e.contains("too many levels"), "{e}");
        // Positive control: the same layers with the file in the upper
        // directory read it.
        std::fs::write(
            top.path().join("etc/passwd"),
            "app:x:1000:1000::/:/bin/sh\n",
        )
        .unwrap();
        assert_eq!(
            read_file(&paths, "/etc/passwd").unwrap().as_deref(),
            Some("app:x:1000:1000::/:/bin/sh\n")
        );
        // A link deeper down, inside a directory of a layer, is refused
        // as a way in too.
        let mid = tempfile::tempdir().unwrap();
        std::fs::create_dir(mid.path().join("data")).unwrap();
        symlink("/etc", mid.path().join("data/etc")).unwrap();
        let l = vec![mid.path().to_path_buf()];
        assert_eq!(read_file(&l, "/data/etc/passwd").unwrap(), None);
    }

    #[test]
    fn only_bounded_regular_files_are_read() {
        let l = layers(1);
        nix::unistd::mkfifo(
            &l.paths[0].join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let e = read_file(&l.paths, "/etc/passwd").unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = vec![b'x'; (MAX_FILE + 1) as usize];
        std::fs::write(l.paths[0].join("etc/group"), big).unwrap();
        let e = read_file(&l.paths, "/etc/group").unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }
}
