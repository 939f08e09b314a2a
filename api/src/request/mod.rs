//! Phase one of routing, pure: method, path, query, headers and body become
//! an [`ApiRequest`], or the right error (404 unknown path, 405 wrong
//! method, 400 bad JSON or name). Every name goes through
//! [`checked_name`](crate::names::checked_name).
//!
//! The top-level routes are here; each resource's own routes are in a file
//! of their own: [`services`], [`cluster`], [`webhooks`] and [`credentials`]
//! (tokens and secrets).

use bytes::Bytes;
use http::{HeaderMap, Method};

use crate::auth::{Access, Role};
use crate::error::ApiError;
use crate::names::checked_name;
use crate::spec::DeployRequest;
use crate::status::TokenRequest;

mod cluster;
mod credentials;
mod events;
mod params;
mod services;
mod volumes;
mod webhooks;

pub use events::EventsQuery;
pub use params::query_pairs;
pub use services::websocket;
pub use volumes::{is_upload, MoveVolumeRequest, Upload};

/// Largest `tail` accepted.
pub const MAX_TAIL: usize = 100_000;

/// A parsed API call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    /// The status page.
    Page,
    Health,
    Metrics,
    /// The OpenAPI document.
    OpenApi,
    Deploy(DeployRequest),
    Status {
        project: Option<String>,
    },
    Scale {
        name: String,
        replicas: i64,
    },
    StopService {
        name: String,
    },
    StopProject {
        name: String,
    },
    StopAll,
    Logs {
        name: String,
        tail: Option<usize>,
        follow: bool,
    },
    Promote {
        name: String,
    },
    /// A job's run now.
    Run {
        name: String,
    },
    Rollback {
        name: String,
        version: Option<u64>,
    },
    Versions {
        name: String,
    },
    Events(EventsQuery),
    Exec {
        name: String,
        request: crate::status::ExecRequest,
    },
    /// An interactive exec (a WebSocket upgrade of the exec path).
    Attach {
        name: String,
        request: crate::attach::AttachRequest,
    },
    ClusterInfo,
    /// `GET /api/v1/store/backup`: a consistent snapshot of the store.
    StoreBackup,
    /// `orca store migrate`: the last snapshot before the move.
    StoreFreeze,
    Drain {
        node: String,
        /// What has not moved by then is stopped (default one hour).
        deadline_secs: Option<u64>,
        /// Move the node's volumes to other nodes too.
        move_volumes: bool,
    },
    RemoveNode {
        node: String,
    },
    CreateJoinToken(crate::status::JoinTokenRequest),
    ListJoinTokens,
    DeleteJoinToken {
        id: String,
    },
    Undrain {
        node: String,
    },
    GitWebhook(GitWebhook),
    ListWebhooks,
    CreateWebhook(crate::status::WebhookRequest),
    DeleteWebhook {
        id: String,
    },
    CreateToken(TokenRequest),
    ListTokens,
    DeleteToken {
        name: String,
    },
    /// A secret of `project`.
    PutSecret {
        project: String,
        name: String,
        value: String,
    },
    ListSecrets {
        project: String,
    },
    DeleteSecret {
        project: String,
        name: String,
    },
    ListVolumes {
        project: Option<String>,
    },
    DeleteVolume {
        project: String,
        name: String,
    },
    MoveVolume {
        project: String,
        name: String,
        node: String,
    },
    BackupVolume {
        project: String,
        name: String,
        live: bool,
    },
    /// The archive streams in as `body`.
    RestoreVolume {
        project: String,
        name: String,
        body: Upload,
    },
}

/// A git push notification, kept raw until its signature is checked.
#[derive(Debug, Clone, PartialEq)]
pub struct GitWebhook {
    /// `X-GitHub-Event` or `X-Gitea-Event`.
    pub event: Option<String>,
    /// `X-Hub-Signature-256` (`sha256=<hex>`).
    pub github_signature: Option<String>,
    /// `X-Gitea-Signature` (`<hex>`).
    pub gitea_signature: Option<String>,
    /// `X-GitHub-Delivery` or `X-Gitea-Delivery`.
    pub delivery: Option<String>,
    pub body: Bytes,
}

