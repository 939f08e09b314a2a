//! Event delay: from SIGKILL of a replica's process to its
//! `replica-exited` event on `GET /api/v1/events`, for each of 10
//! replicas (one kill each, so no restart backoff is in the way). Goal:
//! under 100 ms.
//!
//! Needs the test environment and a release build:
//! `cargo bench --bench events`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use api::events::{Event, EventKind, SseReader};
use serde_json::{json, Value};

#[path = "common.rs"]
mod common;

use common::BenchServer;

const REPLICAS: usize = 10;

#[tokio::main]
async fn main() {
    let server = BenchServer::start("ev", "obenche0", "10.126.0.0/24").await;
    let image = format!(
        "{}/orca-test/web:v1",
        std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
    );
    let _: Value = server
        .client
        .post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web", "image": image, "replicas": REPLICAS, "port": 8080, "stop_grace_secs": 1 }] }),
        )
        .await
        .unwrap();
    let status = common::wait_running(&server.client, REPLICAS).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Event)>();
    let client = server.client.clone();
    let follower = tokio::spawn(async move {
        let mut reader = SseReader::default();
        let _ = client
            .stream("/api/v1/events?service=web", |chunk| {
                for e in reader.push(chunk).unwrap() {
                    let _ = tx.send((Instant::now(), e));
                }
                std::ops::ControlFlow::Continue(())
            })
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut delays = Vec::new();
    for (id, pid) in status {
        let killed = Instant::now();
        // A replica's PID, which this bench had orca start.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let arrived = loop {
            let (at, e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("no exit event within 10 s")
                .unwrap();
            if e.kind == EventKind::ReplicaExited && e.instance.as_deref() == Some(id.as_str()) {
                break at;
            }
        };
        delays.push(arrived.duration_since(killed).as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    follower.abort();
    delays.sort_by(f64::total_cmp);
    println!(
        "event delay, SIGKILL of a replica to its replica-exited event ({} replicas): median {:.1} ms, max {:.1} ms (goal < 100 ms)",
        delays.len(),
        delays[delays.len() / 2],
        delays[delays.len() - 1]
    );
    server.stop().await;
}
