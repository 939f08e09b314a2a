//! The control plane on etcd against sled, in the multi-node lab, side by
//! side in one run. The same nodes each time: the server(s) with
//! `[node] workloads = false`, and three agents that run the replicas.
//!
//! - sled: one server; etcd: three servers, each beside a member of a
//!   three-member etcd (every write on a quorum).
//! - API write latency: p50/p99 of a scale (2 and 3 replicas in turn, one
//!   every 100 ms), sent from inside a server's namespace; on etcd both to
//!   the leader and to a follower (which sends it on).
//! - A deploy of 30 replicas over the three agents, from the POST until
//!   all 30 run (the image already on every node).
//! - Failover, over `ORCA_BENCH_KILLS` (default 20) kill -9s of the leader:
//!   from the kill to the first stream an agent takes from the new leader
//!   (its first command follows on it), read from the agents' logs; and
//!   from the new leader's election to its control plane running.
//! - The same with 1,000 services stored.
//!
//! Needs the test environment (`source tests/env.sh && orca_env_start`):
//! `cargo bench --bench ha`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant, SystemTime};

use common::cluster::ha::LEADER_TTL_SECS;
use common::cluster::{LabCluster, ADMIN, KAWEB};
use serde_json::json;

const TIMINGS: &str = "heartbeat_grace_secs = 5\nreschedule_after_secs = 600";

