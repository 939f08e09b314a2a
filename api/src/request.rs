//! Phase one of routing, pure: method, path, query, headers and body become
//! an [`ApiRequest`], or the right error (404 unknown path, 405 wrong
//! method, 400 bad JSON or name). Every name goes through
//! [`checked_name`](crate::names::checked_name).

use bytes::Bytes;
use http::{HeaderMap, Method};
use serde::de::DeserializeOwned;

use crate::auth::{Access, Role};
use crate::error::ApiError;
use crate::names::checked_name;
use crate::spec::{DeployRequest, ScaleRequest};
use crate::status::TokenRequest;

/// Largest `tail` accepted.
pub const MAX_TAIL: usize = 100_000;

/// A parsed API call.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    Health,
    Metrics,
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
    Rollback {
        name: String,
        version: Option<u64>,
    },
    Versions {
        name: String,
    },
    ClusterInfo,
    Drain {
        node: String,
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
    PutSecret {
        name: String,
        value: String,
    },
    ListSecrets,
    DeleteSecret {
        name: String,
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
            Health | Metrics => Access::Public,
            GitWebhook(_) => Access::Signature,
            Status { .. } | Logs { .. } | Versions { .. } | ClusterInfo | ListWebhooks => {
                Access::Role(Role::Viewer)
            }
            Deploy(_)
            | Scale { .. }
            | StopService { .. }
            | StopProject { .. }
            | Promote { .. }
            | Rollback { .. }
            | CreateWebhook(_)
            | DeleteWebhook { .. } => Access::Role(Role::Deployer),
            StopAll
            | Drain { .. }
            | Undrain { .. }
            | CreateToken(_)
            | ListTokens
            | DeleteToken { .. }
            | PutSecret { .. }
            | ListSecrets
            | DeleteSecret { .. } => Access::Role(Role::Admin),
        }
    }

    /// A fixed label for metrics.
    pub fn route(&self) -> &'static str {
        use ApiRequest::*;
        match self {
            Health => "health",
            Metrics => "metrics",
            Deploy(_) => "deploy",
            Status { .. } => "status",
            Scale { .. } => "scale",
            StopService { .. } => "stop_service",
            StopProject { .. } => "stop_project",
            StopAll => "stop_all",
            Logs { .. } => "logs",
            Promote { .. } => "promote",
            Rollback { .. } => "rollback",
            Versions { .. } => "versions",
            ClusterInfo => "cluster_info",
            Drain { .. } => "drain",
            Undrain { .. } => "undrain",
            GitWebhook(_) => "webhook_git",
            ListWebhooks => "webhooks_list",
            CreateWebhook(_) => "webhooks_create",
            DeleteWebhook { .. } => "webhooks_delete",
            CreateToken(_) => "tokens_create",
            ListTokens => "tokens_list",
            DeleteToken { .. } => "tokens_delete",
            PutSecret { .. } => "secrets_put",
            ListSecrets => "secrets_list",
            DeleteSecret { .. } => "secrets_delete",
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

fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(ApiError::bad_request("missing JSON body"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("malformed JSON: {e}")))
}

