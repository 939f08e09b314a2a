//! A volume as a tar archive, both ways, with GNU tar (`--numeric-owner`,
//! `--xattrs`, `--acls`, `--sparse`: owners, modes, links, hard links,
//! sparse files and extended attributes survive): the stream of one
//! ([`export`]), and the check of one received before anything of it is
//! unpacked ([`check`]): no member outside the volume, no link leaving
//! it, no member reached through a link.

use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// Bytes per piece of a stream.
pub const PIECE: usize = 1 << 20;

/// One piece of a volume's archive as it streams.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    Data(#[serde(with = "b64")] bytes::Bytes),
    /// The end: the SHA-256 (hex) of every byte sent, or why it broke off.
    End(Result<String, String>),
}

mod b64 {
    use base64::Engine;
    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bytes::Bytes, D::Error> {
        let s: String = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map(bytes::Bytes::from)
            .map_err(serde::de::Error::custom)
    }
}

/// Widens the pipe behind `fd` to a piece (from the default 64 KiB), so
/// that tar, gzip and orca hand each other megabytes per wakeup rather
/// than kilobytes. Best effort: a narrow pipe is only slower.
pub fn widen_pipe(fd: &impl std::os::fd::AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIECE as i32));
}

/// GNU tar's options that keep everything a volume may hold.
const KEEP: [&str; 5] = [
    "--numeric-owner",
    "--xattrs",
    "--xattrs-include=*",
    "--acls",
    "--sparse",
];

/// `tar` creating an archive of `dir`'s content (to stdout without `file`).
pub fn tar_create(dir: &Path, file: Option<&Path>, gzip: bool) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("tar");
    c.arg("--create").args(KEEP);
    if gzip {
        c.arg("--gzip");
    }
    match file {
        Some(f) => c.arg("--file").arg(f),
        None => c.arg("--file=-"),
    };
    c.arg("--directory").arg(dir).arg(".");
    c.stdin(Stdio::null()).stderr(Stdio::piped());
    c
}

/// `tar` unpacking a plain tar stream from its stdin into `dir`, as it
/// was (owners and modes kept).
pub fn tar_extract(dir: &Path) -> tokio::process::Command {
    let mut c = tokio::process::Command::new("tar");
    c.arg("--extract")
        .args(KEEP)
        .args([
            "--same-owner",
            "--preserve-permissions",
            "--no-overwrite-dir",
        ])
        .args(["--file=-", "--directory"])
        .arg(dir);
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

/// A blocking reader over pieces sent from async code (the checker reads
/// the stream while tar unpacks it).
pub struct ChannelReader {
    rx: mpsc::Receiver<bytes::Bytes>,
    piece: bytes::Bytes,
    /// Bytes read or skipped so far.
    pos: u64,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<bytes::Bytes>) -> Self {
        Self {
            rx,
            piece: bytes::Bytes::new(),
            pos: 0,
        }
    }

    /// The current piece, the next one once it is used up; false at the end.
    fn fill(&mut self) -> bool {
        while self.piece.is_empty() {
            match self.rx.blocking_recv() {
                Some(p) => self.piece = p,
                None => return false,
            }
        }
        true
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.fill() {
            return Ok(0);
        }
        let n = buf.len().min(self.piece.len());
        buf[..n].copy_from_slice(&self.piece.split_to(n));
        self.pos += n as u64;
        Ok(n)
    }
}

/// Forward only: the checker skips members' contents without copying them.
impl std::io::Seek for ChannelReader {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let mut skip = match to {
            std::io::SeekFrom::Current(n) if n >= 0 => n as u64,
            std::io::SeekFrom::Start(n) if n >= self.pos => n - self.pos,
            _ => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::Unsupported,
                    "the stream only seeks forward",
                ))
            }
        };
        while skip > 0 {
            if !self.fill() {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let n = (skip as usize).min(self.piece.len());
            bytes::Buf::advance(&mut self.piece, n);
            self.pos += n as u64;
            skip -= n as u64;
        }
        Ok(self.pos)
    }
}

/// Streams what `child` (a `tar` or `gzip` writing to stdout) writes, in
/// pieces, ending with its digest or its failure; then runs `after`.
pub fn stream(
    mut child: tokio::process::Child,
    after: impl FnOnce() + Send + 'static,
) -> mpsc::Receiver<Piece> {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        let mut hash = Sha256::new();
        let mut out = child.stdout.take();
        if let Some(o) = &out {
            widen_pipe(o);
        }
        let mut failed = None;
        if let Some(out) = out.as_mut() {
            loop {
                let mut buf = bytes::BytesMut::with_capacity(PIECE);
                // Whole pieces but the last.
                while buf.len() < PIECE {
                    match out.read_buf(&mut buf).await {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e) => {
                            failed = Some(e.to_string());
                            break;
                        }
                    }
                }
                let filled = buf.len();
                if filled == 0 {
                    break;
                }
                hash.update(&buf);
                if tx.send(Piece::Data(buf.freeze())).await.is_err() {
                    let _ = child.kill().await;
                    after();
                    return;
                }
                if failed.is_some() || filled < PIECE {
                    break;
                }
            }
        }
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut stderr).await;
        }
        let end = match (failed, child.wait().await) {
            (Some(e), _) => Err(e),
            (None, Ok(s)) if s.success() => Ok(hex::encode(hash.finalize())),
            (None, Ok(s)) => Err(format!("tar failed ({s}): {}", stderr.trim())),
            (None, Err(e)) => Err(e.to_string()),
        };
        after();
        let _ = tx.send(Piece::End(end)).await;
    });
    rx
}

