//! The deploy lifecycle measured: rolling updates of 10 replicas (v1 <->
//! v2, `ORCA_BENCH_RUNS` times, default 50) and of 30, with a health path,
//! under requests through the ingress every 5 ms. Each update is timed to
//! two ends: v2 serving everywhere (every replica v2 and ready, no old
//! replica left in rotation) and old ones gone (stopped and removed).
//! Every failed request is recorded with its status, body and time from
//! the deploy, beside the event stream's events around it. Then how
//! closely canary traffic follows its weight over 10 000 requests.
//!
//! With `ORCA_BENCH_DOCKER_HOST` naming a Docker engine in Swarm mode
//! (`tests/bench/swarm.sh up` starts a private one), the same rolling
//! updates run on Swarm in the same run: `docker service update --image`
//! on a service of 10 and of 30 replicas of the same images, with the same
//! health check (the same path, every second) and stop grace, and Swarm's
//! update defaults otherwise (one at a time, stop-first, 5 s monitor).
//!
//! `ORCA_BENCH_SURGE` sets `deploy.max_surge` (default 25%).
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

use common::docker::{docker, docker_quiet};

use common::BenchServer;

/// One request through the ingress: the body of a 200, else what came
/// back (status line and body, or the connection's error).
async fn get(port: u16) -> Result<String, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .await
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if head.starts_with("HTTP/1.1 200") {
        Ok(body.trim().to_string())
    } else {
        Err(format!(
            "{} | {}",
            head.lines().next().unwrap_or("(nothing)"),
            body.trim()
        ))
    }
}

/// A failed request: when (from the deploy) and what came back.
struct Failure {
    at: Duration,
    what: String,
}

/// Requests through the ingress every 5 ms until stopped.
struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(usize, Vec<Failure>)>,
}

impl Load {
    fn start(port: u16, since: Instant) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let (mut ok, mut failed) = (0usize, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let sent = since.elapsed();
                    match get(port).await {
                        Ok(_) => ok += 1,
                        Err(what) => failed.push(Failure { at: sent, what }),
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (ok, failed)
            }
        });
        Load { stop, task }
    }

    async fn finish(self) -> (usize, Vec<Failure>) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap()
    }
}

/// The server's events so far, each with when it arrived.
type Timeline = Vec<(Instant, api::events::Event)>;

/// The events within 500 ms of a failure at `at` after `since`.
fn events_around(timeline: &Timeline, since: Instant, at: Duration) -> Vec<String> {
    timeline
        .iter()
        .filter_map(|(t, e)| {
            let rel = t.checked_duration_since(since)?;
            let near = rel.abs_diff(at) <= Duration::from_millis(500);
            near.then(|| {
                format!(
                    "  +{:>5} ms {:<18} {}",
                    rel.as_millis(),
                    e.kind.as_str(),
                    e.message
                )
            })
        })
        .collect()
}

