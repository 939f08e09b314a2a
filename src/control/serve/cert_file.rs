//! A service's `tls.cert` and `tls.key` files: only regular files under
//! `[proxy] cert_dir` are read, opened without following a symlink out of
//! it (`openat2` with `RESOLVE_BENEATH`, and `O_NOFOLLOW` on the file
//! itself), never blocking on a FIFO, and at most [`MAX_FILE`] bytes. A
//! spec may not make the server read `/etc/shadow` or `/dev/zero`.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{Mode, SFlag};

/// The default `[proxy] cert_dir`.
pub const DEFAULT_CERT_DIR: &str = "/etc/orca/certs";
/// Largest certificate or key file read.
pub const MAX_FILE: u64 = 1024 * 1024;

/// `path` as a path beneath `cert_dir` (lexically: absolute, under it,
/// no `..`), or why not.
pub(crate) fn beneath(cert_dir: &Path, field: &str, path: &str) -> Result<PathBuf, String> {
    let refuse = || {
        format!(
            "tls.{field} {path:?} must be a file under [proxy] cert_dir {}",
            cert_dir.display()
        )
    };
    let p = Path::new(path);
    if !p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse());
    }
    let rel = p.strip_prefix(cert_dir).map_err(|_| refuse())?;
    if rel.as_os_str().is_empty() {
        return Err(refuse());
    }
    Ok(rel.to_path_buf())
}

/// Opens `rel` beneath `cert_dir` for reading, never out of it and never
/// through a symlink at the end; a FIFO does not block the open.
fn open(cert_dir: &Path, rel: &Path) -> nix::Result<std::fs::File> {
    let dir = nix::fcntl::open(
        cert_dir,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
        )
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = nix::fcntl::openat2(dir.as_fd(), rel, how)?;
    Ok(std::fs::File::from(fd))
}

/// Whether what `path` names (if anything) may be a certificate file:
/// beneath `cert_dir`, and a regular file when it exists. A missing file
/// is no error here (the service is served over HTTP until it appears).
pub(crate) fn check(cert_dir: &Path, field: &str, path: &str) -> Result<(), String> {
    let rel = beneath(cert_dir, field, path)?;
    match open(cert_dir, &rel) {
        Ok(file) => regular(&file, field, path),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(refusal(field, path, e)),
    }
}

fn refusal(field: &str, path: &str, e: nix::errno::Errno) -> String {
    match e {
        nix::errno::Errno::ELOOP => {
            format!("tls.{field} {path}: a symlink, not a regular file")
        }
        nix::errno::Errno::EXDEV => {
            format!("tls.{field} {path}: resolves outside [proxy] cert_dir")
        }
        e => format!("tls.{field} {path}: {}", std::io::Error::from(e)),
    }
}

fn regular(file: &std::fs::File, field: &str, path: &str) -> Result<(), String> {
    let st = nix::sys::stat::fstat(file.as_fd())
        .map_err(|e| format!("tls.{field} {path}: {}", std::io::Error::from(e)))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
        return Err(format!("tls.{field} {path}: not a regular file"));
    }
    Ok(())
}

/// Reads the certificate or key file `path` (blocking: call it off the
/// async runtime).
pub(crate) fn read(cert_dir: &Path, field: &str, path: &str) -> Result<String, String> {
    let rel = beneath(cert_dir, field, path)?;
    let file = open(cert_dir, &rel).map_err(|e| refusal(field, path, e))?;
    regular(&file, field, path)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("tls.{field} {path}: {e}"))?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!(
            "tls.{field} {path}: more than {MAX_FILE} bytes, more than a certificate file holds"
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("tls.{field} {path}: not PEM text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_beneath_the_directory_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let certs = dir.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let at = |name: &str| certs.join(name).display().to_string();
        std::fs::write(certs.join("ok.pem"), "PEM").unwrap();
        // Positive control: a regular file under it.
        assert_eq!(read(&certs, "cert", &at("ok.pem")).unwrap(), "PEM");
        check(&certs, "cert", &at("ok.pem")).unwrap();
        check(&certs, "cert", &at("later.pem")).unwrap();

        for outside in ["/etc/shadow", "/dev/zero", "relative.pem"] {
            let e = read(&certs, "cert", outside).unwrap_err();
            assert!(e.contains("cert_dir"), "{e}");
            assert!(check(&certs, "cert", outside).is_err());
        }
        let climb = format!("{}/../x.pem", certs.display());
        assert!(check(&certs, "key", &climb)
            .unwrap_err()
            .contains("cert_dir"));

        std::os::unix::fs::symlink("/etc/shadow", certs.join("link.pem")).unwrap();
        let e = read(&certs, "cert", &at("link.pem")).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        assert!(check(&certs, "cert", &at("link.pem")).is_err());
        std::os::unix::fs::symlink("/etc", certs.join("etc")).unwrap();
        let e = read(&certs, "cert", &at("etc/shadow")).unwrap_err();
        assert!(e.contains("outside"), "{e}");

        nix::unistd::mkfifo(&certs.join("fifo.pem"), Mode::from_bits_truncate(0o600)).unwrap();
        let e = read(&certs, "cert", &at("fifo.pem")).unwrap_err();
        assert!(e.contains("not a regular file"), "{e}");

        let big = std::fs::File::create(certs.join("big.pem")).unwrap();
        big.set_len(MAX_FILE + 10).unwrap();
        let e = read(&certs, "cert", &at("big.pem")).unwrap_err();
        assert!(e.contains("more than"), "{e}");
    }
}
