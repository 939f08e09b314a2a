//! `CriError`: every way talking to containerd or a registry can fail, with
//! the context an operator needs (socket, image reference, container id).

use std::path::PathBuf;
use std::sync::Arc;

/// Errors of the `cri` crate.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The socket is missing or nobody answers on it.
    #[error("containerd unavailable at {}: {reason}", socket.display())]
    Unavailable { socket: PathBuf, reason: String },

    /// containerd answered a call with an error.
    #[error("containerd {call} failed{}: {status}", id_suffix(.id))]
    Containerd {
        call: &'static str,
        id: String,
        #[source]
        status: Box<tonic::Status>,
    },

    /// The thing asked for does not exist in containerd.
    #[error("{kind} not found: {id}")]
    NotFound { kind: &'static str, id: String },

    /// The thing to create exists already.
    #[error("{kind} already exists: {id}")]
    AlreadyExists { kind: &'static str, id: String },

    /// An image reference that does not parse.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },

    /// The registry has no such repository, tag or digest.
    #[error("image not found: {reference}")]
    ImageNotFound { reference: String },

    /// The registry refused our credentials (or wanted some).
    #[error("registry unauthorized for {reference}: {reason}")]
    RegistryUnauthorized { reference: String, reason: String },

    /// The registry could not be reached at all: DNS, connect or timeout.
    #[error("registry unreachable for {reference}: {reason}")]
    RegistryUnreachable { reference: String, reason: String },

    /// Any other registry failure: network, protocol, unexpected status.
    #[error("registry error for {reference}: {reason}")]
    Registry { reference: String, reason: String },

    /// The image exists but none of its manifests fits this host.
    #[error("image {reference} has no manifest for {platform}")]
    NoMatchingPlatform { reference: String, platform: String },

    /// Downloaded or stored content does not match its digest.
    #[error("digest mismatch for {what}: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: String,
        actual: String,
    },

    /// A manifest, config, index or archive that does not parse.
    #[error("invalid {what}: {reason}")]
    InvalidContent { what: String, reason: String },

    /// Bad container settings (memory, cpu, user, command...).
    #[error("invalid {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },

    /// A local file or directory operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A system call failed.
    #[error("{op}: {source}")]
    Sys {
        op: &'static str,
        #[source]
        source: nix::Error,
    },

    /// Waiting on the task timed out.
    #[error("timed out after {secs}s waiting for {what}")]
    Timeout { what: String, secs: u64 },

    /// A result shared by several callers (deduplicated pulls).
    #[error(transparent)]
    Shared(Arc<CriError>),
}

fn id_suffix(id: &str) -> String {
    if id.is_empty() {
        String::new()
    } else {
        format!(" for {id}")
    }
}

impl CriError {
    /// Maps a gRPC status to a typed error, keeping the call and id.
    pub fn from_status(call: &'static str, id: impl Into<String>, status: tonic::Status) -> Self {
        let id = id.into();
        match status.code() {
            tonic::Code::NotFound => CriError::NotFound {
                kind: kind_of(call),
                id,
            },
            tonic::Code::AlreadyExists => CriError::AlreadyExists {
                kind: kind_of(call),
                id,
            },
            _ => CriError::Containerd {
                call,
                id,
                status: Box::new(status),
            },
        }
    }

    /// True when the thing was not found (also through a shared result).
    pub fn is_not_found(&self) -> bool {
        match self {
            CriError::NotFound { .. } | CriError::ImageNotFound { .. } => true,
            CriError::Shared(inner) => inner.is_not_found(),
            _ => false,
        }
    }

    /// True when containerd could not be reached (worth a retry later).
    /// True when a registry could not be reached (not when it answered no).
    pub fn is_unreachable(&self) -> bool {
        match self {
            CriError::RegistryUnreachable { .. } => true,
            CriError::Shared(inner) => inner.is_unreachable(),
            _ => false,
        }
    }

    pub fn is_unavailable(&self) -> bool {
        match self {
            CriError::Unavailable { .. } => true,
            CriError::Containerd { status, .. } => status.code() == tonic::Code::Unavailable,
            CriError::Shared(inner) => inner.is_unavailable(),
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CriError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn registry(reference: impl ToString, reason: impl ToString) -> Self {
        CriError::Registry {
            reference: reference.to_string(),
            reason: reason.to_string(),
        }
    }

    pub(crate) fn content(what: impl ToString, reason: impl ToString) -> Self {
        CriError::InvalidContent {
            what: what.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// What a call works on, for "X not found" messages.
fn kind_of(call: &str) -> &'static str {
    let service = call.split('.').next().unwrap_or(call);
    match service {
        "Containers" => "container",
        "Tasks" => "task",
        "Images" => "image",
        "Content" => "content",
        "Snapshots" => "snapshot",
        "Leases" => "lease",
        _ => "object",
    }
}

/// An error with its sources, `outer: inner: innermost`.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}

/// Result alias of the crate.
pub type Result<T, E = CriError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_names_the_kind_and_id() {
        let e = CriError::from_status("Containers.Get", "web-1", tonic::Status::not_found("x"));
        assert_eq!(e.to_string(), "container not found: web-1");
        assert!(e.is_not_found());
    }

    #[test]
    fn unavailable_names_the_socket() {
        let e = CriError::Unavailable {
            socket: "/run/x.sock".into(),
            reason: "No such file or directory".into(),
        };
        assert_eq!(
            e.to_string(),
            "containerd unavailable at /run/x.sock: No such file or directory"
        );
        assert!(e.is_unavailable());
    }

    #[test]
    fn other_status_keeps_call_and_id() {
        let e = CriError::from_status(
            "Tasks.Start",
            "web-1",
            tonic::Status::internal("exec failed"),
        );
        let s = e.to_string();
        assert!(s.contains("Tasks.Start failed for web-1"), "{s}");
        assert!(s.contains("exec failed"), "{s}");
    }
}
