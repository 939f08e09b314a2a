//! The parser's tests: every route, and every way to get one wrong.

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
    use ApiRequest::*;
    let app = || "my-app".to_string();
    let cases: Vec<(Method, &str, &str, ApiRequest)> = vec![
        (Method::GET, "/api/v1/health", "", Health),
        (Method::GET, "/api/v1/health/", "", Health),
        (Method::GET, "/metrics", "", Metrics),
        (
            Method::GET,
            "/api/v1/status?project=frontend",
            "",
            Status {
                project: Some("frontend".into()),
            },
        ),
        (Method::GET, "/api/v1/status", "", Status { project: None }),
        (
            Method::POST,
            "/api/v1/services/my-app/scale",
            r#"{"replicas":5}"#,
            Scale {
                name: app(),
                replicas: 5,
            },
        ),
        (
            Method::DELETE,
            "/api/v1/services/my-app",
            "",
            StopService { name: app() },
        ),
        (
            Method::DELETE,
            "/api/v1/projects/frontend",
            "",
            StopProject {
                name: "frontend".into(),
            },
        ),
        (Method::POST, "/api/v1/stop", "", StopAll),
        (
            Method::GET,
            "/api/v1/services/my-app/logs?tail=100",
            "",
            Logs {
                name: app(),
                tail: Some(100),
                follow: false,
            },
        ),
        (
            Method::GET,
            "/api/v1/services/my-app/logs?follow=true",
            "",
            Logs {
                name: app(),
                tail: None,
                follow: true,
            },
        ),
        (
            Method::POST,
            "/api/v1/services/my-app/promote",
            "",
            Promote { name: app() },
        ),
        (
            Method::POST,
            "/api/v1/services/my-app/rollback",
            "",
            Rollback {
                name: app(),
                version: None,
            },
        ),
        (
            Method::POST,
            "/api/v1/services/my-app/rollback",
            r#"{"version":3}"#,
            Rollback {
                name: app(),
                version: Some(3),
            },
        ),
        (Method::GET, "/api/v1/cluster/info", "", ClusterInfo),
        (Method::GET, "/api/v1/store/backup", "", StoreBackup),
        (Method::POST, "/api/v1/store/freeze", "", StoreFreeze),
        (
            Method::POST,
            "/api/v1/cluster/nodes/worker-1/drain",
            "",
            Drain {
                node: "worker-1".into(),
                deadline_secs: None,
                move_volumes: false,
            },
        ),
        (
            Method::DELETE,
            "/api/v1/cluster/nodes/worker-1",
            "",
            RemoveNode {
                node: "worker-1".into(),
            },
        ),
        (
            Method::POST,
            "/api/v1/cluster/join-tokens",
            r#"{"ttl_secs":600}"#,
            CreateJoinToken(crate::status::JoinTokenRequest {
                ttl_secs: Some(600),
                server: false,
            }),
        ),
        (
            Method::DELETE,
            "/api/v1/cluster/join-tokens/ab12cd34",
            "",
            DeleteJoinToken {
                id: "ab12cd34".into(),
            },
        ),
        (
            Method::POST,
            "/api/v1/cluster/nodes/worker-1/undrain",
            "",
            Undrain {
                node: "worker-1".into(),
            },
        ),
        (Method::GET, "/api/v1/webhooks", "", ListWebhooks),
    ];
    for (method, path, body, want) in cases {
        let got = p(method.clone(), path, body);
        assert_eq!(got.as_ref().ok(), Some(&want), "{method} {path}: {got:?}");
    }
    // Requests that carry a whole document.
    assert!(matches!(
        p(Method::POST, "/api/v1/deploy", r#"{"services":[]}"#).unwrap(),
        Deploy(_)
    ));
    assert!(matches!(
        p(Method::POST, "/api/v1/webhooks/github", "{}").unwrap(),
        GitWebhook(_)
    ));
}

