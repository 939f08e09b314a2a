//! Cycles of deploy, scale, rolling update and stop on one server: after
//! each stop the host holds nothing of the service (containers, tasks,
//! snapshots, network namespaces, veths, nftables set elements, cgroups,
//! log files), no address stays leased at the end, and the server's open
//! file descriptors and resident memory stay flat (both are printed).
//! 40 cycles; `ORCA_SOAK=1` runs 400, `ORCA_CYCLES=N` any number.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::client::ApiClient;
use api::status::{ServiceStatus, StatusResponse};
use common::inventory::{self, Inventory};
use common::server::OrcaServer;
use serde_json::{json, Value};

fn cycles() -> usize {
    if let Some(n) = std::env::var("ORCA_CYCLES")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        return n;
    }
    if std::env::var("ORCA_SOAK").is_ok_and(|v| v == "1") {
        400
    } else {
        40
    }
}

async fn web(c: &ApiClient) -> Option<ServiceStatus> {
    let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
    s.services.into_iter().find(|s| s.name == "web")
}

/// Waits until `web` runs `n` ready replicas of `version`, nothing else.
async fn ready(c: &ApiClient, n: usize, version: u64) {
    common::eventually(
        &format!("{n} ready replicas of version {version}"),
        Duration::from_secs(60),
        async || match web(c).await {
            Some(s) if common::all_ready_on(&s, version, n) => Ok(()),
            other => Err(format!("{other:#?}")),
        },
    )
    .await;
}

async fn deploy(c: &ApiClient, image: &str, replicas: u32) -> u64 {
    let spec = json!({ "name": "web", "image": image, "replicas": replicas, "port": 8080,
        "stop_grace_secs": 1 });
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": [spec] }))
        .await
        .unwrap();
    r["versions"]["web"].as_u64().unwrap()
}

/// One cycle: deploy 2, scale to 3, roll to the other image, stop.
async fn cycle(c: &ApiClient, images: [&str; 2]) {
    let version = deploy(c, images[0], 2).await;
    ready(c, 2, version).await;
    let _: Value = c
        .post("/api/v1/services/web/scale", &json!({ "replicas": 3 }))
        .await
        .unwrap();
    ready(c, 3, version).await;
    let version = deploy(c, images[1], 3).await;
    ready(c, 3, version).await;
    let _: Value = c.delete("/api/v1/services/web").await.unwrap();
    common::eventually(
        "the service stopped",
        Duration::from_secs(60),
        async || match web(c).await {
            Some(s) if !s.instances.is_empty() => Err(format!("{s:#?}")),
            _ => Ok(()),
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cycles_of_changes_leave_nothing_behind() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "leaks").await;
    let c = server.admin();
    let (v1, v2) = (env.image("web:v1"), env.image("web:v2"));
    let pid = server.pid().unwrap();
    let baseline = inventory::of(&server);
    assert_eq!(
        baseline,
        Inventory::default(),
        "a fresh server holds nothing"
    );
    let n = cycles();
    let started = Instant::now();
    // After a first cycle (images pulled, caches filled) as the reference.
    cycle(&c, [&v1, &v2]).await;
    let (fds_first, rss_first) = inventory::process(pid);
    let mut samples = vec![(1, fds_first, rss_first)];
    for i in 2..=n {
        let images = if i % 2 == 0 { [&v2, &v1] } else { [&v1, &v2] };
        cycle(&c, [images[0].as_str(), images[1].as_str()]).await;
        if i % 10 == 0 || i == n {
            common::eventually(
                &format!("the host back to its baseline after cycle {i}"),
                Duration::from_secs(30),
                async || {
                    let now = inventory::of(&server);
                    if now == baseline {
                        Ok(())
                    } else {
                        Err(format!("{now:?}\n{}", inventory::listing(&server)))
                    }
                },
            )
            .await;
            let (fds, rss) = inventory::process(pid);
            samples.push((i, fds, rss));
        }
    }
    let elapsed = started.elapsed();
    let (_, fds_last, rss_last) = *samples.last().unwrap();
    let rss_max = samples.iter().map(|s| s.2).max().unwrap();
    let fds_max = samples.iter().map(|s| s.1).max().unwrap();
    println!(
        "{n} cycles in {:.0} s ({:.2} s each): open fds {fds_first} after the first, {fds_last} at the end, {fds_max} at most; RSS {} KiB after the first, {} KiB at the end, {} KiB at most",
        elapsed.as_secs_f64(),
        elapsed.as_secs_f64() / n as f64,
        rss_first,
        rss_last,
        rss_max
    );
    println!("samples (cycle, fds, RSS KiB): {samples:?}");
    // Connections come and go; a leak grows with the cycles.
    assert!(fds_last <= fds_first + 8, "open fds grew: {samples:?}");
    assert!(
        rss_last <= rss_first + 16 * 1024,
        "RSS grew by more than 16 MiB: {samples:?}"
    );
    server.terminate();
    assert_eq!(inventory::leases(&server), 0, "leased addresses left");
}