impl ApiRequest {
    /// Who may make this call.
    pub fn access(&self) -> Access {
        use ApiRequest::*;
        match self {
            Page | Health | Metrics | OpenApi => Access::Public,
            GitWebhook(_) => Access::Signature,
            Status { .. }
            | Logs { .. }
            | Versions { .. }
            | Events(_)
            | ClusterInfo
            | ListVolumes { .. }
            | ListWebhooks => Access::Role(Role::Viewer),
            Deploy(_)
            | Scale { .. }
            | StopService { .. }
            | StopProject { .. }
            | Promote { .. }
            | Run { .. }
            | Rollback { .. }
            | Exec { .. }
            | Attach { .. }
            | CreateWebhook(_)
            | DeleteVolume { .. }
            | MoveVolume { .. }
            | BackupVolume { .. }
            | RestoreVolume { .. }
            | DeleteWebhook { .. } => Access::Role(Role::Deployer),
            StopAll
            | Drain { .. }
            | RemoveNode { .. }
            | CreateJoinToken(_)
            | ListJoinTokens
            | DeleteJoinToken { .. }
            | Undrain { .. }
            | CreateToken(_)
            | ListTokens
            | DeleteToken { .. }
            | PutSecret { .. }
            | ListSecrets { .. }
            | DeleteSecret { .. }
            | StoreBackup
            | StoreFreeze => Access::Role(Role::Admin),
        }
    }

    /// True if it changes nothing: a server that does not lead can answer
    /// it from its own view.
    pub fn is_read(&self) -> bool {
        use ApiRequest::*;
        matches!(
            self,
            Page | Health
                | Metrics
                | OpenApi
                | Status { .. }
                | Logs { .. }
                | Versions { .. }
                | Events(_)
                | ClusterInfo
                | ListVolumes { .. }
                | ListWebhooks
                | ListJoinTokens
                | ListTokens
                | ListSecrets { .. }
                | StoreBackup
        )
    }

    /// A fixed label for metrics.
    pub fn route(&self) -> &'static str {
        use ApiRequest::*;
        match self {
            Page => "page",
            Health => "health",
            Metrics => "metrics",
            OpenApi => "openapi",
            Deploy(_) => "deploy",
            Status { .. } => "status",
            Scale { .. } => "scale",
            StopService { .. } => "stop_service",
            StopProject { .. } => "stop_project",
            StopAll => "stop_all",
            Logs { .. } => "logs",
            Promote { .. } => "promote",
            Run { .. } => "run",
            Rollback { .. } => "rollback",
            Versions { .. } => "versions",
            Exec { .. } => "exec",
            Attach { .. } => "exec_attach",
            Events(_) => "events",
            ClusterInfo => "cluster_info",
            StoreBackup => "store_backup",
            StoreFreeze => "store_freeze",
            Drain { .. } => "drain",
            Undrain { .. } => "undrain",
            RemoveNode { .. } => "node_remove",
            CreateJoinToken(_) => "join_tokens_create",
            ListJoinTokens => "join_tokens_list",
            DeleteJoinToken { .. } => "join_tokens_delete",
            GitWebhook(_) => "webhook_git",
            ListWebhooks => "webhooks_list",
            CreateWebhook(_) => "webhooks_create",
            DeleteWebhook { .. } => "webhooks_delete",
            CreateToken(_) => "tokens_create",
            ListTokens => "tokens_list",
            DeleteToken { .. } => "tokens_delete",
            PutSecret { .. } => "secrets_put",
            ListSecrets { .. } => "secrets_list",
            DeleteSecret { .. } => "secrets_delete",
            ListVolumes { .. } => "volumes_list",
            DeleteVolume { .. } => "volumes_delete",
            MoveVolume { .. } => "volumes_move",
            BackupVolume { .. } => "volumes_backup",
            RestoreVolume { .. } => "volumes_restore",
        }
    }
}

/// What the parser looks at.
pub struct RawRequest<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: Bytes,
}

