//! `orca deploy compose.yaml` against `docker-compose up -d` of the same
//! file, in one run: a database-like service with a volume and a health
//! check, a migration job it waits for, a web service that waits for both,
//! a second web service and a UDP service on a published port. Each round
//! starts from nothing deployed and no volume (a new orca server with a new
//! data directory; `docker-compose down -v`), with the images already
//! pulled (a warm-up round each), and the two take turns.
//!
//! Done means, for both: db healthy, migrate exited 0, api, site and echo
//! running. orca's clock stops when `orca deploy` returns (it waits for
//! each service's rollout, the replicas ready); docker-compose 1.29 has no
//! `--wait`, so its clock stops when `docker ps`, asked every 100 ms after
//! `up -d` returned, first shows that state, as `up --wait` would.
//!
//! Needs the test environment, a release build, docker-compose
//! (`apt-get install docker-compose`) and a Docker engine named by
//! `ORCA_BENCH_DOCKER_HOST` (`tests/bench/swarm.sh up`):
//! `cargo bench --bench compose`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common.rs"]
mod common;

use common::{free_port, BenchServer};

/// Counted rounds per tool, unless `ROUNDS` says otherwise.
const ROUNDS: usize = 3;
/// docker-compose's project.
const PROJECT: &str = "orcabench";

const FILE: &str = r#"
services:
  db:
    image: ${REG}/orca-test/stateful:v1
    volumes: ["data:/data"]
    healthcheck:
      test: ["CMD-SHELL", "test -d /data"]
      interval: 1s
    stop_grace_period: 2s
  migrate:
    image: ${REG}/orca-test/web:v1
    entrypoint: ["sh", "-c", "echo migrated"]
    restart: on-failure
    depends_on:
      db: { condition: service_healthy }
  api:
    image: ${REG}/orca-test/web:v1
    depends_on:
      db: { condition: service_healthy }
      migrate: { condition: service_completed_successfully }
    stop_grace_period: 1s
    x-orca: { port: 8080, domain: bench.test, routes: ["/api"], strip_prefix: true }
  site:
    image: ${REG}/orca-test/web:v2
    stop_grace_period: 1s
    x-orca: { port: 8080, domain: bench.test }
  echo:
    image: ${REG}/orca-test/kaweb:v1
    entrypoint: ["/bin/udpecho", "5353"]
    ports: ["${UDP_PORT}:5353/udp"]
    stop_grace_period: 1s
volumes:
  data:
"#;

/// The services and what done means for each in `docker ps`'s status.
const DONE: [(&str, &str); 5] = [
    ("db", "(healthy)"),
    ("migrate", "Exited (0)"),
    ("api", "Up"),
    ("site", "Up"),
    ("echo", "Up"),
];

fn orca_bin() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/orca")
}

/// `orca deploy FILE`: how long it took.
fn orca_deploy(server: &BenchServer, file: &Path, reg: &str, udp: u16) -> Duration {
    let t = Instant::now();
    common::run(
        Command::new(orca_bin())
            .args(["deploy", "--project", PROJECT])
            .arg(file)
            .env("ORCA_API", format!("http://127.0.0.1:{}", server.api_port))
            .env("ORCA_TOKEN", common::TOKEN)
            .env("REG", reg)
            .env("UDP_PORT", udp.to_string()),
    );
    t.elapsed()
}

/// What orca's status says of each service: (name, status, healthy).
async fn orca_state(server: &BenchServer) -> Vec<(String, String, bool)> {
    let s: Value = server.client.get("/api/v1/status").await.unwrap();
    s["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["status"].as_str().unwrap().to_string(),
                s["instances"][0]["healthy"] == true,
            )
        })
        .collect()
}

fn compose(host: &str, file: &Path, reg: &str, udp: u16, args: &[&str]) -> String {
    common::run(
        Command::new("docker-compose")
            .args(["-f"])
            .arg(file)
            .args(["-p", PROJECT])
            .args(args)
            .env("DOCKER_HOST", host)
            .env("REG", reg)
            .env("UDP_PORT", udp.to_string()),
    )
}

/// Whether `docker ps` shows every service of the project done.
fn compose_done(host: &str) -> bool {
    let label = format!("label=com.docker.compose.project={PROJECT}");
    let ps = common::docker::docker(
        host,
        &[
            "ps",
            "-a",
            "--filter",
            &label,
            "--format",
            "{{.Label \"com.docker.compose.service\"}} {{.Status}}",
        ],
    );
    DONE.iter().all(|(name, done)| {
        ps.lines().any(|l| {
            l.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix(' '))
                .is_some_and(|status| status.contains(done) && !status.contains("unhealthy"))
        })
    })
}

/// `docker-compose up -d`, then `docker ps` until done: (until done,
/// until `up -d` returned).
fn compose_up(host: &str, file: &Path, reg: &str, udp: u16) -> (Duration, Duration) {
    let t = Instant::now();
    compose(host, file, reg, udp, &["up", "-d", "--quiet-pull"]);
    let returned = t.elapsed();
    let deadline = t + Duration::from_secs(120);
    while !compose_done(host) {
        assert!(Instant::now() < deadline, "docker-compose never done");
        std::thread::sleep(Duration::from_millis(100));
    }
    (t.elapsed(), returned)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(host) = common::docker::engine() else {
        panic!("set ORCA_BENCH_DOCKER_HOST (tests/bench/swarm.sh up)");
    };
    let reg = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    std::fs::write(&file, FILE).unwrap();
    let (orca_udp, docker_udp) = (free_port(), free_port());
    let (mut ours, mut theirs, mut returned) = (Vec::new(), Vec::new(), Vec::new());
    // Round 0 of each is the warm-up: the images pulled.
    for round in 0..=rounds {
        let server = BenchServer::start("cmp", "obenchc0", "10.126.0.0/24").await;
        let o = orca_deploy(&server, &file, &reg, orca_udp);
        let state = orca_state(&server).await;
        for (name, _) in DONE {
            let (_, status, healthy) = state.iter().find(|s| s.0 == name).unwrap();
            let want = if name == "migrate" {
                "completed"
            } else {
                "running"
            };
            assert_eq!(status, want, "{name}: {state:?}");
            assert!(name != "db" || *healthy, "db not healthy: {state:?}");
        }
        server.stop().await;
        let (d, r) = compose_up(&host, &file, &reg, docker_udp);
        compose(&host, &file, &reg, docker_udp, &["down", "-v"]);
        println!(
            "round {round}{}: orca {} ms, docker-compose {} ms (up -d returned at {} ms)",
            if round == 0 { " (warm-up)" } else { "" },
            o.as_millis(),
            d.as_millis(),
            r.as_millis()
        );
        if round > 0 {
            ours.push(o);
            theirs.push(d);
            returned.push(r);
        }
    }
    let (o, d) = (median(ours), median(theirs));
    println!(
        "compose file of 5 services (db healthy, migrate completed, api after both, site, UDP echo), \
         median of {rounds} rounds: orca deploy {} ms, docker-compose up -d until done {} ms \
         (up -d returned at {} ms): orca {:.2}x faster",
        o.as_millis(),
        d.as_millis(),
        median(returned).as_millis(),
        d.as_secs_f64() / o.as_secs_f64()
    );
}
