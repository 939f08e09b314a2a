//! Several nodes, measured in the multi-node lab (nodes as network
//! namespaces, each with its own containerd), side by side in one run:
//!
//! - node loss: a node's LAN link cut, until every replica it ran is
//!   running on the other nodes, against the bound heartbeat_grace +
//!   reschedule_after + 2 s;
//! - a deploy of 30 replicas spread over 3 nodes, against 30 on one node
//!   (pinned), from the POST until all 30 run, with the image present on
//!   every node;
//! - the resident memory of an idle `orca agent` (release build), with no
//!   replica and with 10.
//!
//! Needs the test environment (`source tests/env.sh && orca_env_start`):
//! `cargo bench --bench cluster`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::cluster::{LabCluster, KAWEB};
use serde_json::json;

const GRACE: u64 = 5;
const RESCHEDULE: u64 = 10;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::main]
async fn main() {
    let env = common::env().expect("the test environment");
    let c = LabCluster::start(
        &env,
        3,
        &format!("heartbeat_grace_secs = {GRACE}\nreschedule_after_secs = {RESCHEDULE}"),
    )
    .await;
    let image = c.image(KAWEB);
    let long = Duration::from_secs(180);

    // Idle agent, nothing placed on it yet.
    std::thread::sleep(Duration::from_secs(3));
    let idle_empty = rss_kib(c.agent_pid(1).unwrap());

    // Warm: the image on every node.
    c.deploy(json!([{ "name": "warm", "image": image, "replicas": 3 }]));
    common::cluster::time_until(long, || c.spread("warm") == [1, 1, 1]);
    assert!(c.orca(&["stop", "warm"]).status.success());
    common::cluster::time_until(long, || c.total("warm") == 0);

    // 30 spread over 3 nodes, then 30 on one node.
    let spread_deploy = Instant::now();
    c.deploy(json!([{ "name": "wide", "image": image, "replicas": 30 }]));
    common::cluster::time_until(long, || c.total("wide") == 30);
    let wide = spread_deploy.elapsed().as_secs_f64();
    let placed = c.spread("wide");
    assert!(c.orca(&["stop", "wide"]).status.success());
    common::cluster::time_until(long, || c.total("wide") == 0);
    let one_deploy = Instant::now();
    c.deploy(json!([{ "name": "narrow", "image": image, "replicas": 30,
        "placement": { "node": "n0" } }]));
    common::cluster::time_until(long, || c.running_on(0, "narrow") == 30);
    let narrow = one_deploy.elapsed().as_secs_f64();
    assert!(c.orca(&["stop", "narrow"]).status.success());
    common::cluster::time_until(long, || c.total("narrow") == 0);

    // Node loss: 9 replicas, 3 per node; n2's link cut.
    c.deploy(json!([{ "name": "web", "image": image, "replicas": 9 }]));
    common::cluster::time_until(long, || c.spread("web") == [3, 3, 3]);
    std::thread::sleep(Duration::from_secs(3));
    let idle_busy = rss_kib(c.agent_pid(1).unwrap());
    c.lab.set_link(2, false);
    let loss = common::cluster::time_until(long, || {
        let s = c.spread("web");
        s[0] + s[1] == 9
    });
    c.lab.set_link(2, true);

    println!("cluster (3 lab nodes, one run):");
    println!(
        "  node loss (link cut) to every replica running elsewhere: {loss:.1} s \
         (bound: grace {GRACE} s + reschedule_after {RESCHEDULE} s + 2 s = {} s)",
        GRACE + RESCHEDULE + 2
    );
    println!(
        "  deploy of 30 replicas: spread over 3 nodes {wide:.2} s {placed:?}, on one node {narrow:.2} s, \
         ratio {:.2}x",
        wide / narrow
    );
    println!(
        "  idle orca agent RSS: {:.1} MiB with no replica, {:.1} MiB with 3",
        idle_empty as f64 / 1024.0,
        idle_busy as f64 / 1024.0
    );
}
