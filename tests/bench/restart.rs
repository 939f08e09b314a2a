//! Crash to replaced: from SIGKILL of a replica's process to its
//! replacement running, for 20 replicas (one kill each: a first crash,
//! restarted at once). "Running" is containerd's word for the new task
//! (the `replica-started` event with a new PID); orca's restart call
//! returning (`replica-restarted`) is shown beside it. Goal: under 300 ms.
//!
//! Needs the test environment and a release build:
//! `cargo bench --bench restart`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use api::events::EventKind;

#[path = "common.rs"]
mod common;

use common::BenchServer;

const REPLICAS: usize = 20;

#[tokio::main]
async fn main() {
    let server = BenchServer::start("rs", "obenchr0", "10.129.0.0/24").await;
    let status = common::deploy_web(&server.client, REPLICAS).await;
    let (follower, mut rx) = common::follow_events(server.client.clone(), "web").await;

    let (mut running, mut restarted) = (Vec::new(), Vec::new());
    for (id, pid) in status {
        let killed = Instant::now();
        common::sigkill(pid);
        let (mut started_at, mut restarted_at) = (None, None);
        while started_at.is_none() || restarted_at.is_none() {
            let (at, e) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                .await
                .expect("no restart within 10 s")
                .unwrap();
            if e.instance.as_deref() != Some(id.as_str()) {
                continue;
            }
            match e.kind {
                EventKind::ReplicaStarted => started_at = Some(at),
                EventKind::ReplicaRestarted => restarted_at = Some(at),
                _ => {}
            }
        }
        let ms = |t: Option<Instant>| t.unwrap().duration_since(killed).as_secs_f64() * 1000.0;
        running.push(ms(started_at));
        restarted.push(ms(restarted_at));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    follower.abort();
    for v in [&mut running, &mut restarted] {
        v.sort_by(f64::total_cmp);
    }
    let line = |v: &[f64]| {
        format!(
            "median {:.0} ms, max {:.0} ms",
            v[v.len() / 2],
            v[v.len() - 1]
        )
    };
    println!(
        "crash to replaced ({} replicas, SIGKILL): replacement running {}; orca's restart answered {} (goal < 300 ms)",
        running.len(),
        line(&running),
        line(&restarted)
    );
    server.stop().await;
}
