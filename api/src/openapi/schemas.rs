//! The document's component schemas: the API's own types through their
//! `JsonSchema` derives (requests as they are read, answers as they are
//! written), and the small answers built in place by the handlers.

use schemars::generate::SchemaSettings;
use serde_json::{json, Map, Value};

use crate::spec::{DeployRequest, DeployResponse, ScaleRequest};
use crate::status::{
    ClusterInfo, ExecRequest, ExecResponse, JoinTokenCreated, JoinTokenInfo, JoinTokenRequest,
    StatusResponse, TokenCreated, TokenRequest, VersionInfo, WebhookRequest,
};

const PREFIX: &str = "#/components/schemas/";

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("{PREFIX}{name}") })
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn nullable_string() -> Value {
    json!({ "type": ["string", "null"] })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

/// An object with these properties, all of them required.
fn object(properties: &[(&str, Value)]) -> Value {
    let required: Vec<&str> = properties.iter().map(|(k, _)| *k).collect();
    let props: Map<String, Value> = properties
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    json!({ "type": "object", "required": required, "properties": props })
}

/// The answers the handlers build in place, and bodies read by hand.
fn by_hand() -> Vec<(&'static str, Value)> {
    let generation = ("generation", integer());
    let mut version_change = object(&[
        ("name", string()),
        ("version", integer()),
        generation.clone(),
    ]);
    version_change["properties"]["rolled_back_to"] = integer();
    version_change["properties"]["removed_canary"] = integer();
    version_change["description"] = json!(
        "The version the service runs now; `rolled_back_to` after a rollback, `removed_canary` when a rollback dropped a canary."
    );
    let invocation = object(&[
        ("at", string()),
        ("delivery", nullable_string()),
        ("event", string()),
        ("result", string()),
    ]);
    vec![
        (
            "Error",
            json!({
                "type": "object",
                "required": ["error"],
                "properties": { "error": { "type": "string", "description": "What went wrong, for people." } },
                "description": "Every error. A deploy that did nothing also carries its DeployResponse fields.",
            }),
        ),
        (
            "Health",
            object(&[
                ("status", json!({ "enum": ["ok", "degraded"] })),
                ("containerd", json!({ "enum": ["up", "down"] })),
                ("node", string()),
            ]),
        ),
        (
            "OpenApiDocument",
            json!({ "type": "object", "required": ["openapi", "paths"] }),
        ),
        (
            "Stopped",
            object(&[("stopped", strings()), generation.clone()]),
        ),
        (
            "Scaled",
            object(&[
                ("name", string()),
                ("replicas", integer()),
                ("version", integer()),
                generation.clone(),
            ]),
        ),
        ("VersionChange", version_change),
        (
            "RunStarted",
            object(&[("name", string()), ("run", integer())]),
        ),
        (
            "RollbackRequest",
            json!({
                "type": "object",
                "additionalProperties": false,
                "properties": { "version": { "type": "integer", "minimum": 0, "description": "Default: the version before the current one." } },
            }),
        ),
        (
            "Versions",
            object(&[
                ("name", string()),
                ("current", integer()),
                (
                    "versions",
                    json!({ "type": "array", "items": reference("VersionInfo") }),
                ),
            ]),
        ),
        (
            "Drained",
            object(&[
                ("node", string()),
                ("drained", json!({ "type": "boolean" })),
                ("deadline", nullable_string()),
            ]),
        ),
        (
            "NodeRemoved",
            object(&[
                ("node", string()),
                ("removed", json!({ "type": "boolean" })),
                ("instances", integer()),
            ]),
        ),
        (
            "JoinTokens",
            object(&[(
                "tokens",
                json!({ "type": "array", "items": reference("JoinTokenInfo") }),
            )]),
        ),
        (
            "JoinTokenRevoked",
            object(&[("id", string()), ("revoked", json!({ "type": "boolean" }))]),
        ),
        ("Invocation", invocation),
        ("Webhook", {
            let mut hook = object(&[
                ("id", string()),
                ("repo", string()),
                ("service", string()),
                ("branch", string()),
                ("created_at", string()),
                (
                    "invocations",
                    json!({ "type": "array", "items": reference("Invocation") }),
                ),
            ]);
            hook["properties"]["project"] = json!({
                "type": ["string", "null"],
                "description": "The service's project when the webhook was registered (null: registered before webhooks had one)",
            });
            hook
        }),
        (
            "Webhooks",
            object(&[(
                "webhooks",
                json!({ "type": "array", "items": reference("Webhook") }),
            )]),
        ),
        (
            "GitPush",
            json!({
                "type": "object",
                "description": "A push event as GitHub or Gitea sends it; `ref`, `after` (the commit) and `repository.full_name` are read.",
            }),
        ),
        (
            "WebhookResults",
            object(&[(
                "results",
                json!({ "type": "array", "items": object(&[("webhook", string()), ("result", string())]) }),
            )]),
        ),
        ("Deleted", object(&[("deleted", string())])),
        (
            "Tokens",
            object(&[(
                "tokens",
                json!({ "type": "array", "items": object(&[
                    ("name", string()),
                    ("role", reference("Role")),
                    ("project", nullable_string()),
                    ("source", json!({ "enum": ["config", "api"] })),
                ]) }),
            )]),
        ),
        (
            "SecretRequest",
            json!({
                "type": "object",
                "required": ["value"],
                "additionalProperties": false,
                "properties": { "value": string(), "project": string() },
            }),
        ),
        (
            "SecretStored",
            object(&[
                ("project", string()),
                ("name", string()),
                ("stored", json!({ "type": "boolean" })),
            ]),
        ),
        (
            "Secrets",
            object(&[("project", string()), ("secrets", strings())]),
        ),
        (
            "SecretDeleted",
            object(&[("project", string()), ("deleted", string())]),
        ),
    ]
}

fn generator(contract: SchemaSettings) -> schemars::SchemaGenerator {
    contract
        .with(|s| {
            s.definitions_path = PREFIX.into();
            s.meta_schema = None;
        })
        .into_generator()
}

/// The derived schemas: of what is read (request bodies) and of what is
/// written (answers), each with the types they refer to.
pub fn derived() -> (Map<String, Value>, Map<String, Value>) {
    let mut read = generator(SchemaSettings::draft2020_12().for_deserialize());
    read.subschema_for::<DeployRequest>();
    read.subschema_for::<ScaleRequest>();
    read.subschema_for::<ExecRequest>();
    read.subschema_for::<JoinTokenRequest>();
    read.subschema_for::<WebhookRequest>();
    read.subschema_for::<TokenRequest>();
    read.subschema_for::<crate::request::MoveVolumeRequest>();
    let mut written = generator(SchemaSettings::draft2020_12().for_serialize());
    written.subschema_for::<DeployResponse>();
    written.subschema_for::<StatusResponse>();
    written.subschema_for::<ClusterInfo>();
    written.subschema_for::<ExecResponse>();
    written.subschema_for::<TokenCreated>();
    written.subschema_for::<JoinTokenCreated>();
    written.subschema_for::<JoinTokenInfo>();
    written.subschema_for::<VersionInfo>();
    written.subschema_for::<crate::volumes::VolumesResponse>();
    written.subschema_for::<crate::volumes::VolumeMoved>();
    written.subschema_for::<crate::volumes::VolumeRestored>();
    written.subschema_for::<crate::store::StoreSnapshot>();
    (read.take_definitions(true), written.take_definitions(true))
}

/// Every component schema, by name. A type both read and written has one
/// schema under both contracts (checked in the tests).
pub fn components() -> Map<String, Value> {
    let (read, written) = derived();
    let mut out = read;
    for (name, schema) in written {
        out.entry(name).or_insert(schema);
    }
    for (name, schema) in by_hand() {
        out.insert(name.to_string(), schema);
    }
    out
}
