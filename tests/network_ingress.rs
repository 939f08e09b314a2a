//! The ingress proxy and health checks with real replicas on the node
//! network: routing by Host, balancing over every ready replica, a replica
//! whose health check fails leaving rotation within two intervals, 404 and
//! 503 as JSON, and the X-Forwarded headers.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use api::status::StatusResponse;
use common::http::get;
use common::server::{Extra, OrcaServer};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_balances_over_ready_replicas() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "ingress").await;
    let c = server.admin();
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web", "image": env.image("web:v1"), "replicas": 3, "port": 8080,
                "domain": "app.test", "readiness": { "path": "/healthz", "interval_secs": 1, "failure_threshold": 1 },
                "stop_grace_secs": 1 }] }),
        )
        .await
        .unwrap();
    assert_eq!(r["deployed"], json!(["web"]), "{r}");
    common::wait_for(&c, "web", "3 healthy", |s| common::healthy(s) >= 3).await;

    // Each replica answers with its own name, so balancing can be seen.
    let cri = server.cri().await;
    let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
    let ids: Vec<String> = s.services[0]
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    for id in &ids {
        let sh = |cmd: &str| vec!["sh".to_string(), "-c".to_string(), cmd.to_string()];
        let out = cri
            .exec(id, &sh("echo $HOSTNAME > /www/index.html && mkdir -p /www/cgi-bin && printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\nenv\\n' > /www/cgi-bin/env && chmod 755 /www/cgi-bin/env"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(out.code, 0, "{out:?}");
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..30 {
        let (status, body) = get(server.proxy_port, "app.test", "/").await;
        assert_eq!(status, 200, "{body}");
        *counts.entry(body.trim().to_string()).or_default() += 1;
    }
    assert_eq!(counts.len(), 3, "{counts:?}");
    assert!(counts.values().all(|n| *n == 10), "round robin: {counts:?}");

    // The forwarded headers reach the replica.
    let (status, env_out) = get(server.proxy_port, "App.Test:80", "/cgi-bin/env").await;
    assert_eq!(status, 200, "{env_out}");
    assert!(
        env_out.contains("HTTP_X_FORWARDED_FOR=127.0.0.1"),
        "{env_out}"
    );
    assert!(env_out.contains("HTTP_X_FORWARDED_PROTO=http"), "{env_out}");
    assert!(
        env_out.contains("HTTP_X_FORWARDED_HOST=App.Test:80"),
        "{env_out}"
    );

    // Unknown host: 404 JSON.
    let (status, body) = get(server.proxy_port, "nobody.test", "/").await;
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("nobody.test"));

    // A replica whose health check fails leaves rotation within two intervals.
    let sick = &ids[1];
    let sick_name = cri
        .exec(sick, &["hostname".to_string()], Duration::from_secs(5))
        .await
        .unwrap()
        .stdout
        .trim()
        .to_string();
    cri.exec(
        sick,
        &["rm".to_string(), "/www/healthz".to_string()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..20 {
        let (status, body) = get(server.proxy_port, "app.test", "/").await;
        assert_eq!(status, 200);
        assert_ne!(
            body.trim(),
            sick_name,
            "an unhealthy replica still got traffic"
        );
    }
    let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
    let sick_status = s.services[0]
        .instances
        .iter()
        .find(|i| &i.id == sick)
        .unwrap();
    assert_eq!(sick_status.healthy, Some(false));

    // No replica: 503 JSON.
    c.post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 0 }))
        .await
        .unwrap();
    let body = common::eventually(
        "a 503 with no replica",
        Duration::from_secs(20),
        async || match get(server.proxy_port, "app.test", "/").await {
            (503, body) => Ok(body),
            (status, _) => Err(format!("still {status}")),
        },
    )
    .await;
    assert!(body.contains("no ready replica"), "{body}");

    // A second service cannot claim the same domain.
    let e = c
        .post::<_, Value>(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "thief", "image": env.image("web:v1"), "port": 8080, "domain": "app.test" }] }),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already served by web"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_liveness_restarts_the_replica() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "liveness").await;
    let c = server.admin();
    c.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [{ "name": "web", "image": env.image("web:v1"), "port": 8080,
            "liveness": { "path": "/healthz", "interval_secs": 1, "failure_threshold": 2 }, "stop_grace_secs": 1 }] }),
    )
    .await
    .unwrap();
    let running = |i: &&api::status::InstanceStatus| i.state == api::status::InstanceState::Running;
    let s = common::wait_for(&c, "web", "a running replica", |s| {
        s.instances.iter().any(|i| running(&i))
    })
    .await;
    let id = s.instances.iter().find(running).unwrap().id.clone();
    let cri = server.cri().await;
    cri.exec(
        &id,
        &["rm".to_string(), "/www/healthz".to_string()],
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    let s = common::wait_for(&c, "web", "a restart by liveness", |s| {
        s.instances.first().is_some_and(|i| i.restarts >= 1)
    })
    .await;
    let i = &s.instances[0];
    assert_eq!(i.last_exit.as_ref().unwrap().code, 137, "{i:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_upgrades_pass_through() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "websocket").await;
    let c = server.admin();
    // A minimal upgrade-then-echo server: nc hands each connection to a
    // script that reads the request, answers 101, then echoes.
    let script = r#"cat > /tmp/ws <<'X'
#!/bin/sh
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
done
printf 'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'
exec cat
X
chmod 755 /tmp/ws
exec nc -ll -p 8080 -e /tmp/ws"#;
    c.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [{ "name": "ws", "image": env.image("web:v1"), "port": 8080, "domain": "ws.test",
            "command": ["sh", "-c", script], "stop_grace_secs": 1 }] }),
    )
    .await
    .unwrap();
    common::wait_for(&c, "ws", "1 healthy", |s| common::healthy(s) >= 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server.proxy_port))
        .await
        .unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut byte))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: websocket"),
        "{head}"
    );
    // Both ways through the tunnel.
    s.write_all(b"hello through orca\n").await.unwrap();
    let mut echoed = vec![0u8; 19];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echoed, b"hello through orca\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_keeps_connections_to_replicas_alive() {
    let Some(env) = common::env() else { return };
    // Two ingress workers, whatever the machine: the bound below is theirs.
    let workers = 2;
    let extra = Extra {
        proxy: "workers = 2",
        ..Default::default()
    };
    let server = OrcaServer::start_with(&env, "pool", extra).await;
    let c = server.admin();
    c.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [{ "name": "ka", "image": env.image("kaweb:v1"), "port": 8080,
            "domain": "ka.test", "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 }] }),
    )
    .await
    .unwrap();
    common::wait_for(&c, "ka", "1 healthy", |s| common::healthy(s) >= 1).await;
    // Every client connection is closed after one request; the proxy's
    // connections to the replica stay open and are reused.
    for _ in 0..60 {
        let (status, body) = get(server.proxy_port, "ka.test", "/").await;
        assert_eq!((status, body.as_str()), (200, "kaweb v1"));
    }
    let (status, stats) = get(server.proxy_port, "ka.test", "/stats").await;
    assert_eq!(status, 200, "{stats}");
    let field = |name: &str| -> usize {
        stats
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing in {stats:?}"))
    };
    assert_eq!(field("proxied_requests"), 61, "{stats}");
    // One pool per ingress worker thread, one connection each when requests
    // come one at a time.
    assert!(
        field("proxied_connections") <= workers,
        "61 requests took {} connections with {workers} workers",
        field("proxied_connections")
    );

    // The ingress's counters: by domain and status class, and unknown hosts
    // in one series whatever they said.
    for host in ["nobody.test", "\"quoted\".test"] {
        assert_eq!(get(server.proxy_port, host, "/").await.0, 404);
    }
    let metrics = c.get_text("/metrics").await.unwrap();
    for line in [
        "orca_ingress_responses_total{code=\"2xx\",domain=\"ka.test\"} 61",
        "orca_ingress_responses_total{code=\"5xx\",domain=\"ka.test\"} 0",
        "orca_ingress_upstream_errors_total{domain=\"ka.test\"} 0",
        "orca_ingress_unrouted_total 2",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} missing:\n{metrics}"
        );
    }
    common::promtool_clean(&metrics);
}
