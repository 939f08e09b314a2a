//! `NetworkError`: what can go wrong setting up the node's network.

use std::path::PathBuf;

/// Errors of the `network` crate.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// A netlink request failed.
    #[error("netlink {op} failed for {object}: {reason}")]
    Netlink {
        op: &'static str,
        object: String,
        reason: String,
    },
    /// The `nft` command failed.
    #[error("nft failed ({status}): {stderr}")]
    Nft {
        status: String,
        stdout: String,
        stderr: String,
    },
    /// No address left in the node's subnet.
    #[error("subnet {subnet} is exhausted ({used} addresses in use)")]
    SubnetExhausted { subnet: String, used: usize },
    /// Another link already has an address in the node's subnet, so the
    /// bridge's routes would clash with it.
    #[error("subnet {subnet} is already in use on link {link} ({address}); choose another [network] subnet")]
    SubnetInUse {
        subnet: String,
        link: String,
        address: String,
    },
    /// A subnet or address that does not parse or fit.
    #[error("invalid {field}: {reason}")]
    InvalidConfig { field: &'static str, reason: String },
    /// A file or mount operation failed.
    #[error("{op} {}: {reason}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        reason: String,
    },
    /// The address book could not be saved.
    #[error("saving addresses failed: {0}")]
    Store(String),
}

impl NetworkError {
    pub(crate) fn netlink(
        op: &'static str,
        object: impl Into<String>,
        e: impl std::fmt::Display,
    ) -> Self {
        NetworkError::Netlink {
            op,
            object: object.into(),
            reason: e.to_string(),
        }
    }
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        e: impl std::fmt::Display,
    ) -> Self {
        NetworkError::Io {
            op,
            path: path.into(),
            reason: e.to_string(),
        }
    }
}

/// Result alias of the crate.
pub type Result<T, E = NetworkError> = std::result::Result<T, E>;
