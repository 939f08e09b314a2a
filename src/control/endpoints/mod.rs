//! The API's handlers: the [`Handler`](api::Handler) ([`handler`]) and
//! who may do what ([`access`]), then one file per resource.

pub(crate) mod access;
pub(crate) mod cluster;
pub(crate) mod deploy;
pub(crate) mod exec;
pub(crate) mod handler;
pub(crate) mod join;
pub(crate) mod logs;
pub(crate) mod pull;
pub(crate) mod status;
pub(crate) mod versions;
pub(crate) mod webhooks;
