//! The answers of `/api/v1/volumes`.

use serde::{Deserialize, Serialize};

/// A named volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeInfo {
    pub project: String,
    pub name: String,
    /// The node that holds it (its replicas run there only).
    pub node: String,
    /// Bytes on disk, as its node counted them (null: the node did not answer).
    pub size_bytes: Option<u64>,
    /// When it was first claimed (RFC 3339).
    pub created: String,
    /// Services (not stopped) whose replicas mount it.
    pub used_by: Vec<String>,
}

/// `GET /api/v1/volumes` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
pub struct VolumesResponse {
    pub volumes: Vec<VolumeInfo>,
}

/// `POST /api/v1/volumes/{project}/{name}/move` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeMoved {
    pub project: String,
    pub name: String,
    pub from: String,
    pub to: String,
    /// Bytes of the archive streamed between the nodes.
    pub bytes: u64,
    /// Its SHA-256, checked on the target before the switch.
    pub sha256: String,
    pub seconds: f64,
    /// How the data went: `direct` (node to node) or `server` (through
    /// the server, when the target could not be reached directly).
    pub via: String,
}

/// `PUT /api/v1/volumes/{project}/{name}/restore` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct VolumeRestored {
    pub project: String,
    pub name: String,
    pub node: String,
    /// Bytes of the archive received, and its SHA-256.
    pub bytes: u64,
    pub sha256: String,
    /// Members unpacked.
    pub members: u64,
}
