//! Every route of the API as data: method, path, the [`ApiRequest::route`]
//! label it parses to, who may call it, its parameters, body and answers.
//! The OpenAPI document is built from this table, and the tests check the
//! table against the parser both ways.
//!
//! [`ApiRequest::route`]: crate::ApiRequest::route

use crate::auth::{Access, Role};

/// A query parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A DNS label (service, project).
    Name,
    /// An unsigned integer, with its bounds.
    Number(u64, u64),
    Bool,
    /// Repeated: `?command=sh&command=-c`.
    List,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub kind: Kind,
    pub about: &'static str,
}

const fn q(name: &'static str, kind: Kind, about: &'static str) -> Query {
    Query { name, kind, about }
}

/// A request body: the component schema it follows and an example.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub schema: &'static str,
    pub required: bool,
    pub example: &'static str,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// JSON following a component schema.
    Json(u16, &'static str),
    /// Plain text (logs, followed or not).
    Text,
    /// Prometheus' text format.
    Metrics,
    Html,
    /// Server-Sent Events.
    Events,
    /// 101: a WebSocket.
    Upgrade,
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// With `{name}`, `{project}` or `{id}` for path parameters.
    pub path: &'static str,
    /// The [`crate::ApiRequest::route`] label; the operation id.
    pub op: &'static str,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [Query],
    pub body: Option<Body>,
    pub replies: &'static [Reply],
    /// Error statuses it may answer (with `{"error": ...}`).
    pub errors: &'static [u16],
}

/// Errors of a public read.
const PUBLIC: &[u16] = &[400, 500];
/// Errors of a read with a token.
const READ: &[u16] = &[400, 401, 403, 404, 429, 500];
/// Errors of a change with a token: also conflicts, a body too large, a
/// server that keeps no secrets, and a full data directory.
const WRITE: &[u16] = &[400, 401, 403, 404, 409, 413, 429, 500, 503, 507];

const VIEWER: Access = Access::Role(Role::Viewer);
const DEPLOYER: Access = Access::Role(Role::Deployer);
const ADMIN: Access = Access::Role(Role::Admin);

const PROJECT_QUERY: &[Query] = &[q("project", Kind::Name, "the project (default `default`)")];

