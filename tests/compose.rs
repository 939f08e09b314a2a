//! `orca deploy compose.yaml` end to end on a real node: a database-like
//! service with a volume and an exec health check, a migration job it
//! waits for, a web service behind a path route, a UDP echo service on a
//! published port and a scheduled job, all from one compose file with
//! variables; a file with refused keys deploys nothing and lists them.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use common::server::{OrcaServer, ADMIN};
use serde_json::Value;

const FILE: &str = r#"
name: e2e
services:
  db:
    image: ${REG}/orca-test/stateful:v1
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "test -d /data"]
      interval: 1s
    stop_grace_period: 2s
  migrate:
    image: ${REG}/orca-test/web:v1
    entrypoint: ["sh", "-c", "sleep 2; echo migrated"]
    restart: on-failure
    depends_on:
      db: { condition: service_healthy }
  api:
    image: ${REG}/orca-test/web:v1
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
    stop_grace_period: 1s
    x-orca: { port: 8080, domain: e2e.test, routes: ["/api"], strip_prefix: true }
  site:
    image: ${REG}/orca-test/web:v2
    stop_grace_period: 1s
    labels: [com.example.tier=front, com.example.bare]
    x-orca: { port: 8080, domain: e2e.test }
  echo:
    image: ${REG}/orca-test/kaweb:v1
    entrypoint: ["/bin/udpecho", "5353"]
    ports: ["${UDP_PORT}:5353/udp"]
    stop_grace_period: 1s
  tick:
    image: ${REG}/orca-test/web:v1
    entrypoint: ["sh", "-c", "echo tick"]
    restart: "no"
    x-orca: { schedule: "* * * * *" }
    container_name: not-kept
volumes:
  data:
"#;

/// GET `path` on the ingress with Host e2e.test: the body.
fn ingress(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: e2e.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compose_file_deploys_as_a_project() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "compose").await;
    let c = server.admin();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, FILE).unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let file_arg = file.to_str().unwrap();
    let vars = [
        ("ORCA_TOKEN", ADMIN),
        ("REG", env.registry.as_str()),
        ("UDP_PORT", &udp.to_string()),
    ];
    // Printed first: what orca makes of it.
    let (code, out, err) = server
        .cli_env(&vars, &["compose", "convert", file_arg])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("[[service]]") && out.contains("schedule = \"* * * * *\""),
        "{out}"
    );
    assert!(err.contains("tick: container_name ignored"), "{err}");
    assert!(
        err.contains("site: label com.example.bare ignored: it has no value"),
        "{err}"
    );

    let (code, out, err) = server.cli_env(&vars, &["deploy", file_arg]).await;
    assert_eq!(code, 0, "{out}{err}");
    let status: Value = c.get("/api/v1/status").await.unwrap();
    let by_name = |n: &str| {
        status["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} not deployed: {status:#}"))
    };
    for s in status["services"].as_array().unwrap() {
        assert_eq!(s["project"], "e2e", "{s:#}");
    }
    assert_eq!(by_name("db")["status"], "running");
    assert_eq!(
        by_name("migrate")["status"],
        "completed",
        "{:#}",
        by_name("migrate")
    );
    assert_eq!(by_name("api")["status"], "running");
    assert_eq!(by_name("tick")["status"], "pending");
    assert!(by_name("tick")["job"]["next_run"].is_string());
    let db_healthy = by_name("db")["instances"][0]["healthy"] == true;
    assert!(db_healthy, "{:#}", by_name("db"));

    // The file's labels are on the replica's container, beside orca's.
    let site_id = by_name("site")["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let labels = server.cri().await.container(&site_id).await.unwrap().labels;
    assert_eq!(
        labels.get("com.example.tier").map(String::as_str),
        Some("front")
    );
    assert!(!labels.contains_key("com.example.bare"), "{labels:?}");
    assert_eq!(labels.get("orca.service").map(String::as_str), Some("site"));

    // The path route, stripped, and the rest of the domain.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (a, s) = (
            ingress(server.proxy_port, "/api"),
            ingress(server.proxy_port, "/"),
        );
        if a == "web v1" && s == "web v2" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "routes: /api {a:?}, / {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // UDP through the published port.
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut answer = None;
    for _ in 0..20 {
        socket.send_to(b"hi", ("127.0.0.1", udp)).unwrap();
        let mut buf = [0u8; 128];
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            answer = Some(String::from_utf8_lossy(&buf[..n]).to_string());
            break;
        }
    }
    assert_eq!(answer.as_deref(), Some("echo-0 hi"));

    // Refused keys: one error listing them, nothing deployed.
    let bad = dir.path().join("bad.yml");
    std::fs::write(
        &bad,
        "services:\n  x:\n    image: busybox\n    privileged: true\n  y:\n    build: .\n    network_mode: host\n",
    )
    .unwrap();
    let (code, out, err) = server
        .cli_env(&vars, &["deploy", bad.to_str().unwrap()])
        .await;
    assert_ne!(code, 0, "{out}");
    for line in [
        "line 4: x: privileged",
        "line 6: y: build: build without image",
        "y: network_mode",
    ] {
        assert!(err.contains(line), "{line} not in {err}");
    }
    assert!(
        !common::is_listed(&c, "x").await,
        "a refused file deployed something"
    );
    // A required variable that is not set stops it too.
    std::fs::write(
        &bad,
        "services:\n  z:\n    image: ${IMAGE:?name the image}\n",
    )
    .unwrap();
    let (code, _, err) = server
        .cli_env(&vars, &["deploy", bad.to_str().unwrap()])
        .await;
    assert_ne!(code, 0);
    assert!(
        err.contains("variable IMAGE is required: name the image"),
        "{err}"
    );
}
