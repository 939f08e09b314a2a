//! `api`: orca's REST API, knowing nothing of containerd.
//!
//! Requests are parsed into an [`ApiRequest`] first (pure, tested), then
//! dispatched to whoever implements [`Handler`]; errors become JSON in one
//! place.
//!
//! # Layout
//! - [`names`]: the one validator for every name.
//! - [`spec`]: the service spec (deploy payload and service.toml twin).
//! - [`status`]: status, cluster, versions and token answers.
//! - [`store`]: the store's snapshot (backup and restore).
//! - [`events`]: the event stream's events, as SSE and back.
//! - [`page`]: the status page at `/`.
//! - [`openapi`]: the OpenAPI document, from the route table.
//! - [`auth`]: roles, access rules, constant-time token checks.
//! - [`request`]: method + path + body into [`ApiRequest`].
//! - [`error`]: the error type, [`ApiError`].
//! - [`server`]: the hyper server glue.
//! - [`forward`]: a request sent on to the leading server.
//! - [`client`]: the client the CLI uses.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod attach;
pub mod auth;
pub mod client;
pub mod error;
pub mod events;
pub mod forward;
pub mod join_tokens;
pub mod limit;
pub mod names;
pub mod openapi;
pub mod page;
pub mod request;
pub mod server;
pub mod spec;
pub mod status;
pub mod store;
pub mod volumes;

pub use auth::{Caller, Role};
pub use error::ApiError;
pub use request::ApiRequest;
pub use server::{ApiResponse, Handler};