#[test]
fn errors() {
    let status = |r: Result<ApiRequest, ApiError>| r.unwrap_err().status;
    assert_eq!(status(p(Method::GET, "/api/v1/nope", "")), 404);
    assert_eq!(status(p(Method::GET, "/index.html", "")), 404);
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
        ApiRequest::Drain {
            node: "n".into(),
            deadline_secs: None,
            move_volumes: false,
        }
        .access(),
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
            "/api/v1/services/web/exec",
            r#"{"command":["ls"]}"#,
        ),
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

#[test]
fn exec_takes_a_command_and_bounds() {
    let ok = p(
        Method::POST,
        "/api/v1/services/web/exec",
        r#"{"command":["ls","/"],"instance":"web.0.1a2b3c","timeout_secs":5}"#,
    )
    .unwrap();
    assert_eq!(
        ok,
        ApiRequest::Exec {
            name: "web".into(),
            request: crate::status::ExecRequest {
                command: vec!["ls".into(), "/".into()],
                instance: Some("web.0.1a2b3c".into()),
                timeout_secs: Some(5),
            },
        }
    );
    assert_eq!(ok.access(), Access::Role(Role::Deployer));
    for bad in [
        r#"{"command":[]}"#,
        r#"{"command":[""]}"#,
        r#"{"command":["a\u0000b"]}"#,
        r#"{"command":["ls"],"timeout_secs":0}"#,
        r#"{"command":["ls"],"timeout_secs":3601}"#,
        r#"{"command":["ls"],"instance":"Web/../x"}"#,
        r#"{"command":["ls"],"tty":true}"#,
        r#"{"command":"ls"}"#,
    ] {
        let e = p(Method::POST, "/api/v1/services/web/exec", bad).unwrap_err();
        assert_eq!(e.status, 400, "{bad}: {}", e.message);
    }
    // GET is the WebSocket: without an upgrade, a 400 that says so.
    let e = p(Method::GET, "/api/v1/services/web/exec", "").unwrap_err();
    assert_eq!(e.status, 400);
    assert!(e.message.contains("Upgrade: websocket"), "{}", e.message);
    let e = p(Method::PUT, "/api/v1/services/web/exec", "").unwrap_err();
    assert_eq!(e.status, 405);
    let long = format!(r#"{{"command":["{}"]}}"#, "x".repeat(70_000));
    assert_eq!(
        p(Method::POST, "/api/v1/services/web/exec", &long)
            .unwrap_err()
            .status,
        400
    );
}

#[test]
fn the_page_and_the_event_stream() {
    assert_eq!(p(Method::GET, "/", "").unwrap(), ApiRequest::Page);
    assert_eq!(p(Method::GET, "/", "").unwrap().access(), Access::Public);
    assert_eq!(p(Method::POST, "/", "").unwrap_err().status, 405);
    let all = p(Method::GET, "/api/v1/events", "").unwrap();
    assert_eq!(all, ApiRequest::Events(EventsQuery::default()));
    assert_eq!(all.access(), Access::Role(Role::Viewer));
    assert_eq!(
        p(
            Method::GET,
            "/api/v1/events?service=web&project=shop&since=42",
            ""
        )
        .unwrap(),
        ApiRequest::Events(EventsQuery {
            service: Some("web".into()),
            project: Some("shop".into()),
            since: Some(42),
        })
    );
    let mut headers = HeaderMap::new();
    headers.insert("last-event-id", "17".parse().unwrap());
    let resumed = parse(RawRequest {
        method: &Method::GET,
        path: "/api/v1/events",
        query: None,
        headers: &headers,
        body: Bytes::new(),
    })
    .unwrap();
    assert_eq!(
        resumed,
        ApiRequest::Events(EventsQuery {
            since: Some(17),
            ..Default::default()
        })
    );
    for bad in ["/api/v1/events?since=x", "/api/v1/events?service=Bad_Name"] {
        assert_eq!(p(Method::GET, bad, "").unwrap_err().status, 400, "{bad}");
    }
}