/// Whether `p` (a member's path, or a link's target joined to its
/// directory) stays inside the archive's root, lexically.
fn inside(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Checks an archive before anything of it is unpacked: every member's
/// path is relative and stays inside (no `..` climbing out, no absolute
/// path); a hard link names a member inside; a symbolic link's target,
/// from its own directory, stays inside; and no member lies beneath a
/// symbolic link of the archive. How many members it has, or why it is
/// refused.
/// (A plain archive goes through a [`ChannelReader`] in odd-sized pieces,
/// as a received one does.)
#[cfg(test)]
pub fn check(file: &Path, gzip: bool) -> Result<u64, String> {
    let f = std::fs::File::open(file).map_err(|e| format!("open {}: {e}", file.display()))?;
    if gzip {
        return check_stream(flate2::read::GzDecoder::new(f));
    }
    let all = bytes::Bytes::from(std::fs::read(file).map_err(|e| e.to_string())?);
    let pieces: Vec<bytes::Bytes> = all.chunks(777).map(|c| all.slice_ref(c)).collect();
    let (tx, rx) = mpsc::channel(pieces.len() + 1);
    for p in pieces {
        tx.try_send(p).map_err(|e| e.to_string())?;
    }
    drop(tx);
    check_seekable(ChannelReader::new(rx))
}

/// [`check`] of a plain (uncompressed) tar stream as it is read.
#[cfg(test)]
pub fn check_stream(reader: impl Read) -> Result<u64, String> {
    let mut archive = tar::Archive::new(reader);
    check_entries(
        archive
            .entries()
            .map_err(|e| format!("not a tar archive: {e}"))?,
    )
}

/// [`check_stream`] of a stream that can skip forward: members' contents
/// are passed over, not read.
pub fn check_seekable(reader: impl Read + std::io::Seek) -> Result<u64, String> {
    let mut archive = tar::Archive::new(reader);
    check_entries(
        archive
            .entries_with_seek()
            .map_err(|e| format!("not a tar archive: {e}"))?,
    )
}

fn check_entries<R: Read>(entries: tar::Entries<'_, R>) -> Result<u64, String> {
    let mut links: Vec<PathBuf> = Vec::new();
    let mut count = 0;
    for entry in entries {
        let entry = entry.map_err(|e| format!("the archive is damaged: {e}"))?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let path = Path::new(&name);
        if path.is_absolute() {
            return Err(format!("member {name:?} is an absolute path"));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(format!("member {name:?} climbs with '..'"));
        }
        let Some(clean) = inside(path) else {
            return Err(format!("member {name:?} leaves the volume"));
        };
        if let Some(l) = links.iter().find(|l| clean.starts_with(l) && clean != **l) {
            return Err(format!(
                "member {name:?} lies beneath the link {}",
                l.display()
            ));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| format!("member {name:?}: {e}"))?
                .ok_or_else(|| format!("link {name:?} has no target"))?;
            let resolved = if kind.is_hard_link() {
                inside(&target).filter(|_| !target.is_absolute())
            } else if target.is_absolute() {
                None
            } else {
                inside(&clean.parent().unwrap_or(Path::new("")).join(&target))
            };
            if resolved.is_none() {
                return Err(format!(
                    "link {name:?} -> {} leaves the volume",
                    target.display()
                ));
            }
            if kind.is_symlink() {
                links.push(clean);
            }
        }
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> tempfile::NamedTempFile {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, &bytes).unwrap();
        f
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h
    }

    fn file(b: &mut tar::Builder<Vec<u8>>, name: &str) {
        let mut h = header(tar::EntryType::Regular, 1);
        // Written raw: the builder itself refuses some hostile names.
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
    }

    fn link(b: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, name: &str, target: &str) {
        let mut h = header(kind, 0);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        b.append(&h, std::io::empty()).unwrap();
    }

    #[test]
    fn hostile_archives_are_refused_and_plain_ones_pass() {
        use tar::EntryType::{Link, Symlink};
        let refused = [
            archive(|b| file(b, "../escape")),
            archive(|b| file(b, "/etc/evil")),
            archive(|b| file(b, "a/../../escape")),
            archive(|b| link(b, Symlink, "up", "../../etc")),
            archive(|b| link(b, Symlink, "abs", "/etc")),
            archive(|b| link(b, Link, "hard", "/etc/shadow")),
            archive(|b| link(b, Link, "hard", "../outside")),
            archive(|b| {
                link(b, Symlink, "d", "sub");
                file(b, "d/through-the-link");
            }),
        ];
        for (n, a) in refused.iter().enumerate() {
            assert!(check(a.path(), false).is_err(), "archive {n} passed");
        }
        // The control: files, a directory's link inside, a hard link to a
        // member, a link to a sibling.
        let fine = archive(|b| {
            file(b, "./a");
            file(b, "sub/b");
            link(b, Symlink, "sub/to-a", "../a");
            link(b, Link, "hard-a", "a");
            link(b, Symlink, "same", "a");
        });
        assert_eq!(check(fine.path(), false).unwrap(), 5);
        assert!(check(fine.path(), true).is_err(), "not gzip");
    }
}
