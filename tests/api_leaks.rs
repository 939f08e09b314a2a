//! What the API gives away, gives back and keeps bounded: `/metrics`
//! behind a token when asked, log streams whose clients went away, and
//! metric series that clients could mint.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::{Extra, OrcaServer, VIEWER};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Open file descriptors of process `pid`.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

/// Opens `logs?follow=true` for `service`, reads the answer's head, and
/// closes the connection.
async fn follow_and_leave(port: u16, service: &str) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let request = format!(
        "GET /api/v1/services/{service}/logs?follow=true&tail=1 HTTP/1.1\r\n\
         Host: orca\r\nAuthorization: Bearer {VIEWER}\r\n\r\n"
    );
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_log_followers_give_their_descriptors_back() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "follow-leak").await;
    let c = server.admin();
    // A quiet replica: nothing new is logged while followers come and go.
    c.post::<_, serde_json::Value>(
        "/api/v1/deploy",
        &json!({ "services": [{ "name": "quiet", "image": env.image("web:v1"), "stop_grace_secs": 1 }] }),
    )
    .await
    .unwrap();
    common::wait_for(&c, "quiet", "running", |s| s.running_replicas == 1).await;
    let pid = server.pid().unwrap();
    follow_and_leave(server.port, "quiet").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = fds(pid);

    for _ in 0..200 {
        follow_and_leave(server.port, "quiet").await;
    }
    // Each follower polls its file every 100 ms: give them a few turns.
    common::eventually("descriptors back", Duration::from_secs(10), async || {
        let now = fds(pid);
        if now <= before + 5 {
            Ok(())
        } else {
            Err(format!("{before} before, {now} now"))
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invented_methods_share_one_metric_series() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "method-label").await;
    for i in 0..50 {
        let request =
            format!("BREW{i} /api/v1/status HTTP/1.1\r\nHost: orca\r\nConnection: close\r\n\r\n");
        let (status, _) =
            common::http::exchange(("127.0.0.1", server.port), request.as_bytes()).await;
        assert!(status >= 400, "BREW{i} answered {status}");
    }
    let (status, _) = common::http::get(server.port, "orca", "/api/v1/health").await;
    assert_eq!(status, 200);
    let metrics = server.admin().get_text("/metrics").await.unwrap();
    assert!(!metrics.contains("BREW"), "a client minted series");
    assert!(metrics.contains("method=\"other\""), "{metrics}");
    assert!(metrics.contains("method=\"GET\""), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_require_a_token() {
    let Some(env) = common::env() else { return };
    let extra = Extra {
        cluster: "metrics_token = true",
        ..Default::default()
    };
    let server = OrcaServer::start_with(&env, "metrics-token", extra).await;
    let (status, body) = common::http::get(server.port, "orca", "/metrics").await;
    assert_eq!(status, 401, "{body}");
    let metrics = server
        .client(Some(VIEWER))
        .get_text("/metrics")
        .await
        .unwrap();
    assert!(metrics.contains("orca_services_total"), "{metrics}");
    // Health stays public.
    let (status, _) = common::http::get(server.port, "orca", "/api/v1/health").await;
    assert_eq!(status, 200);
}
