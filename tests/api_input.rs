//! Bad input and access control over real HTTP: every error is JSON with
//! the right status, and nothing is created for a request that fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::client::ClientError;
use common::http::exchange;
use common::server::{OrcaServer, ADMIN, DEPLOYER, VIEWER};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn err_of(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, message } => (status, message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_and_changes_nothing() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "input").await;
    let c = server.admin();
    let addr = server.addr();
    let auth = format!("Authorization: Bearer {ADMIN}\r\n");

    // Malformed JSON.
    let body = "{\"services\": [";
    let req = format!("POST /api/v1/deploy HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    let (status, text) = exchange(&addr, req.as_bytes()).await;
    assert_eq!(status, 400);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert!(
        v["error"].as_str().unwrap().starts_with("malformed JSON"),
        "{text}"
    );

    // Unknown service.
    let (status, msg) = err_of(
        c.post::<_, Value>("/api/v1/services/ghost/scale", &json!({ "replicas": 1 }))
            .await
            .unwrap_err(),
    );
    assert_eq!((status, msg.as_str()), (404, "service not found: ghost"));
    let (status, msg) = err_of(
        c.delete::<Value>("/api/v1/services/ghost")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, msg.as_str()), (404, "service not found: ghost"));
    let (status, _) = err_of(c.get_text("/api/v1/services/ghost/logs").await.unwrap_err());
    assert_eq!(status, 404);

    // Names that are not DNS labels, in bodies and in paths.
    for name in ["../etc", "A_B", &"a".repeat(64), ""] {
        let (status, msg) = err_of(
            c.post::<_, Value>(
                "/api/v1/deploy",
                &json!({ "services": [{ "name": name, "image": env.image("web:v1") }] }),
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(status, 400, "{name:?}");
        assert!(msg.contains("invalid service name"), "{name:?}: {msg}");
    }
    let (status, _) = err_of(c.delete::<Value>("/api/v1/services/A_B").await.unwrap_err());
    assert_eq!(status, 400);
    let (status, _) = exchange(&addr, format!("DELETE /api/v1/services/..%2Fetc HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n").as_bytes()).await;
    assert_eq!(status, 400);

    // Missing and nonexistent images, absurd replicas, bad quantities.
    let cases = [
        (json!({ "name": "web" }), "missing image"),
        (
            json!({ "name": "web", "image": env.image("no-such-image:v1") }),
            "image not found",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "replicas": -1 }),
            "invalid replicas -1",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "replicas": 1000000 }),
            "invalid replicas",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "memory": "64 megs" } }),
            "resources.memory",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "memory": "1Mi" } }),
            "minimum",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "cpu": 0 } }),
            "resources.cpu",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "cpu": "two" } }),
            "malformed JSON",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "replica": 2 }),
            "unknown field `replica`",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "reserve": { "cpu": -1 } } }),
            "invalid resources.reserve.cpu -1",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "cpu": 0.5, "reserve": { "cpu": 1 } } }),
            "more than the limit resources.cpu 0.5",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "memory": "64Mi", "reserve": { "memory": "1Gi" } } }),
            "more than the limit resources.memory",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "resources": { "reserve": { "memory": "lots" } } }),
            "resources.reserve.memory",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "deploy": { "max_surge": "120%" } }),
            "invalid deploy.max_surge",
        ),
        (
            json!({ "name": "web", "image": env.image("web:v1"), "deploy": { "max_surge": -2 } }),
            "invalid deploy.max_surge -2",
        ),
    ];
    for (spec, want) in cases {
        let (status, msg) = err_of(
            c.post::<_, Value>("/api/v1/deploy", &json!({ "services": [spec.clone()] }))
                .await
                .unwrap_err(),
        );
        assert_eq!(status, 400, "{spec}");
        assert!(msg.contains(want), "{spec}: {msg}");
    }

    // Nothing was created by any of that.
    let s: Value = c.get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"], json!([]));
    assert!(server
        .cri()
        .await
        .list_containers(&[])
        .await
        .unwrap()
        .is_empty());

    // A bad count for a service that exists is a 400, and changes nothing.
    let spec = json!({ "name": "web", "image": env.image("web:v1"), "stop_grace_secs": 1 });
    c.post::<_, Value>("/api/v1/deploy", &json!({ "services": [spec] }))
        .await
        .unwrap();
    let (status, msg) = err_of(
        c.post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": -5 }))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("invalid replicas -5"), "{msg}");
    let s: Value = c.get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"][0]["replicas"], 1);

    // Unknown path, wrong method.
    let (status, msg) = err_of(c.get::<Value>("/api/v1/nothing").await.unwrap_err());
    assert_eq!(status, 404, "{msg}");
    let (status, _) = err_of(c.get::<Value>("/api/v1/deploy").await.unwrap_err());
    assert_eq!(status, 405);

    // A 20 MB body is refused without being read.
    let big = vec![b' '; 20 * 1024 * 1024];
    let head = format!("POST /api/v1/deploy HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\nConnection: close\r\n\r\n", big.len());
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    let _ = s.write_all(&big[..1024 * 1024]).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"error\""), "{answer}");
    // Chunked, with no length announced: cut off at the limit too.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("POST /api/v1/deploy HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 256 * 1024, " ".repeat(256 * 1024));
    for _ in 0..5 {
        if s.write_all(chunk.as_bytes()).await.is_err() {
            break;
        }
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(
        String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 413"),
        "{}",
        String::from_utf8_lossy(&buf)
    );

    // A body that stalls: a timeout answer, and the server still serves others.
    let started = Instant::now();
    // The stalled request is under way before the other one is sent.
    let mut stalling = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /api/v1/deploy HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 100\r\n\r\n{{\"serv"
    );
    stalling.write_all(head.as_bytes()).await.unwrap();
    let stalled = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(20), stalling.read_to_end(&mut buf)).await;
        String::from_utf8_lossy(&buf).to_string()
    });
    let health: Value = c.get("/api/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok");
    let answer = stalled.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(15));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_and_tokens() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "auth").await;
    let deploy = json!({ "services": [{ "name": "web", "image": env.image("web:v1"), "stop_grace_secs": 1 }] });

    // Public endpoints need no token.
    let anon = server.client(None);
    let h: Value = anon.get("/api/v1/health").await.unwrap();
    assert_eq!(h["status"], "ok");
    let metrics = anon.get_text("/metrics").await.unwrap();
    for name in [
        "orca_services_total",
        "orca_instances_total",
        "orca_nodes_total",
        "orca_api_requests_total",
        "orca_api_request_duration_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }
    common::promtool_clean(&metrics);

    // Missing or bad token: 401, also before a body is looked at.
    let (status, msg) = err_of(anon.get::<Value>("/api/v1/status").await.unwrap_err());
    assert_eq!((status, msg.as_str()), (401, "missing bearer token"));
    let (status, _) = err_of(
        anon.post::<_, Value>("/api/v1/deploy", &json!("not even a spec"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
    let (status, msg) = err_of(
        server
            .client(Some("wrong-token"))
            .get::<Value>("/api/v1/status")
            .await
            .unwrap_err(),
    );
    assert_eq!((status, msg.as_str()), (401, "invalid token"));

    // Viewer reads, may not write: 403.
    let viewer = server.client(Some(VIEWER));
    viewer.get::<Value>("/api/v1/status").await.unwrap();
    viewer.get::<Value>("/api/v1/cluster/info").await.unwrap();
    viewer.get::<Value>("/api/v1/webhooks").await.unwrap();
    let (status, msg) = err_of(
        viewer
            .post::<_, Value>("/api/v1/deploy", &deploy)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "{msg}");

    // Deployer deploys and scales, may not drain or stop everything.
    let deployer = server.client(Some(DEPLOYER));
    let r: Value = deployer.post("/api/v1/deploy", &deploy).await.unwrap();
    assert_eq!(r["deployed"], json!(["web"]));
    deployer
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 0 }))
        .await
        .unwrap();
    let (status, _) = err_of(
        deployer
            .post::<_, Value>("/api/v1/stop", &json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    let (status, _) = err_of(
        deployer
            .post::<_, Value>("/api/v1/cluster/nodes/node-1/drain", &json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    let (status, _) = err_of(
        deployer
            .post::<_, Value>("/api/v1/tokens", &json!({ "name": "x", "role": "admin" }))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);

    // Promote with no canary and rollback: clear 409s, not 404s.
    let (status, msg) = err_of(
        deployer
            .post::<_, Value>("/api/v1/services/web/promote", &json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409, "{msg}");
    let (status, _) = err_of(
        deployer
            .post::<_, Value>("/api/v1/services/web/rollback", &json!({}))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);

    // Admin drains and creates tokens; a created token works, and survives a restart.
    let admin = server.admin();
    let d: Value = admin
        .post("/api/v1/cluster/nodes/node-1/drain", &json!({}))
        .await
        .unwrap();
    assert_eq!(d["drained"], true);
    admin
        .post::<_, Value>("/api/v1/cluster/nodes/node-1/undrain", &json!({}))
        .await
        .unwrap();
    let t: Value = admin
        .post(
            "/api/v1/tokens",
            &json!({ "name": "robot", "role": "viewer" }),
        )
        .await
        .unwrap();
    let value = t["token"].as_str().unwrap().to_string();
    let robot = server.client(Some(&value));
    robot.get::<Value>("/api/v1/status").await.unwrap();
    let (status, _) = err_of(
        robot
            .post::<_, Value>("/api/v1/deploy", &deploy)
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
    let list: Value = admin.get("/api/v1/tokens").await.unwrap();
    assert!(
        !list.to_string().contains(&value),
        "token values must not be listed"
    );
    let (status, _) = err_of(
        admin
            .post::<_, Value>(
                "/api/v1/tokens",
                &json!({ "name": "robot", "role": "viewer" }),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 409);
    let mut server = server;
    server.kill9();
    server.spawn().await;
    server
        .client(Some(&value))
        .get::<Value>("/api/v1/status")
        .await
        .unwrap();
    server
        .admin()
        .delete::<Value>("/api/v1/tokens/robot")
        .await
        .unwrap();
    let (status, _) = err_of(
        server
            .client(Some(&value))
            .get::<Value>("/api/v1/status")
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_deploys_survive_kill_9() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "durable").await;
    let c = server.admin();
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": [{ "name": "keep", "image": env.image("logger:latest"), "replicas": 0 }] }))
        .await
        .unwrap();
    assert_eq!(r["deployed"], json!(["keep"]));
    c.post::<_, Value>("/api/v1/services/keep/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
    // Killed right after the reply.
    server.kill9();
    server.spawn().await;
    let s: Value = server.admin().get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"][0]["name"], "keep");
    assert_eq!(s["services"][0]["replicas"], 2);
    let v: Value = server
        .admin()
        .get("/api/v1/services/keep/versions")
        .await
        .unwrap();
    assert_eq!(v["versions"][0]["deployed_by"], "admin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_authentication_is_limited_per_address() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "limit").await;
    let wrong = server.client(Some("wrong-token"));
    let admin = server.admin();

    // Past 20 failures in a second: 429 JSON, with Retry-After; a valid
    // token in the same second gets its 200, and the wrong one its 429
    // again after it, so both happened inside the one window.
    let started = Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..30 {
        let (status, _) = err_of(wrong.get::<Value>("/api/v1/status").await.unwrap_err());
        statuses.push(status);
    }
    let _: Value = admin.get("/api/v1/status").await.unwrap();
    let (status, msg) = err_of(wrong.get::<Value>("/api/v1/status").await.unwrap_err());
    assert!(
        started.elapsed() < Duration::from_millis(950),
        "too slow to test within a second: {:?}",
        started.elapsed()
    );
    assert_eq!(statuses[..20], [401; 20], "{statuses:?}");
    assert!(statuses[20..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(status, 429);
    assert!(msg.contains("too many failed authentications"), "{msg}");
    let raw = "GET /api/v1/status HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nConnection: close\r\n\r\n";
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    conn.write_all(raw.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).await.unwrap();
    let text = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 429"), "{text}");
    assert!(text.contains("retry-after: 1"), "{text}");
    assert!(text.contains("content-type: application/json"), "{text}");
    assert!(text.contains("{\"error\":"), "{text}");

    // The next second starts afresh.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, _) = err_of(wrong.get::<Value>("/api/v1/status").await.unwrap_err());
    assert_eq!(status, 401);
}
