//! Cross-node networking, measured in the multi-node lab over the VXLAN
//! overlay (the default backend), side by side in one run:
//!
//! - HTTP between replicas: wrk in a client replica's network namespace
//!   on node C against a keep-alive replica on node B (through the
//!   overlay) and against one on C itself, in alternating turns;
//! - the ingress of node A with backends only on B and C, against nginx
//!   in A's namespace proxying to the same two replicas, alternating;
//! - from a replica's first passed readiness probe on its node to the
//!   first request another node's ingress routes to it: the server's
//!   node's and an agent's.
//!
//! Needs the test environment, wrk and nginx (`apt-get install wrk
//! nginx-light`): `cargo bench --bench cluster_network`
//! (`BACKEND=host-gw` for plain routes; `ROUNDS=N` turns, default 5).
//!
//! `FLOOR=1` adds a reference at the end: the replica-to-replica turns
//! again with every node's nftables rules flushed and the bridges'
//! netfilter calls off, so that what is left is the kernel's own path
//! (routing, the overlay, the lab's links) and none of orca's filtering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

// Both load the tests' host helpers; each uses its own.
#[path = "common.rs"]
#[allow(clippy::duplicate_mod)]
mod bench;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use bench::{median, wrk_for_in, wrk_paced_in, Wrk};
use common::cluster::{load, LabCluster, KAWEB};
use serde_json::json;

/// Turns of each side (`ROUNDS=N` sets them).
fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}
const SECS: u32 = 5;
const PAUSE_MS: u32 = 2;

