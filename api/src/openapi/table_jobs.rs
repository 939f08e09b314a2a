//! The routes of jobs (see [`super::table`]).

use super::routes::{Reply, Route};
use super::table::{DEPLOYER, WRITE};

/// The routes.
pub(super) const JOBS: &[Route] = &[Route {
    method: "post",
    path: "/api/v1/services/{name}/run",
    op: "run",
    access: DEPLOYER,
    tag: "services",
    summary: "Start a run of a job now (409 while one goes)",
    query: &[],
    body: None,
    replies: &[Reply::Json(200, "RunStarted")],
    errors: WRITE,
}];
