//! The document against the parser, both ways: every documented operation
//! parses to its own route, and every (method, path) the parser routes is
//! documented, over every path built from the words the parser matches.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use serde_json::Value;

use super::routes::Route;
use super::table::routes;
use super::*;
use crate::request::{parse, RawRequest};

const METHODS: [Method; 5] = [
    Method::GET,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::PATCH,
];

fn filled(path: &str) -> String {
    path.split('/')
        .map(|s| match s {
            "{name}" => "web",
            "{project}" => "shop",
            "{id}" => "n1",
            "{secret}" => "API_KEY",
            other => other,
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn websocket_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("connection", HeaderValue::from_static("Upgrade"));
    h.insert(
        "sec-websocket-key",
        HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
    );
    h.insert("sec-websocket-version", HeaderValue::from_static("13"));
    h
}

#[test]
fn every_documented_operation_parses_to_its_route() {
    for route in routes() {
        let method = Method::from_bytes(route.method.to_uppercase().as_bytes()).unwrap();
        let path = filled(route.path);
        let headers = if route.op == "exec_attach" {
            websocket_headers()
        } else {
            HeaderMap::new()
        };
        let query = (route.op == "exec_attach").then_some("command=ls");
        let body = route
            .body
            .map(|b| Bytes::from_static(b.example.as_bytes()))
            .unwrap_or_default();
        let parsed = parse(RawRequest {
            method: &method,
            path: &path,
            query,
            headers: &headers,
            body,
        })
        .unwrap_or_else(|e| panic!("{} {path}: {e}", route.method));
        assert_eq!(parsed.route(), route.op, "{} {path}", route.method);
        assert_eq!(parsed.access(), route.access, "{}", route.op);
    }
}

#[test]
fn operation_ids_and_routes_are_unique() {
    let mut ops = BTreeSet::new();
    let mut keys = BTreeSet::new();
    for r in routes() {
        assert!(ops.insert(r.op), "operation {} twice", r.op);
        assert!(
            keys.insert((r.method, r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
    }
}

/// Every quoted lowercase word in the parser's sources: whatever a path
/// segment is matched against.
fn vocabulary() -> Vec<String> {
    let sources = [
        include_str!("../request/mod.rs"),
        include_str!("../request/services.rs"),
        include_str!("../request/cluster.rs"),
        include_str!("../request/credentials.rs"),
        include_str!("../request/webhooks.rs"),
        include_str!("../request/events.rs"),
        include_str!("../request/volumes.rs"),
    ];
    let mut words = BTreeSet::new();
    for source in sources {
        for (i, part) in source.split('"').enumerate() {
            let word = i % 2 == 1
                && !part.is_empty()
                && part.len() < 20
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-._".contains(&b));
            if word {
                words.insert(part.to_string());
            }
        }
    }
    words.insert("x1".into());
    words.into_iter().collect()
}

fn template_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && t.ends_with('}')))
}

fn documented(method: &Method, path: &str) -> Option<&'static Route> {
    let path = path
        .strip_suffix('/')
        .filter(|p| !p.is_empty())
        .unwrap_or(path);
    routes()
        .find(|r| r.method.eq_ignore_ascii_case(method.as_str()) && template_matches(r.path, path))
}

/// Parses `method path` (with WebSocket headers, so the interactive exec
/// routes too) and checks that whatever is routed is documented.
fn check(method: &Method, path: &str, headers: &HeaderMap, seen: &mut BTreeSet<&'static str>) {
    let parsed = parse(RawRequest {
        method,
        path,
        query: None,
        headers,
        body: Bytes::new(),
    });
    let routed = match &parsed {
        Ok(_) => true,
        // A bad body or name: routed, judged afterwards.
        Err(e) => e.status != 404 && e.status != 405,
    };
    if !routed {
        return;
    }
    let route = documented(method, path)
        .unwrap_or_else(|| panic!("{method} {path} is routed ({parsed:?}) but not documented"));
    if let Ok(request) = parsed {
        assert_eq!(request.route(), route.op, "{method} {path}");
    }
    seen.insert(route.op);
}

#[test]
fn every_routed_path_is_documented() {
    let words = vocabulary();
    assert!(words.iter().any(|w| w == "join-tokens"), "{words:?}");
    let ws = websocket_headers();
    let none = HeaderMap::new();
    let mut seen = BTreeSet::new();
    let mut paths = vec!["/".to_string()];
    for a in &words {
        paths.push(format!("/{a}"));
        paths.push(format!("/api/v1/{a}"));
        for b in &words {
            paths.push(format!("/{a}/{b}"));
            paths.push(format!("/api/v1/{a}/{b}"));
            for c in &words {
                paths.push(format!("/api/v1/{a}/{b}/{c}"));
                // Four segments: a name in the second or the third place.
                paths.push(format!("/api/v1/{a}/x1/{b}/{c}"));
                paths.push(format!("/api/v1/{a}/{b}/x1/{c}"));
            }
        }
    }
    for path in &paths {
        for method in &METHODS {
            check(method, path, &none, &mut seen);
        }
        check(&Method::GET, path, &ws, &mut seen);
    }
    // And the enumeration reached every documented operation.
    let all: BTreeSet<&str> = routes().map(|r| r.op).collect();
    assert_eq!(seen, all);
}

fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push(r);
                    }
                }
                refs(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn the_document_holds_together() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(found.len() > 40, "{}", found.len());
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(schemas.contains_key(name), "{r} is not defined");
    }
    for route in routes() {
        let op = &doc["paths"][route.path][route.method];
        assert_eq!(op["operationId"], route.op);
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|k| k.starts_with('2') || k == "101"),
            "{}",
            route.op
        );
        assert!(responses.contains_key("400"), "{}", route.op);
        for param in route.path.split('/').filter(|s| s.starts_with('{')) {
            let name = param.trim_matches(|c| c == '{' || c == '}');
            assert!(
                op["parameters"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "path"),
                "{} lacks {name}",
                route.op
            );
        }
        if let Some(body) = route.body {
            let example: Value = serde_json::from_str(body.example).unwrap();
            assert_eq!(
                op["requestBody"]["content"]["application/json"]["example"],
                example
            );
        }
    }
    // The derived schemas carry the fields the seed API names.
    let spec = &schemas["ServiceSpec"]["properties"];
    for field in [
        "name", "project", "image", "replicas", "port", "domain", "health",
    ] {
        assert!(spec.get(field).is_some(), "ServiceSpec.{field}");
    }
    assert_eq!(
        schemas["ServiceSpec"]["required"],
        serde_json::json!(["name"])
    );
    assert!(schemas["ServiceStatus"]["required"]
        .as_array()
        .unwrap()
        .contains(&"running_replicas".into()));
    // Served as encoded.
    let served: Value = serde_json::from_slice(&document_bytes()).unwrap();
    assert_eq!(served, doc);
}

#[test]
fn a_type_read_and_written_has_one_schema() {
    let (read, written) = schemas::derived();
    let mut shared = 0;
    for (name, schema) in &read {
        if let Some(other) = written.get(name) {
            assert_eq!(schema, other, "{name} differs between request and answer");
            shared += 1;
        }
    }
    // Role is in both (token requests and answers).
    assert!(shared >= 1);
}
