//! A snapshot of a server's whole store, as `GET /api/v1/store/backup`
//! gives it and `orca store restore` takes it: every entry of every tree,
//! taken while no write was in flight. Sealed values (secrets, ACME keys)
//! stay sealed in it.

use serde::{Deserialize, Serialize};

/// The format this build writes and reads.
pub const SNAPSHOT_FORMAT: &str = "orca-store-snapshot/1";

/// A consistent copy of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoreSnapshot {
    /// `orca-store-snapshot/1`.
    pub format: String,
    /// When it was taken (RFC 3339, UTC).
    pub taken_at: String,
    /// Every entry, tree by tree, each tree in key order.
    pub entries: Vec<StoreEntry>,
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct StoreEntry {
    /// The tree (`services`, `tokens`, `secrets` ...).
    pub tree: String,
    pub key: String,
    /// The stored bytes, in hex.
    pub value: String,
}
