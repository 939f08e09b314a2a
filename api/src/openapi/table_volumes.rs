//! The routes of named volumes (see [`super::table`]).

use super::routes::{q, Body, Kind, Query, Reply, Route};
use super::table::{DEPLOYER, READ, VIEWER, WRITE};

const VOLUMES_QUERY: &[Query] = &[q(
    "project",
    Kind::Name,
    "only this project's volumes (a scoped token sees its own only)",
)];

/// The routes.
pub(super) const VOLUMES: &[Route] = &[
    Route {
        method: "get",
        path: "/api/v1/volumes",
        op: "volumes_list",
        access: VIEWER,
        tag: "volumes",
        summary: "Named volumes: the node that holds each, its size, and the services using it",
        query: VOLUMES_QUERY,
        body: None,
        replies: &[Reply::Json(200, "VolumesResponse")],
        errors: READ,
    },
    Route {
        method: "delete",
        path: "/api/v1/volumes/{project}/{name}",
        op: "volumes_delete",
        access: DEPLOYER,
        tag: "volumes",
        summary: "Delete a volume and its data (409 while a service uses it)",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Deleted")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/volumes/{project}/{name}/move",
        op: "volumes_move",
        access: DEPLOYER,
        tag: "volumes",
        summary: "Move a volume to another node: stop its replicas, copy and verify the data, switch, start them there, then remove the source copy",
        query: &[],
        body: Some(Body {
            schema: "MoveVolumeRequest",
            required: true,
            example: r#"{"node":"n3"}"#,
        }),
        replies: &[Reply::Json(200, "VolumeMoved")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/volumes/{project}/{name}/backup",
        op: "volumes_backup",
        access: DEPLOYER,
        tag: "volumes",
        summary: "A tar.gz of the volume, streamed from its node; its replicas are paused while it is read unless `live` (X-Orca-Paused-Ms says how long)",
        query: &[q("live", Kind::Bool, "read it while its replicas run (not consistent)")],
        body: None,
        replies: &[Reply::Binary("application/gzip")],
        errors: READ,
    },
    Route {
        method: "put",
        path: "/api/v1/volumes/{project}/{name}/restore",
        op: "volumes_restore",
        access: DEPLOYER,
        tag: "volumes",
        summary: "Replace the volume's content with a tar.gz (never merged): its replicas stop, the archive is checked and unpacked, they start again",
        query: &[],
        // A tar.gz, streamed (see `operation`).
        body: None,
        replies: &[Reply::Json(200, "VolumeRestored")],
        errors: WRITE,
    },
];
