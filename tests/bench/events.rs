//! Event delay: from SIGKILL of a replica's process to its
//! `replica-exited` event on `GET /api/v1/events`, for each of 10
//! replicas (one kill each, so no restart backoff is in the way). Goal:
//! under 100 ms.
//!
//! Needs the test environment and a release build:
//! `cargo bench --bench events`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use api::events::EventKind;

#[path = "common.rs"]
mod common;

use common::BenchServer;

const REPLICAS: usize = 10;

#[tokio::main]
async fn main() {
    let server = BenchServer::start("ev", "obenche0", "10.126.0.0/24").await;
    let status = common::deploy_web(&server.client, REPLICAS).await;
    let (follower, mut rx) = common::follow_events(server.client.clone(), "web").await;

    let mut delays = Vec::new();
    for (id, pid) in status {
        let killed = Instant::now();
        common::sigkill(pid);
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
