//! The routes of the store (see [`super::table`]).

use super::routes::{Reply, Route};
use super::table::{ADMIN, READ, WRITE};

/// The routes.
pub(super) const STORE: &[Route] = &[
    Route {
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
    },
    Route {
        method: "post",
        path: "/api/v1/store/freeze",
        op: "store_freeze",
        access: ADMIN,
        tag: "cluster",
        summary: "A last snapshot of the store, after which this server takes no change until it restarts on another store (unscoped admin; `orca store migrate`)",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "StoreSnapshot")],
        errors: WRITE,
    },
];
