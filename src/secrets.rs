//! Secrets, encrypted at rest with ChaCha20-Poly1305 under a key file that
//! is created in `data_dir` (mode 0600) on first start. Values are only
//! ever decrypted to go into a container's environment; status, versions,
//! errors and orca's own logs show the `${secrets.KEY}` references only.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Failures around secrets (never carrying a value).
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret key file {path}: {reason}")]
    KeyFile { path: String, reason: String },
    #[error("secret {0:?} cannot be decrypted (wrong key file or damaged store)")]
    Decrypt(String),
}

/// The cipher of one data dir.
pub struct SecretBox {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox")
    }
}

impl SecretBox {
    /// Loads `path`, creating a fresh random key (mode 0600) if it is missing.
    pub fn open(path: &Path) -> Result<Self, SecretError> {
        let err = |reason: String| SecretError::KeyFile {
            path: path.display().to_string(),
            reason,
        };
        let key: Zeroizing<Vec<u8>> = match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "is readable by others than its owner (mode {mode:o}); chmod 600 it"
                    )));
                }
                Zeroizing::new(std::fs::read(path).map_err(|e| err(e.to_string()))?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: Zeroizing<[u8; 32]> = Zeroizing::new(rand::random());
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| err(e.to_string()))?;
                f.write_all(key.as_slice())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| err(e.to_string()))?;
                Zeroizing::new(key.to_vec())
            }
            Err(e) => return Err(err(e.to_string())),
        };
        if key.len() != 32 {
            return Err(err(format!("holds {} bytes, not 32", key.len())));
        }
        Ok(Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        })
    }

    /// `nonce || ciphertext`, the secret's name bound in as associated data.
    pub fn seal(&self, name: &str, value: &str) -> Vec<u8> {
        let nonce: [u8; 12] = rand::random();
        let payload = chacha20poly1305::aead::Payload {
            msg: value.as_bytes(),
            aad: name.as_bytes(),
        };
        // Encryption into a Vec cannot fail for messages of this size.
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    /// The value sealed by [`SecretBox::seal`] for `name`, wiped from
    /// memory when dropped.
    pub fn open_value(&self, name: &str, sealed: &[u8]) -> Result<Zeroizing<String>, SecretError> {
        if sealed.len() < 12 {
            return Err(SecretError::Decrypt(name.to_string()));
        }
        let (nonce, body) = sealed.split_at(12);
        let payload = chacha20poly1305::aead::Payload {
            msg: body,
            aad: name.as_bytes(),
        };
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), payload)
            .map_err(|_| SecretError::Decrypt(name.to_string()))?;
        match String::from_utf8(plain) {
            Ok(text) => Ok(Zeroizing::new(text)),
            Err(e) => {
                drop(Zeroizing::new(e.into_bytes()));
                Err(SecretError::Decrypt(name.to_string()))
            }
        }
    }
}

/// Replaces every `${secrets.NAME}` in `value` with `lookup(NAME)`.
pub fn substitute(
    value: &str,
    lookup: &mut dyn FnMut(&str) -> Option<Zeroizing<String>>,
) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${secrets.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "${secrets.".len()..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${secrets.".to_string())?;
        let name = &after[..end];
        out.push_str(&lookup(name).ok_or_else(|| format!("unknown secret {name:?}"))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A digest of sealed values, so a redeploy notices changed secrets.
pub fn fingerprint(sealed: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, value) in sealed {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(value);
        h.update([0]);
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_with_a_0600_key() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        let b = SecretBox::open(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let sealed = b.seal("DB_PASS", "hunter2-plaintext");
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        let again = SecretBox::open(&path).unwrap();
        assert_eq!(
            again.open_value("DB_PASS", &sealed).unwrap().as_str(),
            "hunter2-plaintext"
        );
        // Bound to its name: moving a value to another name fails.
        assert!(again.open_value("OTHER", &sealed).is_err());
        assert!(again.open_value("DB_PASS", &sealed[..5]).is_err());
    }

    #[test]
    fn a_key_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.key");
        SecretBox::open(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = SecretBox::open(&path).unwrap_err().to_string();
        assert!(e.contains("mode 644") && e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(SecretBox::open(&path).is_ok());
    }

    #[test]
    fn substitution() {
        let mut lookup = |n: &str| (n == "A").then(|| Zeroizing::new("1".to_string()));
        assert_eq!(
            substitute("x${secrets.A}y${secrets.A}", &mut lookup).unwrap(),
            "x1y1"
        );
        assert_eq!(substitute("plain", &mut lookup).unwrap(), "plain");
        assert!(substitute("${secrets.B}", &mut lookup)
            .unwrap_err()
            .contains("\"B\""));
    }
}
