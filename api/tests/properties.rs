//! Properties of the API's input handling, for any input (proptest): the
//! request parser never panics and answers a request or a 4xx; valid
//! calls route to exactly their action and valid deploy bodies parse to
//! exactly their specs; a deploy body's specs validate or give a 4xx;
//! names, specs and interactive exec queries read back what was printed.

#![allow(clippy::unwrap_used)]

use api::attach::AttachRequest;
use api::names::checked_name;
use api::request::{parse, ApiRequest, RawRequest};
use api::spec::ServiceSpec;
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method};
use proptest::prelude::*;

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::GET),
        Just(Method::POST),
        Just(Method::PUT),
        Just(Method::DELETE),
        Just(Method::PATCH),
        Just(Method::HEAD),
    ]
}

/// Paths near the routes (known segments, any names), and any text.
fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        Just("api".to_string()),
        Just("v1".to_string()),
        Just("deploy".to_string()),
        Just("status".to_string()),
        Just("services".to_string()),
        Just("projects".to_string()),
        Just("cluster".to_string()),
        Just("nodes".to_string()),
        Just("join-tokens".to_string()),
        Just("tokens".to_string()),
        Just("secrets".to_string()),
        Just("webhooks".to_string()),
        Just("events".to_string()),
        Just("exec".to_string()),
        Just("logs".to_string()),
        Just("scale".to_string()),
        Just("drain".to_string()),
        "[a-z0-9.%_-]{0,12}",
        ".{0,8}",
    ];
    prop_oneof![
        proptest::collection::vec(segment, 0..7).prop_map(|s| format!("/{}", s.join("/"))),
        proptest::collection::vec(prop_oneof![Just("api/v1".to_string()), "[a-z]{1,8}"], 1..5)
            .prop_map(|s| format!("/{}/", s.join("/"))),
        ".{0,40}",
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        json_text().prop_map(String::into_bytes),
    ]
}

/// JSON of any shape, often near a deploy request's.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::json!(f)),
        ".{0,20}".prop_map(serde_json::Value::from),
        "[a-z0-9-]{0,70}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let key = prop_oneof![
            Just("services".to_string()),
            Just("name".to_string()),
            Just("image".to_string()),
            Just("replicas".to_string()),
            Just("project".to_string()),
            Just("port".to_string()),
            Just("domain".to_string()),
            Just("env".to_string()),
            Just("resources".to_string()),
            Just("memory".to_string()),
            Just("placement".to_string()),
            Just("security".to_string()),
            Just("user".to_string()),
            Just("tls".to_string()),
            Just("command".to_string()),
            Just("volumes".to_string()),
            "[a-z_]{1,10}",
        ];
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key, inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_text() -> impl Strategy<Value = String> {
    json_value().prop_map(|v| v.to_string())
}

/// A spec as a user might write one, valid or not.
fn spec_json() -> impl Strategy<Value = serde_json::Value> {
    (
        "[a-z][a-z0-9-]{0,20}",
        prop_oneof!["[a-z0-9./:-]{1,40}", ".{0,10}"],
        -2i64..200,
        proptest::option::of(0u32..70000),
        proptest::option::of("[a-z0-9.-]{1,30}"),
        proptest::option::of(prop_oneof!["[0-9]{1,6}(:[0-9]{1,6})?", ".{0,8}"]),
        proptest::option::of(prop_oneof!["[0-9]{1,4}(Mi|Gi|M|k)?", ".{0,6}"]),
        proptest::collection::btree_map("[A-Z_]{1,8}", ".{0,10}", 0..3),
    )
        .prop_map(|(name, image, replicas, port, domain, user, memory, env)| {
            let mut s = serde_json::json!({ "name": name, "image": image, "replicas": replicas, "env": env });
            if let Some(p) = port {
                s["port"] = p.into();
            }
            if let Some(d) = domain {
                s["domain"] = d.into();
            }
            if let Some(u) = user {
                s["user"] = u.into();
            }
            if let Some(m) = memory {
                s["resources"] = serde_json::json!({ "memory": m });
            }
            s
        })
}