fn spec(image: &str, replicas: u32, canary: Option<u32>) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": replicas, "port": 8080, "domain": "bench.test",
        "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 });
    if let Some(w) = canary {
        s["deploy"] = json!({ "strategy": "canary", "canary_weight": w });
    } else if let Ok(surge) = std::env::var("ORCA_BENCH_SURGE") {
        // `deploy.max_surge` other than the default (a count or "N%").
        let surge: Value = surge.parse::<u64>().map_or(json!(surge), |n| json!(n));
        s["deploy"] = json!({ "max_surge": surge });
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

/// A rolling update's two ends, from the deploy.
struct Rolled {
    /// Every replica of the version ready, no old one in rotation.
    serving: Duration,
    /// And every old one gone.
    gone: Duration,
}

/// Deploys `image` at `n` replicas as version `version` and times it.
async fn roll(client: &ApiClient, image: &str, version: u64, n: usize, t: Instant) -> Rolled {
    client
        .post::<_, Value>("/api/v1/deploy", &spec(image, n as u32, None))
        .await
        .unwrap();
    let deadline = t + Duration::from_secs(120);
    let mut serving = None;
    loop {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        assert!(
            Instant::now() < deadline,
            "version {version} not rolled out: {s}"
        );
        let inst = s["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let new = inst
            .iter()
            .filter(|i| i["version"] == version && i["healthy"] == true && i["state"] == "running")
            .count();
        let old_in_rotation = inst
            .iter()
            .filter(|i| i["version"] != version && i["state"] != "stopping")
            .count();
        if new == n && old_in_rotation == 0 && serving.is_none() {
            serving = Some(t.elapsed());
        }
        if new == n && inst.len() == n {
            return Rolled {
                serving: serving.unwrap_or_else(|| t.elapsed()),
                gone: t.elapsed(),
            };
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The median of `d`.
fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

/// Swarm's rolling update of `n` replicas v1 -> v2: (every replica runs
/// v2, healthy, and no v1 container runs; `docker service update` returned).
fn swarm_rolling(host: &str, v1: &str, v2: &str, n: usize) -> (Duration, Duration) {
    const NAME: &str = "orca-bench-web";
    docker(host, &["pull", "-q", v1]);
    docker(host, &["pull", "-q", v2]);
    docker_quiet(host, &["service", "rm", NAME]);
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
            &n.to_string(),
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
        if new_healthy == n && old == 0 {
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
    let runs: usize = std::env::var("ORCA_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(50);
    let (v1, v2) = (
        format!("{registry}/orca-test/web:v1"),
        format!("{registry}/orca-test/web:v2"),
    );
    let server = BenchServer::start("lc", "obenchl0", "10.125.0.0/24").await;
    let client = server.client.clone();
    let proxy_port = server.proxy_port;
    let (_follower, mut arrived) = common::follow_events(client.clone(), "web").await;
    let mut timeline: Timeline = Vec::new();
    client
        .post::<_, Value>("/api/v1/deploy", &spec(&v1, 10, None))
        .await
        .unwrap();
    settled(&client, 1, 10, 0).await;

    // Rolling updates, v1 <-> v2, under requests every 5 ms; each failed
    // request shown with the events around it.
    let mut version = 1;
    let mut ten: Vec<Rolled> = Vec::new();
    let mut thirty: Vec<Rolled> = Vec::new();
    let (mut served, mut failures) = (0usize, 0usize);
    for (n, count) in [(10usize, runs), (30, 3.min(runs).max(1))] {
        if n != 10 {
            client
                .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": n }))
                .await
                .unwrap();
            settled(&client, version, n, 0).await;
        }
        for run in 0..count {
            version += 1;
            let image = if version % 2 == 0 { &v2 } else { &v1 };
            let t = Instant::now();
            let load = Load::start(proxy_port, t);
            let rolled = roll(&client, image, version, n, t).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let (ok, failed) = load.finish().await;
            served += ok;
            failures += failed.len();
            while let Ok(e) = arrived.try_recv() {
                timeline.push(e);
            }
            for f in &failed {
                println!(
                    "{n} replicas, run {run}, version {version}: request at +{} ms failed: {}",
                    f.at.as_millis(),
                    f.what
                );
                for line in events_around(&timeline, t, f.at) {
                    println!("{line}");
                }
            }
            if n == 10 { &mut ten } else { &mut thirty }.push(rolled);
        }
    }
    client
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 10 }))
        .await
        .unwrap();
    settled(&client, version, 10, 0).await;

    // Canary accuracy over 10 000 requests, at 10 % and at 50 %.
    let mut accuracy = Vec::new();
    for weight in [10u32, 50] {
        // The other image than the stable version's.
        let canary = if version % 2 == 0 { &v1 } else { &v2 };
        client
            .post::<_, Value>("/api/v1/deploy", &spec(canary, 10, Some(weight)))
            .await
            .unwrap();
        let canaries = (10 * weight).div_ceil(100).max(1) as usize;
        settled(&client, version, 10, canaries).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let body = if canary == &v1 { "web v1" } else { "web v2" };
        let mut seen: HashMap<String, usize> = HashMap::new();
        for _ in 0..10_000 {
            if let Ok(b) = get(proxy_port).await {
                *seen.entry(b).or_default() += 1;
            }
        }
        let share = *seen.get(body).unwrap_or(&0) as f64 / 100.0;
        accuracy.push((weight, share));
        client
            .post::<_, Value>("/api/v1/services/web/rollback", &json!({}))
            .await
            .unwrap();
        settled(&client, version, 10, 0).await;
    }

    server.stop().await;

    let swarm = common::docker::engine().map(|host| {
        let (v1, v2) = (v1.clone(), v2.clone());
        std::thread::spawn(move || [10, 30].map(|n| swarm_rolling(&host, &v1, &v2, n)))
            .join()
            .expect("swarm run")
    });

    println!("lifecycle, one run, busybox httpd replicas behind the ingress, requests every 5 ms");
    let surge = std::env::var("ORCA_BENCH_SURGE").unwrap_or_else(|_| "25%".into());
    let report = |n: usize, rolled: &[Rolled]| {
        let serving = median(rolled.iter().map(|r| r.serving).collect());
        let gone = median(rolled.iter().map(|r| r.gone).collect());
        let worst = rolled.iter().map(|r| r.gone).max().unwrap_or_default();
        println!(
            "rolling update of {n} replicas (health path, max_surge {surge}, max_unavailable 0), median of {} runs: v2 serving everywhere after {:.2} s, old ones gone after {:.2} s (slowest {:.2} s)",
            rolled.len(),
            serving.as_secs_f64(),
            gone.as_secs_f64(),
            worst.as_secs_f64()
        );
        (serving, gone)
    };
    let orca = [report(10, &ten), report(30, &thirty)];
    println!(
        "{served} requests served, {failures} failed, over {} rolling updates",
        ten.len() + thirty.len()
    );
    match swarm {
        Some(swarm) => {
            for ((n, (served, reported)), (serving, gone)) in
                [10, 30].into_iter().zip(swarm).zip(orca)
            {
                println!(
                    "swarm, {n} replicas, same images and health check: every replica v2 and healthy, no v1 running, after {:.1} s; `docker service update` returned after {:.1} s; orca {:.1}x faster to serve v2 everywhere, {:.1}x to have the old ones gone",
                    served.as_secs_f64(),
                    reported.as_secs_f64(),
                    served.as_secs_f64() / serving.as_secs_f64(),
                    served.as_secs_f64() / gone.as_secs_f64()
                );
            }
        }
        None => println!("swarm: not run (set ORCA_BENCH_DOCKER_HOST; tests/bench/swarm.sh up)"),
    }
    for (weight, share) in accuracy {
        println!("canary at {weight}%: {share:.2}% of 10000 requests went to the canary");
    }
    // A rollout that failed requests measured failures, not a rollout.
    assert_eq!(
        failures, 0,
        "{failures} requests failed during the rolling updates"
    );
}