/// The request being routed, as the per-resource parsers see it.
struct Call<'r, 'a> {
    raw: &'r RawRequest<'a>,
    /// The path without a trailing slash, for messages.
    path: &'r str,
}

impl Call<'_, '_> {
    fn method(&self) -> &Method {
        self.raw.method
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(format!("no such endpoint: {}", self.path))
    }

    fn wrong_method(&self, allowed: &str) -> ApiError {
        ApiError::method_not_allowed(format!(
            "method {} not allowed on {} (allowed: {allowed})",
            self.raw.method, self.path
        ))
    }

    /// Ok for `want`, else 405 naming it.
    fn only(&self, want: Method) -> Result<(), ApiError> {
        if *self.raw.method == want {
            Ok(())
        } else {
            Err(self.wrong_method(want.as_str()))
        }
    }
}

/// The access of routes that carry a JSON body, known from the path alone,
/// so the caller is authenticated before the body is judged: a client
/// without a token learns nothing about what it sent.
pub fn body_route_access(method: &Method, path: &str) -> Option<Access> {
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["api", "v1", "deploy"])
        | (&Method::POST, ["api", "v1", "services", _, "scale" | "rollback" | "exec"])
        | (&Method::POST, ["api", "v1", "webhooks"])
        | (&Method::POST, ["api", "v1", "volumes", _, _, "move"])
        | (&Method::PUT, ["api", "v1", "volumes", _, _, "restore"]) => {
            Some(Access::Role(Role::Deployer))
        }
        (&Method::POST, ["api", "v1", "tokens"])
        | (&Method::POST, ["api", "v1", "cluster", "join-tokens"])
        | (&Method::PUT, ["api", "v1", "secrets", _]) => Some(Access::Role(Role::Admin)),
        (&Method::POST, ["api", "v1", "webhooks", "github"]) => Some(Access::Signature),
        _ => None,
    }
}

/// Parses a request (see the module doc).
pub fn parse(raw: RawRequest<'_>) -> Result<ApiRequest, ApiError> {
    let path = raw
        .path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(raw.path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let call = Call { raw: &raw, path };
    let request = match segments.as_slice() {
        [""] => {
            call.only(Method::GET)?;
            ApiRequest::Page
        }
        ["metrics"] => {
            call.only(Method::GET)?;
            ApiRequest::Metrics
        }
        ["api", "v1", rest @ ..] => match rest {
            ["health"] => {
                call.only(Method::GET)?;
                ApiRequest::Health
            }
            ["openapi.json"] => {
                call.only(Method::GET)?;
                ApiRequest::OpenApi
            }
            ["deploy"] => {
                call.only(Method::POST)?;
                ApiRequest::Deploy(params::json(&raw.body)?)
            }
            ["status"] => {
                call.only(Method::GET)?;
                let mut project = None;
                for (k, v) in query_pairs(raw.query) {
                    if k == "project" && !v.is_empty() {
                        project = Some(checked_name("project", &v)?.to_string());
                    }
                }
                ApiRequest::Status { project }
            }
            ["stop"] => {
                call.only(Method::POST)?;
                ApiRequest::StopAll
            }
            ["events"] => events::parse(&call)?,
            ["projects", name] => {
                call.only(Method::DELETE)?;
                ApiRequest::StopProject {
                    name: checked_name("project", name)?.to_string(),
                }
            }
            ["services", rest @ ..] => services::parse(&call, rest)?,
            ["cluster", rest @ ..] => cluster::parse(&call, rest)?,
            ["webhooks", rest @ ..] => webhooks::parse(&call, rest)?,
            ["volumes", rest @ ..] => volumes::parse(&call, rest)?,
            ["tokens", rest @ ..] => credentials::tokens(&call, rest)?,
            ["secrets", rest @ ..] => credentials::secrets(&call, rest)?,
            ["store", "backup"] => {
                call.only(Method::GET)?;
                ApiRequest::StoreBackup
            }
            ["store", "freeze"] => {
                call.only(Method::POST)?;
                ApiRequest::StoreFreeze
            }
            _ => return Err(call.not_found()),
        },
        _ => return Err(call.not_found()),
    };
    Ok(request)
}

#[cfg(test)]
mod tests;