/// Secret names are environment-variable-like: `[A-Za-z_][A-Za-z0-9_]*`.
fn checked_secret_name(name: &str) -> Result<&str, ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.as_bytes()[0].is_ascii_digit()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(name)
    } else {
        Err(ApiError::bad_request(format!(
            "invalid secret name {:?}: letters, digits and '_', not starting with a digit",
            name.chars().take(80).collect::<String>()
        )))
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Decoded `key=value` pairs of a query string.
pub fn query_pairs(query: Option<&str>) -> Vec<(String, String)> {
    query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match u8::from_str_radix(
                    std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz"),
                    16,
                ) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn bool_param(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "true" | "1" | "yes" | "" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "invalid {name} {v:?}: use true or false"
        ))),
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
        | (&Method::POST, ["api", "v1", "services", _, "scale" | "rollback"])
        | (&Method::POST, ["api", "v1", "webhooks"]) => Some(Access::Role(Role::Deployer)),
        (&Method::POST, ["api", "v1", "tokens"]) | (&Method::PUT, ["api", "v1", "secrets", _]) => {
            Some(Access::Role(Role::Admin))
        }
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
    let m = raw.method;
    let not_found = || ApiError::not_found(format!("no such endpoint: {path}"));
    let wrong_method = |allowed: &str| {
        ApiError::method_not_allowed(format!(
            "method {m} not allowed on {path} (allowed: {allowed})"
        ))
    };
    let is = |want: Method| *m == want;

    let segs = segments.as_slice();
    let request = match segs {
        ["metrics"] => {
            if !is(Method::GET) {
                return Err(wrong_method("GET"));
            }
            ApiRequest::Metrics
        }
        ["api", "v1", rest @ ..] => match rest {
            ["health"] => {
                if !is(Method::GET) {
                    return Err(wrong_method("GET"));
                }
                ApiRequest::Health
            }
            ["deploy"] => {
                if !is(Method::POST) {
                    return Err(wrong_method("POST"));
                }
                ApiRequest::Deploy(json(&raw.body)?)
            }
            ["status"] => {
                if !is(Method::GET) {
                    return Err(wrong_method("GET"));
                }
                let mut project = None;
                for (k, v) in query_pairs(raw.query) {
                    if k == "project" && !v.is_empty() {
                        project = Some(checked_name("project", &v)?.to_string());
                    }
                }
                ApiRequest::Status { project }
            }
            ["stop"] => {
                if !is(Method::POST) {
                    return Err(wrong_method("POST"));
                }
                ApiRequest::StopAll
            }
            ["services", name] => {
                if !is(Method::DELETE) {
                    return Err(wrong_method("DELETE"));
                }
                ApiRequest::StopService {
                    name: checked_name("service name", name)?.to_string(),
                }
            }
            ["services", name, action] => {
                let name = checked_name("service name", name)?.to_string();
                match *action {
                    "scale" => {
                        if !is(Method::POST) {
                            return Err(wrong_method("POST"));
                        }
                        let body: ScaleRequest = json(&raw.body)?;
                        ApiRequest::Scale {
                            name,
                            replicas: body.replicas,
                        }
                    }
                    "logs" => {
                        if !is(Method::GET) {
                            return Err(wrong_method("GET"));
                        }
                        let (mut tail, mut follow) = (None, false);
                        for (k, v) in query_pairs(raw.query) {
                            match k.as_str() {
                                "tail" => {
                                    let n: usize = v.parse().map_err(|_| {
                                        ApiError::bad_request(format!(
                                            "invalid tail {v:?}: must be a number"
                                        ))
                                    })?;
                                    if n > MAX_TAIL {
                                        return Err(ApiError::bad_request(format!(
                                            "invalid tail {n}: at most {MAX_TAIL}"
                                        )));
                                    }
                                    tail = Some(n);
                                }
                                "follow" => follow = bool_param("follow", &v)?,
                                _ => {}
                            }
                        }
                        ApiRequest::Logs { name, tail, follow }
                    }
                    "promote" => {
                        if !is(Method::POST) {
                            return Err(wrong_method("POST"));
                        }
                        ApiRequest::Promote { name }
                    }
                    "rollback" => {
                        if !is(Method::POST) {
                            return Err(wrong_method("POST"));
                        }
                        let version = if raw.body.iter().all(|b| b.is_ascii_whitespace()) {
                            None
                        } else {
                            #[derive(serde::Deserialize)]
                            #[serde(deny_unknown_fields)]
                            struct Body {
                                version: Option<u64>,
                            }
                            json::<Body>(&raw.body)?.version
                        };
                        ApiRequest::Rollback { name, version }
                    }
                    "versions" => {
                        if !is(Method::GET) {
                            return Err(wrong_method("GET"));
                        }
                        ApiRequest::Versions { name }
                    }
                    _ => return Err(not_found()),
                }
            }
            ["projects", name] => {
                if !is(Method::DELETE) {
                    return Err(wrong_method("DELETE"));
                }
                ApiRequest::StopProject {
                    name: checked_name("project", name)?.to_string(),
                }
            }
            ["cluster", "info"] => {
                if !is(Method::GET) {
                    return Err(wrong_method("GET"));
                }
                ApiRequest::ClusterInfo
            }
            ["cluster", "nodes", node, action @ ("drain" | "undrain")] => {
                if !is(Method::POST) {
                    return Err(wrong_method("POST"));
                }
                let node = checked_name("node id", node)?.to_string();
                if *action == "drain" {
                    ApiRequest::Drain { node }
                } else {
                    ApiRequest::Undrain { node }
                }
            }
            ["webhooks"] => match *m {
                Method::GET => ApiRequest::ListWebhooks,
                Method::POST => {
                    // Never echo a parse error: the body holds a secret.
                    let body: crate::status::WebhookRequest = serde_json::from_slice(&raw.body).map_err(|_| {
                        ApiError::bad_request("malformed JSON: expected {\"repo\", \"service\", \"branch\", \"secret\"}")
                    })?;
                    body.validate()?;
                    ApiRequest::CreateWebhook(body)
                }
                _ => return Err(wrong_method("GET, POST")),
            },
            ["webhooks", "github"] => {
                if !is(Method::POST) {
                    return Err(wrong_method("POST"));
                }
                let h = raw.headers;
                ApiRequest::GitWebhook(GitWebhook {
                    event: header(h, "x-github-event").or_else(|| header(h, "x-gitea-event")),
                    github_signature: header(h, "x-hub-signature-256"),
                    gitea_signature: header(h, "x-gitea-signature"),
                    delivery: header(h, "x-github-delivery")
                        .or_else(|| header(h, "x-gitea-delivery")),
                    body: raw.body.clone(),
                })
            }
            ["webhooks", id] => {
                if !is(Method::DELETE) {
                    return Err(wrong_method("DELETE"));
                }
                ApiRequest::DeleteWebhook {
                    id: checked_name("webhook id", id)?.to_string(),
                }
            }
            ["tokens"] => match *m {
                Method::GET => ApiRequest::ListTokens,
                Method::POST => {
                    let body: TokenRequest = json(&raw.body)?;
                    checked_name("token name", &body.name)?;
                    ApiRequest::CreateToken(body)
                }
                _ => return Err(wrong_method("GET, POST")),
            },
            ["secrets"] => {
                if !is(Method::GET) {
                    return Err(wrong_method("GET"));
                }
                ApiRequest::ListSecrets
            }
            ["secrets", name] => {
                let name = checked_secret_name(name)?.to_string();
                match *m {
                    Method::PUT => {
                        #[derive(serde::Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Body {
                            value: String,
                        }
                        // The parser's message could quote the value: say less.
                        let body: Body = serde_json::from_slice(&raw.body).map_err(|_| {
                            ApiError::bad_request("malformed JSON: expected {\"value\": \"...\"}")
                        })?;
                        ApiRequest::PutSecret {
                            name,
                            value: body.value,
                        }
                    }
                    Method::DELETE => ApiRequest::DeleteSecret { name },
                    _ => return Err(wrong_method("PUT, DELETE")),
                }
            }
            ["tokens", name] => {
                if !is(Method::DELETE) {
                    return Err(wrong_method("DELETE"));
                }
                ApiRequest::DeleteToken {
                    name: checked_name("token name", name)?.to_string(),
                }
            }
            _ => return Err(not_found()),
        },
        _ => return Err(not_found()),
    };
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(method: Method, path_and_query: &str, body: &str) -> Result<ApiRequest, ApiError> {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        parse(RawRequest {
            method: &method,
            path,
            query,
            headers: &HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        })
    }

    #[test]
    fn seed_routes() {
        assert_eq!(
            p(Method::GET, "/api/v1/health", "").unwrap(),
            ApiRequest::Health
        );
        assert_eq!(p(Method::GET, "/metrics", "").unwrap(), ApiRequest::Metrics);
        assert!(matches!(
            p(Method::POST, "/api/v1/deploy", r#"{"services":[]}"#).unwrap(),
            ApiRequest::Deploy(_)
        ));
        assert_eq!(
            p(Method::GET, "/api/v1/status?project=frontend", "").unwrap(),
            ApiRequest::Status {
                project: Some("frontend".into())
            }
        );
        assert_eq!(
            p(Method::GET, "/api/v1/status", "").unwrap(),
            ApiRequest::Status { project: None }
        );
        assert_eq!(
            p(
                Method::POST,
                "/api/v1/services/my-app/scale",
                r#"{"replicas":5}"#
            )
            .unwrap(),
            ApiRequest::Scale {
                name: "my-app".into(),
                replicas: 5
            }
        );
        assert_eq!(
            p(Method::DELETE, "/api/v1/services/my-app", "").unwrap(),
            ApiRequest::StopService {
                name: "my-app".into()
            }
        );
        assert_eq!(
            p(Method::DELETE, "/api/v1/projects/frontend", "").unwrap(),
            ApiRequest::StopProject {
                name: "frontend".into()
            }
        );
        assert_eq!(
            p(Method::POST, "/api/v1/stop", "").unwrap(),
            ApiRequest::StopAll
        );
        assert_eq!(
            p(Method::GET, "/api/v1/services/my-app/logs?tail=100", "").unwrap(),
            ApiRequest::Logs {
                name: "my-app".into(),
                tail: Some(100),
                follow: false
            }
        );
        assert_eq!(
            p(Method::GET, "/api/v1/services/my-app/logs?follow=true", "").unwrap(),
            ApiRequest::Logs {
                name: "my-app".into(),
                tail: None,
                follow: true
            }
        );
        assert_eq!(
            p(Method::POST, "/api/v1/services/my-app/promote", "").unwrap(),
            ApiRequest::Promote {
                name: "my-app".into()
            }
        );
        assert_eq!(
            p(Method::POST, "/api/v1/services/my-app/rollback", "").unwrap(),
            ApiRequest::Rollback {
                name: "my-app".into(),
                version: None
            }
        );
        assert_eq!(
            p(
                Method::POST,
                "/api/v1/services/my-app/rollback",
                r#"{"version":3}"#
            )
            .unwrap(),
            ApiRequest::Rollback {
                name: "my-app".into(),
                version: Some(3)
            }
        );
        assert_eq!(
            p(Method::GET, "/api/v1/cluster/info", "").unwrap(),
            ApiRequest::ClusterInfo
        );
        assert_eq!(
            p(Method::POST, "/api/v1/cluster/nodes/worker-1/drain", "").unwrap(),
            ApiRequest::Drain {
                node: "worker-1".into()
            }
        );
        assert_eq!(
            p(Method::POST, "/api/v1/cluster/nodes/worker-1/undrain", "").unwrap(),
            ApiRequest::Undrain {
                node: "worker-1".into()
            }
        );
        assert!(matches!(
            p(Method::POST, "/api/v1/webhooks/github", "{}").unwrap(),
            ApiRequest::GitWebhook(_)
        ));
        assert_eq!(
            p(Method::GET, "/api/v1/webhooks", "").unwrap(),
            ApiRequest::ListWebhooks
        );
        assert_eq!(
            p(Method::GET, "/api/v1/health/", "").unwrap(),
            ApiRequest::Health
        );
    }

    #[test]
    fn errors() {
        let status = |r: Result<ApiRequest, ApiError>| r.unwrap_err().status;
        assert_eq!(status(p(Method::GET, "/api/v1/nope", "")), 404);
        assert_eq!(status(p(Method::GET, "/", "")), 404);
        assert_eq!(
            status(p(Method::GET, "/api/v1/services/web/explode", "")),
            404
        );
        assert_eq!(status(p(Method::POST, "/api/v1/health", "")), 405);
        assert_eq!(status(p(Method::GET, "/api/v1/deploy", "")), 405);
        assert_eq!(status(p(Method::PUT, "/api/v1/services/web", "")), 405);
        assert_eq!(status(p(Method::POST, "/api/v1/deploy", "{not json")), 400);
        assert_eq!(status(p(Method::POST, "/api/v1/deploy", "")), 400);
        assert_eq!(
            status(p(
                Method::POST,
                "/api/v1/services/web/scale",
                r#"{"replicas":"x"}"#
            )),
            400
        );
        assert_eq!(status(p(Method::DELETE, "/api/v1/services/A_B", "")), 400);
        assert_eq!(status(p(Method::DELETE, "/api/v1/services/..", "")), 400);
        assert_eq!(
            status(p(Method::GET, "/api/v1/services/web/logs?tail=abc", "")),
            400
        );
        assert_eq!(
            status(p(
                Method::GET,
                "/api/v1/services/web/logs?tail=999999999",
                ""
            )),
            400
        );
        assert_eq!(
            status(p(Method::GET, "/api/v1/status?project=Bad_P", "")),
            400
        );
        let e = p(Method::POST, "/api/v1/deploy", "{").unwrap_err();
        assert!(e.message.starts_with("malformed JSON"), "{}", e.message);
    }

    #[test]
    fn access_rules() {
        assert_eq!(ApiRequest::Health.access(), Access::Public);
        assert_eq!(
            ApiRequest::Status { project: None }.access(),
            Access::Role(Role::Viewer)
        );
        assert_eq!(
            ApiRequest::Scale {
                name: "a".into(),
                replicas: 1
            }
            .access(),
            Access::Role(Role::Deployer)
        );
        assert_eq!(ApiRequest::StopAll.access(), Access::Role(Role::Admin));
        assert_eq!(
            ApiRequest::Drain { node: "n".into() }.access(),
            Access::Role(Role::Admin)
        );
    }

    #[test]
    fn body_routes_agree_with_the_parser() {
        let cases = [
            (Method::POST, "/api/v1/deploy", r#"{"services":[]}"#),
            (
                Method::POST,
                "/api/v1/services/web/scale",
                r#"{"replicas":1}"#,
            ),
            (Method::POST, "/api/v1/services/web/rollback", ""),
            (
                Method::POST,
                "/api/v1/webhooks",
                r#"{"repo":"o/r","service":"web","secret":"12345678"}"#,
            ),
            (Method::PUT, "/api/v1/secrets/A", r#"{"value":"x"}"#),
            (
                Method::POST,
                "/api/v1/tokens",
                r#"{"name":"ci","role":"viewer"}"#,
            ),
            (Method::POST, "/api/v1/webhooks/github", "{}"),
        ];
        for (m, path, body) in cases {
            let parsed = p(m.clone(), path, body).unwrap();
            assert_eq!(body_route_access(&m, path), Some(parsed.access()), "{path}");
        }
        assert_eq!(body_route_access(&Method::GET, "/api/v1/status"), None);
    }

    #[test]
    fn query_decoding() {
        assert_eq!(
            query_pairs(Some("a=b%20c&d=&e")),
            vec![
                ("a".into(), "b c".into()),
                ("d".into(), "".into()),
                ("e".into(), "".into())
            ]
        );
        assert_eq!(query_pairs(Some("x=%zz")), vec![("x".into(), "%zz".into())]);
        assert_eq!(query_pairs(Some("x=%4")), vec![("x".into(), "%4".into())]);
    }
}