/// `POST path body` to 127.0.0.1:6880 of the calling thread's namespace:
/// the status code.
fn post(path: &str, body: &str) -> u16 {
    let mut s = std::net::TcpStream::connect("127.0.0.1:6880").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// p50 and p99 (ms) of `n` scales of `lat` sent to server `i`.
fn scale_latency(c: &LabCluster, i: usize, n: usize) -> (f64, f64) {
    let netns = std::path::PathBuf::from(format!("/run/netns/{}", c.lab.nodes[i].netns));
    let mut ms = std::thread::spawn(move || {
        common::cluster::load::enter(&netns);
        (0..n)
            .map(|k| {
                let body = format!("{{\"replicas\": {}}}", 2 + k % 2);
                let t = Instant::now();
                let status = post("/api/v1/services/lat/scale", &body);
                let took = t.elapsed().as_secs_f64() * 1000.0;
                assert_eq!(status, 200, "scale {k}");
                std::thread::sleep(Duration::from_millis(100));
                took
            })
            .collect::<Vec<f64>>()
    })
    .join()
    .unwrap();
    ms.sort_by(|a, b| a.total_cmp(b));
    (
        ms[ms.len() / 2],
        ms[(ms.len() * 99 / 100).min(ms.len() - 1)],
    )
}

/// The deploy of 30 over the agents (after a warm-up that puts the image
/// on each): seconds until all run.
fn deploy_30(c: &LabCluster) -> f64 {
    let long = Duration::from_secs(180);
    let image = c.image(KAWEB);
    c.deploy(json!([{ "name": "warm", "image": image, "replicas": 3 }]));
    common::cluster::time_until(long, || c.total("warm") == 3);
    assert!(c.orca(&["stop", "warm"]).status.success());
    common::cluster::time_until(long, || c.total("warm") == 0);
    let t = Instant::now();
    c.deploy(json!([{ "name": "wide", "image": image, "replicas": 30 }]));
    common::cluster::time_until(long, || c.total("wide") == 30);
    let took = t.elapsed().as_secs_f64();
    assert!(c.orca(&["stop", "wide"]).status.success());
    common::cluster::time_until(long, || c.total("wide") == 0);
    took
}

/// The wall time a log line starts with.
fn stamp(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

/// Seconds from `since` to the first line of `log` after it that holds
/// `what`.
fn first_after(log: &str, what: &str, since: SystemTime) -> Option<f64> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(stamp)
        .find(|t| *t > since)
        .map(|t| t.duration_since(since).unwrap().as_secs_f64())
}

/// One kill -9 of the leader: (seconds to the first agent stream of the
/// new leader, seconds from its election to its control plane running).
async fn failover(c: &mut LabCluster) -> (f64, f64) {
    let leader = c.until_leader(c.api_node, None).await;
    let asked = (0..3).find(|&i| i != leader).unwrap();
    c.api_node = asked;
    let killed = SystemTime::now();
    c.kill_server_at(leader);
    let new = c.until_leader(asked, Some(leader)).await;
    let first_stream = || {
        [3, 4, 5]
            .iter()
            .filter_map(|&i| first_after(&c.log(i), "following the leader of term", killed))
            .reduce(f64::min)
    };
    let mut to_agents = None;
    for _ in 0..300 {
        to_agents = first_stream();
        if to_agents.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = c.log(new);
    let elected = first_after(&log, "leading the control plane", killed).unwrap();
    let started = first_after(&log, "control plane started", killed).unwrap();
    c.spawn_server_at(leader);
    common::eventually("the old leader back", Duration::from_secs(30), async || {
        c.info_on(leader).map(|_| ()).ok_or("no answer".to_string())
    })
    .await;
    (
        to_agents.expect("no agent took the new leader"),
        started - elected,
    )
}

fn median_max(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[v.len() - 1])
}

#[tokio::main]
async fn main() {
    let env = common::env().expect("the test environment");
    let kills: usize = std::env::var("ORCA_BENCH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(20);

    let (sled_write, sled_deploy) = {
        let c = LabCluster::start_control_plane(&env, 1, 4, TIMINGS, false).await;
        c.deploy(json!([{ "name": "lat", "image": c.image(KAWEB), "replicas": 2 }]));
        let write = scale_latency(&c, 0, 100);
        assert!(c.orca(&["stop", "lat"]).status.success());
        (write, deploy_30(&c))
    };

    let mut c = LabCluster::start_ha(&env, 3, 6, TIMINGS).await;
    let leader = c.until_leader(0, None).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    c.api_node = leader;
    c.deploy(json!([{ "name": "lat", "image": c.image(KAWEB), "replicas": 2 }]));
    let etcd_write = scale_latency(&c, leader, 100);
    let forwarded_write = scale_latency(&c, follower, 100);
    assert!(c.orca(&["stop", "lat"]).status.success());
    let etcd_deploy = deploy_30(&c);

    let mut to_agents = Vec::new();
    let mut taking = Vec::new();
    for _ in 0..kills {
        let (a, t) = failover(&mut c).await;
        to_agents.push(a);
        taking.push(t);
    }

    // 1,000 services stored (no replicas), then the leader killed.
    c.api_node = c.until_leader(c.api_node, None).await;
    for batch in 0..10 {
        let services: Vec<_> = (0..100)
            .map(|k| json!({ "name": format!("s{}", batch * 100 + k), "image": c.image(KAWEB), "replicas": 0 }))
            .collect();
        c.deploy(serde_json::Value::Array(services));
    }
    c.deploy(json!([{ "name": "kept", "image": c.image(KAWEB), "replicas": 2 }]));
    common::cluster::time_until(Duration::from_secs(120), || c.total("kept") == 2);
    let mut big_agents = Vec::new();
    let mut big_taking = Vec::new();
    for _ in 0..3 {
        let (a, t) = failover(&mut c).await;
        big_agents.push(a);
        big_taking.push(t);
    }

    println!(
        "control plane on etcd against sled (lab, one run, leader_ttl_secs = {LEADER_TTL_SECS}):"
    );
    println!(
        "  scale latency p50/p99: sled {:.1}/{:.1} ms, etcd leader {:.1}/{:.1} ms ({:.2}x/{:.2}x), \
         etcd through a follower {:.1}/{:.1} ms",
        sled_write.0,
        sled_write.1,
        etcd_write.0,
        etcd_write.1,
        etcd_write.0 / sled_write.0,
        etcd_write.1 / sled_write.1,
        forwarded_write.0,
        forwarded_write.1
    );
    println!(
        "  deploy of 30 replicas over 3 agents: sled {sled_deploy:.2} s, etcd {etcd_deploy:.2} s ({:.2}x)",
        etcd_deploy / sled_deploy
    );
    let (m, x) = median_max(to_agents);
    let (tm, tx) = median_max(taking);
    println!(
        "  failover over {kills} kill -9s: to the new leader's first agent stream median {m:.2} s, max {x:.2} s; \
         election to control plane running median {:.0} ms, max {:.0} ms",
        tm * 1000.0,
        tx * 1000.0
    );
    let (m, x) = median_max(big_agents);
    let (tm, tx) = median_max(big_taking);
    println!(
        "  with 1,000 services stored, 3 kills: to the first agent stream median {m:.2} s, max {x:.2} s; \
         election to control plane running median {:.0} ms, max {:.0} ms",
        tm * 1000.0,
        tx * 1000.0
    );
}
