//! Join tokens: `orca-join-<ca>-<id>-<secret>`, where `<ca>` is the
//! SHA-256 of the cluster CA's certificate (64 hex digits), so that an
//! agent checks the server before it sends `<secret>`; `<id>` (8 hex
//! digits) names the token for listing and revocation; `<secret>` is 32
//! hex digits. The server keeps only the secret's SHA-256.

use sha2::{Digest, Sha256};

const PREFIX: &str = "orca-join-";

/// A token taken apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_sha256: String,
    pub id: String,
    pub secret: String,
}

/// Why a token string is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a join token (expected orca-join-<64 hex>-<8 hex>-<32 hex>, from `orca cluster join-token`)")]
pub struct Malformed;

fn is_hex(s: &str, len: usize) -> bool {
    s.len() == len
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl JoinToken {
    /// A new token for the CA with this fingerprint.
    pub fn generate(ca_sha256: &str) -> JoinToken {
        JoinToken {
            ca_sha256: ca_sha256.to_string(),
            id: hex::encode(rand::random::<[u8; 4]>()),
            secret: hex::encode(rand::random::<[u8; 16]>()),
        }
    }

    pub fn parse(text: &str) -> Result<JoinToken, Malformed> {
        let rest = text.trim().strip_prefix(PREFIX).ok_or(Malformed)?;
        let mut parts = rest.split('-');
        let (Some(ca), Some(id), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Malformed);
        };
        if !(is_hex(ca, 64) && is_hex(id, 8) && is_hex(secret, 32)) {
            return Err(Malformed);
        }
        Ok(JoinToken {
            ca_sha256: ca.into(),
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// What the server keeps of the secret.
    pub fn secret_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.secret.as_bytes()))
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}{}-{}-{}", self.ca_sha256, self.id, self.secret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_malformed() {
        let t = JoinToken::generate(&"ab".repeat(32));
        let text = t.to_string();
        assert!(text.starts_with("orca-join-"));
        assert_eq!(JoinToken::parse(&text).unwrap(), t);
        for bad in [
            "",
            "orca-join-",
            "orca-join-zz",
            &text.replace("orca-join-", "orca-"),
            &format!("{text}-00"),
            &text.to_uppercase(),
        ] {
            assert_eq!(JoinToken::parse(bad), Err(Malformed), "{bad}");
        }
        assert_ne!(t.secret_sha256(), t.secret);
    }
}
