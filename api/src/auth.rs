//! Who may do what: roles, the permission each request needs, and bearer
//! tokens compared in constant time (by their SHA-256, so stored tokens need
//! not be kept in plain text).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token's role. Each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads: status, logs, cluster info, webhooks list, versions.
    Viewer,
    /// Also deploys, scales, stops, promotes, rolls back, registers webhooks.
    Deployer,
    /// Also drains nodes, stops everything, manages tokens and secrets.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Deployer => "deployer",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "viewer" => Ok(Role::Viewer),
            "deployer" => Ok(Role::Deployer),
            "admin" => Ok(Role::Admin),
            _ => Err(format!("unknown role {s:?} (admin, deployer or viewer)")),
        }
    }
}

/// What a request needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token (health, metrics).
    Public,
    /// A signature checked by the handler (git webhooks).
    Signature,
    /// A token of at least this role.
    Role(Role),
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// SHA-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A known token: its name, role and the SHA-256 of its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    pub name: String,
    pub role: Role,
    pub hash: String,
}

/// Finds the entry whose hash matches `presented`, comparing every entry in
/// constant time so timing tells nothing about how close a guess was.
pub fn find_token<'a>(
    entries: impl IntoIterator<Item = &'a TokenEntry>,
    presented: &str,
) -> Option<Caller> {
    let presented = Sha256::digest(presented.as_bytes());
    let mut found = None;
    for entry in entries {
        let Ok(stored) = hex::decode(&entry.hash) else {
            continue;
        };
        if stored.len() == presented.len()
            && bool::from(stored.as_slice().ct_eq(presented.as_slice()))
        {
            found = Some(Caller {
                name: entry.name.clone(),
                role: entry.role,
            });
        }
    }
    found
}

/// The bearer token of an `Authorization` header value.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_order() {
        assert!(Role::Admin > Role::Deployer && Role::Deployer > Role::Viewer);
        assert_eq!("deployer".parse::<Role>().unwrap(), Role::Deployer);
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn tokens() {
        let entries = vec![
            TokenEntry {
                name: "ci".into(),
                role: Role::Deployer,
                hash: token_hash("abc"),
            },
            TokenEntry {
                name: "ops".into(),
                role: Role::Admin,
                hash: token_hash("xyz"),
            },
        ];
        assert_eq!(
            find_token(&entries, "xyz"),
            Some(Caller {
                name: "ops".into(),
                role: Role::Admin
            })
        );
        assert_eq!(find_token(&entries, "abd"), None);
        assert_eq!(find_token(&entries, ""), None);
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
