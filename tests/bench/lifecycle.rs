//! The deploy lifecycle measured: a rolling update of 10 replicas v1 -> v2
//! with a health path, from the deploy until every replica runs v2 and the
//! old ones are gone, with requests through the ingress all along (failed
//! ones counted); and how closely canary traffic follows its weight over
//! 10 000 requests.
//!
//! With `ORCA_BENCH_DOCKER_HOST` naming a Docker engine in Swarm mode
//! (`tests/bench/swarm.sh up` starts a private one), the same rolling update
//! runs on Swarm in the same run: `docker service update --image` on a
//! service of 10 replicas of the same images, with the same health check
//! (the same path, every second) and stop grace, and Swarm's update
//! defaults otherwise (one at a time, stop-first, 5 s monitor).
//!
//! Needs the test environment and a release build:
//! `cargo bench --bench lifecycle`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::client::ApiClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common.rs"]
mod common;

use common::BenchServer;

async fn get(port: u16) -> Option<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    text.starts_with("HTTP/1.1 200").then(|| {
        text.split_once("\r\n\r\n")
            .map(|(_, b)| b.trim().to_string())
            .unwrap_or_default()
    })
}

fn spec(image: &str, replicas: u32, canary: Option<u32>) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": replicas, "port": 8080, "domain": "bench.test",
        "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 });
    if let Some(w) = canary {
        s["deploy"] = json!({ "strategy": "canary", "canary_weight": w });
    }
    json!({ "services": [s] })
}

/// Waits until `n` stable replicas of `version` and `canaries` canaries are
/// healthy and nothing else runs; fails after 2 minutes with the status.
async fn settled(client: &ApiClient, version: u64, n: usize, canaries: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        assert!(
            Instant::now() < deadline,
            "not settled at version {version} with {n} + {canaries} replicas: {s}"
        );
        let inst = s["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let stable = inst
            .iter()
            .filter(|i| i["version"] == version && i["healthy"] == true && i["canary"] == false)
            .count();
        let canary = inst
            .iter()
            .filter(|i| i["canary"] == true && i["healthy"] == true)
            .count();
        if stable == n && canary == canaries && inst.len() == n + canaries {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `docker` against the engine at `host`; stdout, or panics with stderr.
fn docker(host: &str, args: &[&str]) -> String {
    common::run(
        std::process::Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(args),
    )
}

/// Swarm's rolling update of 10 replicas v1 -> v2: (every replica runs v2,
/// healthy, and no v1 container runs; `docker service update` returned).
fn swarm_rolling(host: &str, v1: &str, v2: &str) -> (Duration, Duration) {
    const NAME: &str = "orca-bench-web";
    docker(host, &["pull", "-q", v1]);
    docker(host, &["pull", "-q", v2]);
    let _ = std::process::Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(["service", "rm", NAME])
        .output();
    std::thread::sleep(Duration::from_secs(3));
    docker(
        host,
        &[
            "service",
            "create",
            "-q",
            "--name",
            NAME,
            "--replicas",
            "10",
            "--health-cmd",
            "wget -q -O /dev/null http://127.0.0.1:8080/healthz",
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
            "--stop-grace-period",
            "1s",
            v1,
        ],
    );
    let t = Instant::now();
    let (host_owned, v2_owned) = (host.to_string(), v2.to_string());
    let update = std::thread::spawn(move || {
        docker(
            &host_owned,
            &["service", "update", "-q", "--image", &v2_owned, NAME],
        );
        t.elapsed()
    });
    let served = loop {
        let running = docker(
            host,
            &[
                "ps",
                "--filter",
                &format!("label=com.docker.swarm.service.name={NAME}"),
                "--format",
                "{{.Image}} {{.Status}}",
            ],
        );
        let lines: Vec<&str> = running.lines().collect();
        let new_healthy = lines
            .iter()
            .filter(|l| l.starts_with(v2) && l.contains("(healthy)"))
            .count();
        let old = lines.iter().filter(|l| l.starts_with(v1)).count();
        if new_healthy == 10 && old == 0 {
            break t.elapsed();
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let reported = update.join().expect("docker service update");
    docker(host, &["service", "rm", NAME]);
    (served, reported)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let (v1, v2) = (
        format!("{registry}/orca-test/web:v1"),
        format!("{registry}/orca-test/web:v2"),
    );
    let server = BenchServer::start("lc", "obenchl0", "10.125.0.0/24").await;
    let client = server.client.clone();
    let proxy_port = server.proxy_port;
    client
        .post::<_, Value>("/api/v1/deploy", &spec(&v1, 10, None))
        .await
        .unwrap();
    settled(&client, 1, 10, 0).await;

    // Rolling v1 -> v2 under continuous requests.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, 0usize);
            while !stop.load(Ordering::Relaxed) {
                match get(proxy_port).await {
                    Some(_) => ok += 1,
                    None => failed += 1,
                }
            }
            (ok, failed)
        })
    };
    let t = Instant::now();
    client
        .post::<_, Value>("/api/v1/deploy", &spec(&v2, 10, None))
        .await
        .unwrap();
    settled(&client, 2, 10, 0).await;
    let rolled = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();

    // Canary accuracy over 10 000 requests, at 10 % and at 50 %.
    let mut accuracy = Vec::new();
    for weight in [10u32, 50] {
        client
            .post::<_, Value>("/api/v1/deploy", &spec(&v1, 10, Some(weight)))
            .await
            .unwrap();
        let canaries = (10 * weight).div_ceil(100).max(1) as usize;
        settled(&client, 2, 10, canaries).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..10_000 {
            if let Some(body) = get(proxy_port).await {
                *seen.entry(body).or_default() += 1;
            }
        }
        let share = *seen.get("web v1").unwrap_or(&0) as f64 / 100.0;
        accuracy.push((weight, share));
        client
            .post::<_, Value>("/api/v1/services/web/rollback", &json!({}))
            .await
            .unwrap();
        settled(&client, 2, 10, 0).await;
    }

    server.stop().await;

    let swarm = std::env::var("ORCA_BENCH_DOCKER_HOST").ok().map(|host| {
        let (v1, v2) = (v1.clone(), v2.clone());
        std::thread::spawn(move || swarm_rolling(&host, &v1, &v2))
            .join()
            .expect("swarm run")
    });

    println!("lifecycle, one run, 10 busybox httpd replicas behind the ingress");
    println!(
        "rolling update v1 -> v2 (health path, max_unavailable 0): every replica v2 and ready, old ones gone, after {:.1} s; {ok} requests served, {failed} failed",
        rolled.as_secs_f64()
    );
    // A rollout that failed requests measured failures, not a rollout.
    assert_eq!(
        failed, 0,
        "{failed} requests failed during the rolling update"
    );
    match swarm {
        Some((served, reported)) => println!(
            "swarm, same images and health check: every replica v2 and healthy, no v1 running, after {:.1} s; `docker service update` returned after {:.1} s; orca {:.1}x faster to serve v2 everywhere",
            served.as_secs_f64(),
            reported.as_secs_f64(),
            served.as_secs_f64() / rolled.as_secs_f64()
        ),
        None => println!("swarm: not run (set ORCA_BENCH_DOCKER_HOST; tests/bench/swarm.sh up)"),
    }
    for (weight, share) in accuracy {
        println!("canary at {weight}%: {share:.2}% of 10000 requests went to the canary");
    }
}