fn raw(
    method: &Method,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Vec<u8>,
) -> Result<ApiRequest, api::ApiError> {
    parse(RawRequest {
        method,
        path,
        query,
        headers,
        body: Bytes::from(body),
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn any_request_is_routed_or_refused_with_a_4xx(
        method in method(),
        path in path(),
        query in proptest::option::of("[ -~]{0,60}"),
        upgrade in any::<bool>(),
        body in body(),
    ) {
        let mut headers = HeaderMap::new();
        if upgrade {
            headers.insert("upgrade", HeaderValue::from_static("websocket"));
            headers.insert("connection", HeaderValue::from_static("Upgrade"));
            headers.insert("sec-websocket-key", HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
            headers.insert("sec-websocket-version", HeaderValue::from_static("13"));
        }
        match raw(&method, &path, query.as_deref(), &headers, body) {
            Ok(request) => {
                // Every request has a route label and an access rule.
                prop_assert!(!request.route().is_empty());
                let _ = request.access();
            }
            Err(e) => {
                prop_assert!((400..500).contains(&e.status), "{} {}", e.status, e.message);
                prop_assert!(!e.message.is_empty());
            }
        }
    }

    #[test]
    fn any_deploy_body_validates_or_is_refused_with_a_4xx(
        body in prop_oneof![
            json_text(),
            proptest::collection::vec(spec_json(), 0..4)
                .prop_map(|s| serde_json::json!({ "services": s }).to_string()),
        ],
    ) {
        let headers = HeaderMap::new();
        match raw(&Method::POST, "/api/v1/deploy", None, &headers, body.into_bytes()) {
            Ok(ApiRequest::Deploy(request)) => {
                for spec in &request.services {
                    if let Err(e) = spec.validate() {
                        prop_assert_eq!(e.status, 400, "{}", e.message);
                    }
                }
            }
            Ok(other) => prop_assert!(false, "not a deploy: {other:?}"),
            Err(e) => prop_assert!((400..500).contains(&e.status), "{}", e.status),
        }
    }

    #[test]
    fn a_valid_spec_reads_back_as_printed(
        name in "[a-z][a-z0-9]{0,10}",
        image in "[a-z]{1,10}(:[a-z0-9]{1,5})?",
        replicas in 0i64..50,
        port in proptest::option::of(1u32..65536),
        user in proptest::option::of("[0-9]{1,5}(:[0-9]{1,5})?"),
        memory in proptest::option::of("[1-9][0-9]{0,3}Mi"),
        env in proptest::collection::btree_map("[A-Z][A-Z_]{0,8}", "[ -~]{0,10}", 0..3),
    ) {
        let mut spec = serde_json::json!({ "name": name, "image": image, "replicas": replicas, "env": env });
        if let Some(p) = port { spec["port"] = p.into(); }
        if let Some(u) = user { spec["user"] = u.into(); }
        if let Some(m) = memory { spec["resources"] = serde_json::json!({ "memory": m }); }
        let parsed: ServiceSpec = serde_json::from_value(spec).unwrap();
        if let Err(e) = parsed.validate() {
            prop_assert!(false, "a valid spec was refused: {}", e.message);
        }
        let printed = serde_json::to_string(&parsed).unwrap();
        let again: ServiceSpec = serde_json::from_str(&printed).unwrap();
        prop_assert_eq!(&again, &parsed);
    }

    /// Valid calls route to exactly their action, with their names and
    /// numbers as sent (a 4xx is no pass here).
    #[test]
    fn valid_calls_route_to_their_action(
        name in "[a-z][a-z0-9-]{0,20}[a-z0-9]",
        project in "[a-z][a-z0-9]{0,10}",
        replicas in 0i64..=100,
        tail in proptest::option::of(0usize..=100_000),
        follow in any::<bool>(),
        deadline in proptest::option::of(1u64..=604_800),
    ) {
        let headers = HeaderMap::new();
        let get = |path: &str, query: Option<&str>| raw(&Method::GET, path, query, &headers, Vec::new());
        let mut query = vec![format!("follow={follow}")];
        if let Some(t) = tail {
            query.push(format!("tail={t}"));
        }
        prop_assert_eq!(
            get(&format!("/api/v1/services/{name}/logs"), Some(&query.join("&"))).unwrap(),
            ApiRequest::Logs { name: name.clone(), tail, follow }
        );
        prop_assert_eq!(
            get(&format!("/api/v1/services/{name}/versions"), None).unwrap(),
            ApiRequest::Versions { name: name.clone() }
        );
        prop_assert_eq!(
            get("/api/v1/status", Some(&format!("project={project}"))).unwrap(),
            ApiRequest::Status { project: Some(project.clone()) }
        );
        let scale = serde_json::json!({ "replicas": replicas }).to_string().into_bytes();
        prop_assert_eq!(
            raw(&Method::POST, &format!("/api/v1/services/{name}/scale"), None, &headers, scale).unwrap(),
            ApiRequest::Scale { name: name.clone(), replicas }
        );
        prop_assert_eq!(
            raw(&Method::DELETE, &format!("/api/v1/services/{name}"), None, &headers, Vec::new()).unwrap(),
            ApiRequest::StopService { name: name.clone() }
        );
        prop_assert_eq!(
            raw(&Method::DELETE, &format!("/api/v1/projects/{project}"), None, &headers, Vec::new()).unwrap(),
            ApiRequest::StopProject { name: project.clone() }
        );
        let drain_query = deadline.map(|d| format!("deadline_secs={d}"));
        prop_assert_eq!(
            raw(&Method::POST, &format!("/api/v1/cluster/nodes/{name}/drain"), drain_query.as_deref(), &headers, Vec::new()).unwrap(),
            ApiRequest::Drain { node: name.clone(), deadline_secs: deadline, move_volumes: false }
        );
    }

    /// A deploy body of valid specs parses to exactly those specs, each of
    /// which validates.
    #[test]
    fn a_valid_deploy_body_parses_to_its_specs(
        specs in proptest::collection::vec((
            "[a-z][a-z0-9]{0,10}",
            "[a-z]{1,10}(:[a-z0-9]{1,5})?",
            0i64..50,
            proptest::option::of(1u32..65536),
            proptest::collection::btree_map("[A-Z][A-Z_]{0,8}", "[ -~&&[^$]]{0,10}", 0..3),
        ), 1..4),
    ) {
        let specs: Vec<serde_json::Value> = specs
            .into_iter()
            .enumerate()
            .map(|(i, (name, image, replicas, port, env))| {
                let mut s = serde_json::json!({ "name": format!("{name}{i}"), "image": image, "replicas": replicas, "env": env });
                if let Some(p) = port { s["port"] = p.into(); }
                s
            })
            .collect();
        let expected: Vec<ServiceSpec> = specs
            .iter()
            .map(|s| serde_json::from_value(s.clone()).unwrap())
            .collect();
        let body = serde_json::json!({ "services": specs }).to_string().into_bytes();
        match raw(&Method::POST, "/api/v1/deploy", None, &HeaderMap::new(), body) {
            Ok(ApiRequest::Deploy(request)) => {
                prop_assert_eq!(&request.services, &expected);
                for spec in &request.services {
                    if let Err(e) = spec.validate() {
                        prop_assert!(false, "a valid spec was refused: {}", e.message);
                    }
                }
            }
            other => prop_assert!(false, "not the deploy: {other:?}"),
        }
    }

    #[test]
    fn names_are_dns_labels_or_a_400(name in prop_oneof![".{0,70}", "[a-z0-9-]{0,70}"]) {
        match checked_name("name", &name) {
            Ok(n) => {
                prop_assert_eq!(n, name.as_str());
                prop_assert!(n.len() <= 63 && !n.is_empty());
                prop_assert!(n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'));
                prop_assert!(!n.starts_with('-') && !n.ends_with('-'));
            }
            Err(e) => prop_assert_eq!(e.status, 400),
        }
    }

    #[test]
    fn exec_queries_read_back_as_printed(
        command in proptest::collection::vec("[ -~]{1,12}", 1..5),
        instance in proptest::option::of("[a-z0-9]{1,8}\\.[0-9]{1,2}\\.[0-9a-f]{6}"),
        tty in any::<bool>(),
        cols in 1u16..,
        rows in 1u16..,
    ) {
        let request = AttachRequest { command, instance, tty, cols, rows };
        let again = AttachRequest::from_query(Some(&request.to_query()));
        prop_assert_eq!(again.ok(), Some(request));
    }

    #[test]
    fn any_webhook_headers_are_kept_or_refused_with_a_4xx(
        values in proptest::collection::vec(proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 6),
        body in body(),
    ) {
        let names = [
            "x-github-event", "x-gitea-event", "x-hub-signature-256",
            "x-gitea-signature", "x-github-delivery", "x-gitea-delivery",
        ];
        let mut headers = HeaderMap::new();
        for (name, value) in names.iter().zip(&values) {
            if let Some(v) = value.as_ref().and_then(|v| HeaderValue::from_bytes(v).ok()) {
                headers.insert(*name, v);
            }
        }
        match raw(&Method::POST, "/api/v1/webhooks/github", None, &headers, body.clone()) {
            Ok(ApiRequest::GitWebhook(hook)) => prop_assert_eq!(hook.body.as_ref(), body.as_slice()),
            Ok(other) => prop_assert!(false, "not a webhook: {other:?}"),
            Err(e) => prop_assert!((400..500).contains(&e.status), "{}", e.status),
        }
    }

    #[test]
    fn any_exec_query_is_read_or_a_400(query in "[ -~]{0,80}") {
        if let Err(e) = AttachRequest::from_query(Some(&query)) {
            prop_assert_eq!(e.status, 400);
        }
    }
}
