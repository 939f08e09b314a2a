//! Published ports across the lab's nodes, side by side in one run, with
//! a keep-alive `kaweb` replica on node B (n1):
//!
//! - from node A's (n0's) own namespace: the replica's own address
//!   (through the overlay) against A's mesh port (DNAT, masquerade, then
//!   the same overlay), in alternating turns;
//! - from the LAN's namespace (a client outside the cluster): A's mesh
//!   port (forwarded to B) and B's host port (to its own replica), in
//!   alternating turns.
//!
//! Needs the test environment and wrk (`apt-get install wrk`):
//! `cargo bench --bench cluster_ports` (`ROUNDS=N` turns, default 5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

// Both load the tests' host helpers; each uses its own.
#[path = "common.rs"]
#[allow(clippy::duplicate_mod)]
mod bench;

use std::path::Path;
use std::time::{Duration, Instant};

use bench::{median, wrk_for_in, Wrk};
use common::cluster::{LabCluster, KAWEB};
use serde_json::json;

const SECS: u32 = 5;
const MESH: u16 = 18080;
const HOST: u16 = 18081;

fn rounds() -> usize {
    std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5)
}

fn line(name: &str, runs: &[Wrk]) {
    for (i, r) in runs.iter().enumerate() {
        println!(
            "  {name} {}: {:.0} req/s, p99 {:.2} ms {}",
            i + 1,
            r.rps,
            r.p99_ms,
            r.errors
        );
    }
}

fn ratio(what: &str, a: &[Wrk], b: &[Wrk]) {
    println!(
        "  {what}, median of {} turns: throughput {:.2}x ({:.0} / {:.0} req/s), p99 {:.2}x ({:.2} / {:.2} ms)",
        a.len(),
        median(a, |r| r.rps) / median(b, |r| r.rps),
        median(a, |r| r.rps),
        median(b, |r| r.rps),
        median(a, |r| r.p99_ms) / median(b, |r| r.p99_ms),
        median(a, |r| r.p99_ms),
        median(b, |r| r.p99_ms),
    );
}

#[tokio::main]
async fn main() {
    let env = common::env().expect("the test environment");
    let c = LabCluster::start(&env, 3, "").await;
    let kaweb = c.image(KAWEB);
    c.deploy(json!([
        { "name": "web", "image": kaweb, "port": 8080, "placement": { "node": "n1" },
          "ports": [format!("{MESH}:8080"), { "published": HOST, "target": 8080, "mode": "host" }] },
    ]));
    let start = Instant::now();
    while c.spread("web") != [0, 1, 0] {
        assert!(start.elapsed() < Duration::from_secs(120), "web not placed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ip = c.service("web")["instances"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let a_ns = Path::new("/run/netns").join(&c.lab.nodes[0].netns);
    let lan_ns = Path::new("/run/netns").join(&c.lab.lan);
    let (a, b) = (c.lab.nodes[0].address, c.lab.nodes[1].address);
    let direct = format!("http://{ip}:8080/");
    let mesh = format!("http://{a}:{MESH}/");
    let host = format!("http://{b}:{HOST}/");
    for (ns, url) in [
        (&a_ns, &direct),
        (&a_ns, &mesh),
        (&lan_ns, &mesh),
        (&lan_ns, &host),
    ] {
        wrk_for_in(ns, url, None, 2);
    }
    let (mut d, mut m, mut lm, mut lh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds() {
        if round % 2 == 0 {
            d.push(wrk_for_in(&a_ns, &direct, None, SECS));
            m.push(wrk_for_in(&a_ns, &mesh, None, SECS));
            lm.push(wrk_for_in(&lan_ns, &mesh, None, SECS));
            lh.push(wrk_for_in(&lan_ns, &host, None, SECS));
        } else {
            m.push(wrk_for_in(&a_ns, &mesh, None, SECS));
            d.push(wrk_for_in(&a_ns, &direct, None, SECS));
            lh.push(wrk_for_in(&lan_ns, &host, None, SECS));
            lm.push(wrk_for_in(&lan_ns, &mesh, None, SECS));
        }
    }
    println!(
        "published ports across nodes, one run, 1 kaweb replica on n1, wrk -t2 -c32, {} turns of {SECS} s",
        rounds()
    );
    println!(" from n0's namespace:");
    line("replica address (overlay)", &d);
    line("n0's mesh port", &m);
    ratio("mesh port / replica address", &m, &d);
    println!(" from the LAN's namespace:");
    line("n0's mesh port (to n1)", &lm);
    line("n1's host port", &lh);
    ratio("host port on n1 / mesh port on n0", &lh, &lm);
}
