//! orca's ingress against Debian's nginx as a reverse proxy to the same
//! replicas (the keep-alive `kaweb` test image, so both proxies can pool
//! their upstream connections), and against the replicas reached directly,
//! in one run, with
//! wrk on loopback; and the time from a replica's start to the first request
//! the ingress routes to it.
//!
//! Needs the test environment, a release build, wrk and nginx
//! (`apt-get install wrk nginx-light`): `cargo bench --bench ingress`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common.rs"]
mod common;

use common::{free_port, wrk, wrk_for, wrk_paced, BenchServer};

/// Turns each proxy takes under each load, unless `ROUNDS` says otherwise.
const ROUNDS: usize = 12;
/// Seconds per turn.
const ROUND_SECS: u32 = 4;
/// The pause each wrk connection takes between requests in the paced
/// turns: 32 connections then offer at most 16k requests/s, about a third
/// of what either proxy serves at saturation on this machine.
const PAUSE_MS: u32 = 2;

async fn get_status(port: u16, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/kaweb:v1");
    let server = BenchServer::start("in", "obenchi0", "10.124.0.0/24").await;
    let client = server.client.clone();
    let proxy_port = server.proxy_port;
    let nginx_port = free_port();
    let nginx_tmp = tempfile::tempdir().unwrap();
    let ips = common::deploy_healthy(
        &client,
        &json!({ "services": [{ "name": "web", "image": image, "replicas": 3, "port": 8080, "domain": "bench.test",
                "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 }] }),
        3,
    )
    .await;

    let nginx_dir = nginx_tmp.path().join("nginx");
    let listen = format!("listen 127.0.0.1:{nginx_port};");
    let mut nginx = common::nginx_proxy(&nginx_dir, &ips, &listen, "").await;

    let direct = wrk(&format!("http://{}:8080/", ips[0]), None);
    let orca_url = format!("http://127.0.0.1:{proxy_port}/");
    let nginx_url = format!("http://127.0.0.1:{nginx_port}/");
    let host = Some("Host: bench.test");
    // Both warm up (pools filled, pages touched), then take turns, at
    // saturation and paced; the medians are compared, since single p99s on
    // a shared 2-core machine swing by several times.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    wrk_for(&orca_url, host, 3);
    wrk_for(&nginx_url, host, 3);
    let (mut orca, mut via_nginx) = (Vec::new(), Vec::new());
    let (mut orca_paced, mut nginx_paced) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Who goes first alternates too, so neither always follows the other.
        if round % 2 == 0 {
            orca.push(wrk_for(&orca_url, host, ROUND_SECS));
            via_nginx.push(wrk_for(&nginx_url, host, ROUND_SECS));
            orca_paced.push(wrk_paced(&orca_url, host, ROUND_SECS, PAUSE_MS));
            nginx_paced.push(wrk_paced(&nginx_url, host, ROUND_SECS, PAUSE_MS));
        } else {
            via_nginx.push(wrk_for(&nginx_url, host, ROUND_SECS));
            orca.push(wrk_for(&orca_url, host, ROUND_SECS));
            nginx_paced.push(wrk_paced(&nginx_url, host, ROUND_SECS, PAUSE_MS));
            orca_paced.push(wrk_paced(&orca_url, host, ROUND_SECS, PAUSE_MS));
        }
    }
    // SIGTERM to the master stops its workers too (SIGKILL would orphan them).
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();

    // From a replica's start to the first request routed to it.
    client
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 0 }))
        .await
        .unwrap();
    while get_status(proxy_port, "bench.test").await != 503 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    client
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();
    let mut started = None;
    loop {
        if started.is_none() {
            let s: Value = client.get("/api/v1/status").await.unwrap();
            if s["services"][0]["instances"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["state"] == "running"))
            {
                started = Some(t.elapsed());
            }
        }
        if get_status(proxy_port, "bench.test").await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_routed = t.elapsed();

    server.stop().await;

    println!(
        "ingress, one run, 3 kaweb (keep-alive) replicas, wrk -t2 -c32 on loopback \
         (direct 8 s; {rounds} turns of {ROUND_SECS} s per proxy at saturation, and paced with a {PAUSE_MS} ms pause per connection)"
    );
    println!("{:<36} {:>10} {:>9}  errors", "", "req/s", "p99 ms");
    println!(
        "{:<36} {:>10.0} {:>9.2}  {}",
        "direct to one replica", direct.rps, direct.p99_ms, direct.errors
    );
    for (load, o, n) in [
        ("saturated", &orca, &via_nginx),
        ("paced", &orca_paced, &nginx_paced),
    ] {
        for round in 0..rounds {
            for (name, r) in [
                ("orca ingress", &o[round]),
                ("nginx reverse proxy", &n[round]),
            ] {
                let row = format!("{name}, {load} {}", round + 1);
                println!("{row:<36} {:>10.0} {:>9.2}  {}", r.rps, r.p99_ms, r.errors);
            }
        }
        println!(
            "orca / nginx, {load}, median of the turns: throughput {:.2}x, p99 {:.2}x ({:.2} / {:.2} ms)",
            common::median(o, |r| r.rps) / common::median(n, |r| r.rps),
            common::median(o, |r| r.p99_ms) / common::median(n, |r| r.p99_ms),
            common::median(o, |r| r.p99_ms),
            common::median(n, |r| r.p99_ms)
        );
    }
    println!(
        "scale 0 -> 1: task running after {:.0} ms, first routed request after {:.0} ms",
        started.unwrap_or_default().as_secs_f64() * 1000.0,
        first_routed.as_secs_f64() * 1000.0
    );
}
