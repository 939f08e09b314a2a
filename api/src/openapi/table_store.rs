//! The routes of the store (see [`super::table`]).

use super::routes::{Reply, Route};
use super::table::{ADMIN, READ};

/// The routes.
pub(super) const STORE: &[Route] = &[Route {
    method: "get",
    path: "/api/v1/store/backup",
    op: "store_backup",
    access: ADMIN,
    tag: "cluster",
    summary: "A consistent snapshot of the whole store (unscoped admin; secrets stay sealed)",
    query: &[],
    body: None,
    replies: &[Reply::Json(200, "StoreSnapshot")],
    errors: READ,
}];
