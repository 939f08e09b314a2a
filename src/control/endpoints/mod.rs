//! The API's handlers: the [`Handler`](api::Handler) ([`handler`]) and
//! who may do what ([`access`], [`scope`]), then one file per resource.

pub(crate) mod access;
pub(crate) mod claims;
pub(crate) mod cluster;
pub(crate) mod depends;
pub(crate) mod deploy;
pub(crate) mod exec;
pub(crate) mod handler;
pub(crate) mod join;
pub(crate) mod logs;
pub(crate) mod pull;
pub(crate) mod scope;
pub(crate) mod status;
pub(crate) mod versions;
pub(crate) mod volume_direct;
pub(crate) mod volume_transfer;
pub(crate) mod volumes;
pub(crate) mod webhook_seen;
pub(crate) mod webhooks;

/// A store failure as the API says it: a full data directory is 507 (the
/// change was not made; reads still work), anything else 500.
pub(crate) fn store_error(e: crate::store::StoreError) -> api::ApiError {
    match e {
        crate::store::StoreError::Full { .. } => api::ApiError::new(
            507,
            format!("could not save, nothing was changed: {e}; free some space and try again"),
        ),
        crate::store::StoreError::NotLeader { .. } | crate::store::StoreError::Frozen { .. } => {
            api::ApiError::new(503, format!("could not save, nothing was changed: {e}"))
        }
        e => api::ApiError::internal(format!("could not save: {e}")),
    }
}

/// The status of a deploy that did nothing: a store failure (5xx) over a
/// conflict (409) over a refusal (403) over bad input (400).
pub(crate) fn worse(worst: u16, status: u16) -> u16 {
    if matches!(status, 403 | 409) || status >= 500 {
        worst.max(status)
    } else {
        worst
    }
}