fn instances(c: &LabCluster, service: &str) -> Vec<serde_json::Value> {
    c.service(service)["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn wait(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `text` without its terminal colour codes (`ESC [ ... m`).
fn plain(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

/// The wall-clock time of the first line of `log` that says replica `id`
/// turned ready.
fn ready_at(log: &str, id: &str) -> Option<SystemTime> {
    let log = plain(log);
    let line = log
        .lines()
        .find(|l| l.contains("readiness changed") && l.contains(id) && l.contains("ready=true"))?;
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

fn report(label: &str, what: &[(&str, &[Wrk], &[Wrk])]) {
    for (load, a, b) in what {
        println!(
            "  {label}, {load}, median of {} turns: throughput {:.2}x ({:.0} / {:.0} req/s), \
             p99 {:.2}x ({:.2} / {:.2} ms)",
            a.len(),
            median(a, |r| r.rps) / median(b, |r| r.rps),
            median(a, |r| r.rps),
            median(b, |r| r.rps),
            median(a, |r| r.p99_ms) / median(b, |r| r.p99_ms),
            median(a, |r| r.p99_ms),
            median(b, |r| r.p99_ms),
        );
    }
}

#[tokio::main]
async fn main() {
    let env = common::env().expect("the test environment");
    // `BACKEND=host-gw` runs it all over plain routes instead.
    let backend = std::env::var("BACKEND").unwrap_or_else(|_| "vxlan".into());
    let c = LabCluster::start_with(&env, 3, "", &format!("backend = \"{backend}\"")).await;
    let kaweb = c.image(KAWEB);
    // Node A (n0) keeps no replica of these: its ingress reaches B and C.
    assert!(c.orca(&["drain", "n0"]).status.success());
    c.deploy(json!([
        { "name": "far", "image": kaweb, "replicas": 1, "port": 8080, "placement": { "node": "n1" } },
        { "name": "near", "image": kaweb, "replicas": 1, "port": 8080, "placement": { "node": "n2" } },
        { "name": "client", "image": c.image("web:v1"), "replicas": 1, "placement": { "node": "n2" } },
        { "name": "edge", "image": kaweb, "replicas": 2, "port": 8080, "domain": "edge.test",
          "readiness": { "path": "/healthz", "interval_secs": 1 } },
    ]));
    wait("replicas placed", || {
        c.spread("far") == [0, 1, 0]
            && c.spread("near") == [0, 0, 1]
            && c.spread("client") == [0, 0, 1]
            && c.spread("edge") == [0, 1, 1]
    });
    let ip = |service: &str| {
        instances(&c, service)[0]["ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let client = instances(&c, "client")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let client_ns = c.replica_netns(2, &client);
    let (far, near) = (ip("far"), ip("near"));

    // Replica to replica: across the overlay against on one node.
    let far_url = format!("http://{far}:8080/");
    let near_url = format!("http://{near}:8080/");
    wrk_for_in(&client_ns, &far_url, None, 2);
    wrk_for_in(&client_ns, &near_url, None, 2);
    let (mut across, mut same) = (Vec::new(), Vec::new());
    for _ in 0..rounds() {
        across.push(wrk_for_in(&client_ns, &far_url, None, SECS));
        same.push(wrk_for_in(&client_ns, &near_url, None, SECS));
    }

    // Node A's ingress against nginx in A's namespace, same backends.
    let a_ns = Path::new("/run/netns").join(&c.lab.nodes[0].netns);
    let backends: Vec<String> = instances(&c, "edge")
        .iter()
        .map(|i| format!("server {}:8080;", i["ip"].as_str().unwrap()))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; upstream edge {{ {b} keepalive 64; }}\n\
             server {{ listen 127.0.0.1:8090; location / {{ proxy_pass http://edge; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; }} }} }}\n",
            d = dir.path().display(),
            b = backends.join(" ")
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nsenter")
        .arg(format!("--net={}", a_ns.display()))
        .args(["nginx", "-c"])
        .arg(&conf)
        .args(["-p"])
        .arg(dir.path())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    std::thread::sleep(Duration::from_millis(500));
    let host = Some("Host: edge.test");
    let (orca_url, nginx_url) = ("http://127.0.0.1:8080/", "http://127.0.0.1:8090/");
    wrk_for_in(&a_ns, orca_url, host, 2);
    wrk_for_in(&a_ns, nginx_url, host, 2);
    let (mut orca, mut via_nginx, mut orca_paced, mut nginx_paced) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds() {
        orca.push(wrk_for_in(&a_ns, orca_url, host, SECS));
        via_nginx.push(wrk_for_in(&a_ns, nginx_url, host, SECS));
        orca_paced.push(wrk_paced_in(&a_ns, orca_url, host, SECS, PAUSE_MS));
        nginx_paced.push(wrk_paced_in(&a_ns, nginx_url, host, SECS, PAUSE_MS));
    }
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();

    // Ready on C to routed by another node's ingress: the server's own
    // (n0, updated in place) and an agent's (n1, pushed over its stream).
    // Probes from each node's namespace, as fast as they go, until the new
    // replica answers through that node's ingress.
    let probe = |i: usize| {
        let netns = Path::new("/run/netns").join(&c.lab.nodes[i].netns);
        std::thread::spawn(move || {
            load::enter(&netns);
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(120) {
                if matches!(load::get("late.test"), Ok((200, _))) {
                    return SystemTime::now();
                }
            }
            panic!("late.test never answered through the node's ingress");
        })
    };
    let (on_n0, on_n1) = (probe(0), probe(1));
    c.deploy(
        json!([{ "name": "late", "image": kaweb, "replicas": 1, "port": 8080,
        "domain": "late.test", "placement": { "node": "n2" },
        "readiness": { "path": "/healthz", "interval_secs": 1 } }]),
    );
    let (routed_n0, routed_n1) = (on_n0.join().unwrap(), on_n1.join().unwrap());
    let late = instances(&c, "late")[0]["id"].as_str().unwrap().to_string();
    let ready = ready_at(&c.log(2), &late).expect("n2 logged the replica ready");
    let ms = |t: SystemTime| t.duration_since(ready).unwrap_or_default().as_secs_f64() * 1000.0;

    // The reference without any filtering, last: it leaves the lab open.
    let floor = std::env::var("FLOOR").is_ok_and(|f| f == "1").then(|| {
        for node in &c.lab.nodes {
            let script = "nft flush ruleset && sysctl -qw net.bridge.bridge-nf-call-iptables=0";
            let ok = Command::new("ip")
                .args(["netns", "exec", &node.netns, "sh", "-c", script])
                .status()
                .unwrap()
                .success();
            assert!(ok, "flushing {}'s rules", node.netns);
        }
        let (mut across, mut same) = (Vec::new(), Vec::new());
        for _ in 0..rounds() {
            across.push(wrk_for_in(&client_ns, &far_url, None, SECS));
            same.push(wrk_for_in(&client_ns, &near_url, None, SECS));
        }
        (across, same)
    });

    println!("cluster network (3 lab nodes, {backend}, one run):");
    report(
        "replica to replica, across nodes / on one node",
        &[("saturated (wrk -t2 -c32)", &across, &same)],
    );
    if let Some((across, same)) = &floor {
        report(
            "replica to replica, no netfilter on any node (reference)",
            &[("saturated (wrk -t2 -c32)", across, same)],
        );
    }
    report(
        "ingress of node A to B and C, orca / nginx",
        &[
            ("saturated (wrk -t2 -c32)", &orca, &via_nginx),
            (
                &format!("paced ({PAUSE_MS} ms between requests)"),
                &orca_paced,
                &nginx_paced,
            ),
        ],
    );
    println!(
        "  ready on n2 to the first request routed to it: by n0's ingress (the server's) {:.1} ms, \
         by n1's (an agent's) {:.1} ms",
        ms(routed_n0),
        ms(routed_n1)
    );
}
