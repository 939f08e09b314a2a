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
