//! Who may do what: roles, the permission each request needs, and bearer
//! tokens compared in constant time (by their SHA-256, so stored tokens need
//! not be kept in plain text).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A token's role. Each includes the ones before it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
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
    /// A token scoped to one project sees and changes only that project's
    /// services, whatever its role, and a deployer's may reference that
    /// project's secrets.
    pub project: Option<String>,
}

impl Caller {
    /// Whether the caller may see and change services of `project`: an
    /// unscoped token reaches every project, a scoped one only its own.
    pub fn may_reach(&self, project: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
    }

    /// Whether a spec of `project` the caller deploys may reference
    /// secrets: admins that reach the project, and deployers scoped to it.
    pub fn may_use_secrets_of(&self, project: &str) -> bool {
        (self.role == Role::Admin && self.may_reach(project))
            || (self.role == Role::Deployer && self.project.as_deref() == Some(project))
    }

    /// Whether the caller may deploy privileged spec fields.
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
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
    /// The one project the token acts on, if scoped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
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
                project: entry.project.clone(),
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
                project: Some("shop".into()),
            },
            TokenEntry {
                name: "ops".into(),
                role: Role::Admin,
                hash: token_hash("xyz"),
                project: None,
            },
        ];
        assert_eq!(
            find_token(&entries, "xyz"),
            Some(Caller {
                name: "ops".into(),
                role: Role::Admin,
                project: None,
            })
        );
        let ci = find_token(&entries, "abc").unwrap();
        assert!(ci.may_reach("shop") && !ci.may_reach("bank"));
        assert!(ci.may_use_secrets_of("shop") && !ci.may_use_secrets_of("bank"));
        let unscoped = Caller {
            name: "any".into(),
            role: Role::Deployer,
            project: None,
        };
        assert!(unscoped.may_reach("bank") && !unscoped.may_use_secrets_of("bank"));
        let scoped_admin = Caller {
            name: "shop-admin".into(),
            role: Role::Admin,
            project: Some("shop".into()),
        };
        assert!(scoped_admin.may_reach("shop") && !scoped_admin.may_reach("bank"));
        assert!(!scoped_admin.may_use_secrets_of("bank"));
        assert_eq!(find_token(&entries, "abd"), None);
        assert_eq!(find_token(&entries, ""), None);
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(None), None);
    }
}
