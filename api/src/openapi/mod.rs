//! The OpenAPI 3.1 document of the API, served at
//! `GET /api/v1/openapi.json`: built once from the route table
//! ([`table::routes`]) and the component schemas ([`schemas`]).

use std::sync::OnceLock;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::auth::Access;

pub mod routes;
mod schemas;
pub mod table;
mod table_jobs;
mod table_store;
mod table_volumes;

use routes::{Kind, Reply, Route};
use table::routes;

/// A DNS label: service, project, node, token and webhook names and ids.
const LABEL: &str = crate::names::LABEL_PATTERN;
/// A secret's name.
const SECRET: &str = "^[A-Za-z_][A-Za-z0-9_]{0,127}$";

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad request: malformed JSON, an invalid name or value",
        401 => "Missing or invalid token (or signature)",
        403 => "The token's role or project does not allow this",
        404 => "No such service, node, token or other resource",
        409 => "In conflict with what exists",
        413 => "Request body too large",
        429 => "Too many failed authentications from this address; try again in a second",
        500 => "Internal error",
        503 => "Not available on this server (for example, it keeps no secrets)",
        507 => "The server's data directory is full; nothing was changed",
        _ => "Error",
    }
}

fn error_response(status: u16) -> Value {
    let mut r = json!({
        "description": reason(status),
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    });
    if status == 401 {
        r["headers"] = json!({ "WWW-Authenticate": { "schema": { "type": "string" } } });
    }
    if status == 429 {
        r["headers"] = json!({ "Retry-After": { "schema": { "type": "string" } } });
    }
    r
}

fn success(reply: Reply) -> (u16, Value) {
    let text = |media: &str, about: &str| json!({ "description": about, "content": { media: { "schema": { "type": "string" } } } });
    match reply {
        Reply::Json(status, schema) => (
            status,
            json!({
                "description": "OK",
                "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } },
            }),
        ),
        Reply::Text => (200, text("text/plain", "Log lines")),
        Reply::Metrics => (200, text("text/plain", "Prometheus text format")),
        Reply::Html => (200, text("text/html", "The status page")),
        Reply::Events => (
            200,
            text(
                "text/event-stream",
                "Events, each with an id and JSON data naming what it concerns",
            ),
        ),
        Reply::Binary(media) => (
            200,
            json!({ "description": "An archive", "content": { media: { "schema": { "type": "string", "format": "binary" } } } }),
        ),
        Reply::Upgrade => (
            101,
            json!({ "description": "Switched to a WebSocket (send Upgrade: websocket, Connection: Upgrade, Sec-WebSocket-Key and Sec-WebSocket-Version: 13)" }),
        ),
    }
}

fn path_parameters(path: &str) -> Vec<Value> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        .map(|name| {
            let (pattern, about) = match name {
                "secret" => (SECRET, "a secret's name: letters, digits and '_'"),
                "id" => (LABEL, "an id (a DNS label)"),
                "project" => (LABEL, "a project (a DNS label)"),
                _ => (LABEL, "a name (a DNS label)"),
            };
            json!({
                "name": name, "in": "path", "required": true, "description": about,
                "schema": { "type": "string", "pattern": pattern, "maxLength": 128 },
            })
        })
        .collect()
}

fn query_parameters(route: &Route) -> Vec<Value> {
    route
        .query
        .iter()
        .map(|p| {
            let schema = match p.kind {
                Kind::Text => json!({ "type": "string" }),
                Kind::Name => json!({ "type": "string", "pattern": LABEL }),
                Kind::Number(min, max) => {
                    json!({ "type": "integer", "minimum": min, "maximum": max })
                }
                Kind::Bool => json!({ "type": "boolean" }),
                Kind::List => json!({ "type": "array", "items": { "type": "string" } }),
            };
            let mut param = json!({
                "name": p.name, "in": "query", "required": false,
                "description": p.about, "schema": schema,
            });
            if p.kind == Kind::List {
                param["style"] = json!("form");
                param["explode"] = json!(true);
            }
            param
        })
        .collect()
}

fn header(name: &str, about: &str) -> Value {
    json!({ "name": name, "in": "header", "required": false, "description": about, "schema": { "type": "string" } })
}

fn header_parameters(route: &Route) -> Vec<Value> {
    match route.op {
        "events" => vec![header("Last-Event-ID", "resume after this event id")],
        "webhook_git" => vec![
            header("X-GitHub-Event", "the event (`push`); or X-Gitea-Event"),
            header(
                "X-Hub-Signature-256",
                "`sha256=` and the HMAC-SHA256 of the body; or X-Gitea-Signature",
            ),
            header(
                "X-GitHub-Delivery",
                "the delivery's id (a replay is ignored); or X-Gitea-Delivery",
            ),
        ],
        _ => Vec::new(),
    }
}

fn operation(route: &Route) -> Value {
    let mut op = json!({
        "operationId": route.op,
        "summary": route.summary,
        "tags": [route.tag],
    });
    match route.access {
        Access::Public => op["security"] = json!([]),
        Access::Signature => {
            op["security"] = json!([]);
            op["x-orca-access"] = json!("signature");
        }
        Access::Role(role) => {
            op["security"] = json!([{ "bearer": [] }]);
            op["x-orca-role"] = json!(role.as_str());
        }
    }
    let parameters: Vec<Value> = path_parameters(route.path)
        .into_iter()
        .chain(query_parameters(route))
        .chain(header_parameters(route))
        .collect();
    if !parameters.is_empty() {
        op["parameters"] = Value::Array(parameters);
    }
    if let Some(body) = route.body {
        let example: Value = serde_json::from_str(body.example).unwrap_or(Value::Null);
        op["requestBody"] = json!({
            "required": body.required,
            "content": { "application/json": {
                "schema": { "$ref": format!("#/components/schemas/{}", body.schema) },
                "example": example,
            } },
        });
    }
    if route.op == "volumes_restore" {
        op["requestBody"] = json!({
            "required": true,
            "content": { "application/octet-stream": { "schema": { "type": "string", "format": "binary", "description": "a tar.gz" } } },
        });
    }
    let mut responses = Map::new();
    for reply in route.replies {
        let (status, response) = success(*reply);
        responses.insert(status.to_string(), response);
    }
    for status in route.errors {
        responses.insert(status.to_string(), error_response(*status));
    }
    op["responses"] = Value::Object(responses);
    op
}

/// The document.
pub fn document() -> Value {
    let mut paths = Map::new();
    for route in routes() {
        let entry = paths
            .entry(route.path.to_string())
            .or_insert_with(|| json!({}));
        entry[route.method] = operation(route);
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "orca",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "orca's REST API. Every error is JSON: {\"error\": \"...\"}. Send `Authorization: Bearer <token>`; `x-orca-role` names the least role an operation needs (viewer < deployer < admin).",
        },
        "tags": [
            { "name": "services", "description": "Deploy, scale, stop, logs, rollouts, exec" },
            { "name": "cluster", "description": "Nodes, drains, join tokens" },
            { "name": "webhooks", "description": "Deploy on git push" },
            { "name": "volumes", "description": "Named volumes: list, delete, move" },
            { "name": "access", "description": "API tokens and secrets" },
            { "name": "status", "description": "Health, metrics, events, the status page, this document" },
        ],
        "paths": paths,
        "components": {
            "schemas": schemas::components(),
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
        },
    })
}

/// The document as served, encoded once.
pub fn document_bytes() -> Bytes {
    static ENCODED: OnceLock<Bytes> = OnceLock::new();
    ENCODED
        .get_or_init(|| Bytes::from(document().to_string()))
        .clone()
}

#[cfg(test)]
mod tests;