/// The routes.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/",
        op: "page",
        access: Access::Public,
        tag: "status",
        summary: "The web status page (its data calls take a token)",
        query: &[],
        body: None,
        replies: &[Reply::Html],
        errors: PUBLIC,
    },
    Route {
        method: "get",
        path: "/metrics",
        op: "metrics",
        access: Access::Public,
        tag: "status",
        summary: "Prometheus metrics (a viewer token when `[cluster] metrics_token = true`)",
        query: &[],
        body: None,
        replies: &[Reply::Metrics],
        errors: &[400, 401, 403, 429, 500],
    },
    Route {
        method: "get",
        path: "/api/v1/health",
        op: "health",
        access: Access::Public,
        tag: "status",
        summary: "Health of the server and its containerd",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Health")],
        errors: PUBLIC,
    },
    Route {
        method: "get",
        path: "/api/v1/openapi.json",
        op: "openapi",
        access: Access::Public,
        tag: "status",
        summary: "This document",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "OpenApiDocument")],
        errors: PUBLIC,
    },
    Route {
        method: "post",
        path: "/api/v1/deploy",
        op: "deploy",
        access: DEPLOYER,
        tag: "services",
        summary: "Deploy services (each changed spec becomes a new version, rolled out)",
        query: &[],
        body: Some(Body {
            schema: "DeployRequest",
            required: true,
            example: r#"{"services":[{"name":"web","project":"shop","image":"nginx:alpine","replicas":2,"port":80}]}"#,
        }),
        replies: &[Reply::Json(200, "DeployResponse")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/status",
        op: "status",
        access: VIEWER,
        tag: "services",
        summary: "Services with their replicas and rollouts",
        query: &[q("project", Kind::Name, "only this project's services")],
        body: None,
        replies: &[Reply::Json(200, "StatusResponse")],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/stop",
        op: "stop_all",
        access: ADMIN,
        tag: "services",
        summary: "Stop every service",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Stopped")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/events",
        op: "events",
        access: VIEWER,
        tag: "status",
        summary: "Server-Sent Events of what happens (resume with Last-Event-ID or since)",
        query: &[
            q("service", Kind::Name, "only this service's events"),
            q("project", Kind::Name, "only this project's events"),
            q(
                "since",
                Kind::Number(0, u64::MAX),
                "the events after this id",
            ),
        ],
        body: None,
        replies: &[Reply::Events],
        errors: READ,
    },
    Route {
        method: "delete",
        path: "/api/v1/projects/{project}",
        op: "stop_project",
        access: DEPLOYER,
        tag: "services",
        summary: "Stop every service of a project",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Stopped")],
        errors: WRITE,
    },
    Route {
        method: "delete",
        path: "/api/v1/services/{name}",
        op: "stop_service",
        access: DEPLOYER,
        tag: "services",
        summary: "Stop a service",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Stopped")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/services/{name}/scale",
        op: "scale",
        access: DEPLOYER,
        tag: "services",
        summary: "Set a service's replica count",
        query: &[],
        body: Some(Body {
            schema: "ScaleRequest",
            required: true,
            example: r#"{"replicas":3}"#,
        }),
        replies: &[Reply::Json(200, "Scaled")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/services/{name}/logs",
        op: "logs",
        access: VIEWER,
        tag: "services",
        summary: "A service's logs, each line with its replica id (chunked while following)",
        query: &[
            q("tail", Kind::Number(0, 100_000), "the last lines of each replica"),
            q("follow", Kind::Bool, "keep the answer open for new lines"),
        ],
        body: None,
        replies: &[Reply::Text],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/services/{name}/promote",
        op: "promote",
        access: DEPLOYER,
        tag: "services",
        summary: "Promote a service's canary to every replica",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "VersionChange")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/services/{name}/rollback",
        op: "rollback",
        access: DEPLOYER,
        tag: "services",
        summary: "Go back to a version (default the one before), or drop a canary",
        query: &[],
        body: Some(Body {
            schema: "RollbackRequest",
            required: false,
            example: r#"{"version":1}"#,
        }),
        replies: &[Reply::Json(200, "VersionChange")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/services/{name}/versions",
        op: "versions",
        access: VIEWER,
        tag: "services",
        summary: "A service's versions, newest first",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Versions")],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/services/{name}/exec",
        op: "exec",
        access: DEPLOYER,
        tag: "services",
        summary: "Run a command in a replica and collect its output",
        query: &[],
        body: Some(Body {
            schema: "ExecRequest",
            required: true,
            example: r#"{"command":["ls","/"]}"#,
        }),
        replies: &[Reply::Json(200, "ExecResponse")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/services/{name}/exec",
        op: "exec_attach",
        access: DEPLOYER,
        tag: "services",
        summary: "Interactive exec over a WebSocket (binary messages, first byte the channel: 0 stdin, 1 stdout, 2 stderr, 3 end, 4 resize)",
        query: &[
            q("command", Kind::List, "the program and its arguments, in order"),
            q("instance", Kind::Text, "the replica (default a ready one)"),
            q("tty", Kind::Bool, "a terminal"),
            q("cols", Kind::Number(1, 65_535), "the terminal's width"),
            q("rows", Kind::Number(1, 65_535), "the terminal's height"),
        ],
        body: None,
        replies: &[Reply::Upgrade],
        errors: READ,
    },
    Route {
        method: "get",
        path: "/api/v1/cluster/info",
        op: "cluster_info",
        access: VIEWER,
        tag: "cluster",
        summary: "The cluster's nodes",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "ClusterInfo")],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/cluster/nodes/{id}/drain",
        op: "drain",
        access: ADMIN,
        tag: "cluster",
        summary: "Move every replica off a node, one service at a time",
        query: &[q(
            "deadline_secs",
            Kind::Number(1, 604_800),
            "what has not moved by then is stopped (default 3600)",
        )],
        body: None,
        replies: &[Reply::Json(200, "Drained")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/cluster/nodes/{id}/undrain",
        op: "undrain",
        access: ADMIN,
        tag: "cluster",
        summary: "Make a drained node eligible again",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Drained")],
        errors: WRITE,
    },
    Route {
        method: "delete",
        path: "/api/v1/cluster/nodes/{id}",
        op: "node_remove",
        access: ADMIN,
        tag: "cluster",
        summary: "Remove a node: its certificate is revoked, its replicas placed elsewhere",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "NodeRemoved")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/cluster/join-tokens",
        op: "join_tokens_create",
        access: ADMIN,
        tag: "cluster",
        summary: "Make a join token for agents",
        query: &[],
        body: Some(Body {
            schema: "JoinTokenRequest",
            required: true,
            example: r#"{"ttl_secs":3600}"#,
        }),
        replies: &[Reply::Json(201, "JoinTokenCreated")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/cluster/join-tokens",
        op: "join_tokens_list",
        access: ADMIN,
        tag: "cluster",
        summary: "Join tokens (never their secrets)",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "JoinTokens")],
        errors: READ,
    },
    Route {
        method: "delete",
        path: "/api/v1/cluster/join-tokens/{id}",
        op: "join_tokens_delete",
        access: ADMIN,
        tag: "cluster",
        summary: "Revoke a join token",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "JoinTokenRevoked")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/webhooks",
        op: "webhooks_list",
        access: VIEWER,
        tag: "webhooks",
        summary: "Registered git webhooks with their last deliveries",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Webhooks")],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/webhooks",
        op: "webhooks_create",
        access: DEPLOYER,
        tag: "webhooks",
        summary: "Register a git webhook that redeploys a service on push",
        query: &[],
        body: Some(Body {
            schema: "WebhookRequest",
            required: true,
            example: r#"{"repo":"acme/web","service":"web","branch":"main","secret":"a-long-shared-secret"}"#,
        }),
        replies: &[Reply::Json(201, "Webhook")],
        errors: WRITE,
    },
    Route {
        method: "delete",
        path: "/api/v1/webhooks/{id}",
        op: "webhooks_delete",
        access: DEPLOYER,
        tag: "webhooks",
        summary: "Remove a webhook",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Deleted")],
        errors: WRITE,
    },
    Route {
        method: "post",
        path: "/api/v1/webhooks/github",
        op: "webhook_git",
        access: Access::Signature,
        tag: "webhooks",
        summary: "A push from GitHub or Gitea, signed with a webhook's secret (HMAC-SHA256)",
        query: &[],
        body: Some(Body {
            schema: "GitPush",
            required: true,
            example: r#"{"ref":"refs/heads/main","repository":{"full_name":"acme/web"}}"#,
        }),
        replies: &[Reply::Json(200, "WebhookResults"), Reply::Json(202, "WebhookResults")],
        errors: &[400, 401, 413, 500, 503, 507],
    },
    Route {
        method: "get",
        path: "/api/v1/tokens",
        op: "tokens_list",
        access: ADMIN,
        tag: "access",
        summary: "API tokens (never their values)",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Tokens")],
        errors: READ,
    },
    Route {
        method: "post",
        path: "/api/v1/tokens",
        op: "tokens_create",
        access: ADMIN,
        tag: "access",
        summary: "Make an API token (its value is shown this once)",
        query: &[],
        body: Some(Body {
            schema: "TokenRequest",
            required: true,
            example: r#"{"name":"ci","role":"deployer","project":"shop"}"#,
        }),
        replies: &[Reply::Json(201, "TokenCreated")],
        errors: WRITE,
    },
    Route {
        method: "delete",
        path: "/api/v1/tokens/{name}",
        op: "tokens_delete",
        access: ADMIN,
        tag: "access",
        summary: "Delete an API token",
        query: &[],
        body: None,
        replies: &[Reply::Json(200, "Deleted")],
        errors: WRITE,
    },
    Route {
        method: "get",
        path: "/api/v1/secrets",
        op: "secrets_list",
        access: ADMIN,
        tag: "access",
        summary: "A project's secret names (never their values)",
        query: PROJECT_QUERY,
        body: None,
        replies: &[Reply::Json(200, "Secrets")],
        errors: READ,
    },
    Route {
        method: "put",
        path: "/api/v1/secrets/{secret}",
        op: "secrets_put",
        access: ADMIN,
        tag: "access",
        summary: "Store a secret (sealed); replicas see it at their next start",
        query: PROJECT_QUERY,
        body: Some(Body {
            schema: "SecretRequest",
            required: true,
            example: r#"{"value":"s3cret","project":"shop"}"#,
        }),
        replies: &[Reply::Json(200, "SecretStored")],
        errors: WRITE,
    },
    Route {
        method: "delete",
        path: "/api/v1/secrets/{secret}",
        op: "secrets_delete",
        access: ADMIN,
        tag: "access",
        summary: "Delete a secret",
        query: PROJECT_QUERY,
        body: None,
        replies: &[Reply::Json(200, "SecretDeleted")],
        errors: WRITE,
    },
];
