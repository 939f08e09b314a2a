//! The join tokens' request and answers (`/api/v1/cluster/join-tokens`),
//! also named from [`crate::status`].

use serde::{Deserialize, Serialize};

/// `POST /api/v1/cluster/join-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRequest {
    /// Seconds the token may be used for (default one hour, at most 30 days).
    #[serde(default)]
    #[schemars(range(min = 1, max = 2_592_000))]
    pub ttl_secs: Option<u64>,
    /// A token for another server of the control plane (it is given the
    /// secrets key); an agent cannot join with it, nor a server with an
    /// agent's.
    #[serde(default)]
    pub server: bool,
}

/// A join token as created (the secret is shown this once).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinTokenCreated {
    pub id: String,
    pub token: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// A join token as listed (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct JoinTokenInfo {
    pub id: String,
    pub expires_at: String,
    pub expired: bool,
    /// For a server (see `JoinTokenRequest`).
    #[serde(default)]
    pub server: bool,
}
