//! Stateful services measured, side by side in one run:
//!
//! - the unavailability of a recreate of a database-like service (a
//!   replica that takes 1 s to stop on SIGTERM, with a named volume), from
//!   its last answer on the old version to its first on the new one,
//!   through the ingress every 10 ms, `ORCA_BENCH_RUNS` times (default 5);
//!   with `ORCA_BENCH_DOCKER_HOST` naming a Swarm engine
//!   (`tests/bench/swarm.sh up`), the same image and volume under a Swarm
//!   `stop-first` update, through its routing mesh;
//! - backup and restore of a 1 GiB volume of mixed files (random and text,
//!   large and small) against `tar czf` and `tar xzf` of the same
//!   directory, and how long the consistent backup paused the replica.
//!
//! Needs the test environment and a release build:
//! `cargo bench --bench stateful`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::time::{Duration, Instant};

use api::client::ApiClient;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common.rs"]
mod common;
#[path = "volume_data.rs"]
mod volume_data;

use volume_data::fill;

use common::BenchServer;

const DOMAIN: &str = "db.bench.test";

/// The body of `GET /` at `127.0.0.1:port` (with `host`), or None.
async fn get(port: u16, host: &str) -> Option<String> {
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let text = String::from_utf8_lossy(&buf).to_string();
        let (head, body) = text.split_once("\r\n\r\n")?;
        head.starts_with("HTTP/1.1 200")
            .then(|| body.trim().to_string())
    };
    tokio::time::timeout(Duration::from_millis(500), attempt)
        .await
        .ok()?
}

/// Polls every 10 ms from now until `new` answers: the time from the last
/// answer of `old` to the first of `new`.
async fn gap(port: u16, host: &str, old: &str, new: &str) -> Duration {
    let start = Instant::now();
    let mut last_old = start;
    loop {
        match get(port, host).await {
            Some(b) if b == old => last_old = Instant::now(),
            Some(b) if b == new => return Instant::now() - last_old,
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "{new} never answered"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn spec(image: &str) -> Value {
    json!({ "services": [{ "name": "db", "image": image, "port": 8080, "health": "/",
             "domain": DOMAIN, "volumes": ["pgdata:/data"], "stop_grace_secs": 5 }] })
}

async fn orca_recreates(
    client: &ApiClient,
    port: u16,
    v1: &str,
    v2: &str,
    runs: usize,
) -> Vec<Duration> {
    let _: Value = client.post("/api/v1/deploy", &spec(v1)).await.unwrap();
    let mut now = "stateful v1";
    let waited = Instant::now();
    while get(port, DOMAIN).await.as_deref() != Some(now) {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "orca's service never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for run in 0..runs {
        let (image, next) = if run % 2 == 0 {
            (v2, "stateful v2")
        } else {
            (v1, "stateful v1")
        };
        let _: Value = client.post("/api/v1/deploy", &spec(image)).await.unwrap();
        out.push(gap(port, DOMAIN, now, next).await);
        now = next;
    }
    out
}

fn docker(host: &str, args: &[&str]) -> String {
    common::run(
        std::process::Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(args),
    )
}

/// The same under Swarm: a service with the volume, published on a port
/// of the routing mesh, updated stop-first (its default).
async fn swarm_recreates(host: &str, v1: &str, v2: &str, runs: usize) -> Vec<Duration> {
    const NAME: &str = "orca-bench-db";
    let port = common::free_port();
    for image in [v1, v2] {
        docker(host, &["pull", "-q", image]);
    }
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
            "--mount",
            "type=volume,source=orca-bench-pgdata,target=/data",
            // Host mode: the mesh's port is not reachable on loopback here.
            "--publish",
            &format!("mode=host,published={port},target=8080"),
            "--health-cmd",
            "wget -q -O /dev/null http://127.0.0.1:8080/",
            "--health-interval",
            "1s",
            "--health-timeout",
            "1s",
            "--health-retries",
            "1",
            "--stop-grace-period",
            "5s",
            "--update-order",
            "stop-first",
            v1,
        ],
    );
    let mut now = "stateful v1";
    let waited = Instant::now();
    while get(port, "x").await.as_deref() != Some(now) {
        assert!(
            waited.elapsed() < Duration::from_secs(120),
            "the Swarm service never answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut out = Vec::new();
    for run in 0..runs {
        let (image, next) = if run % 2 == 0 {
            (v2, "stateful v2")
        } else {
            (v1, "stateful v1")
        };
        let (h, i) = (host.to_string(), image.to_string());
        let update = std::thread::spawn(move || {
            docker(&h, &["service", "update", "-q", "--image", &i, NAME])
        });
        out.push(gap(port, "x", now, next).await);
        update.join().unwrap();
        now = next;
    }
    docker(host, &["service", "rm", NAME]);
    std::thread::sleep(Duration::from_secs(3));
    let _ = std::process::Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(["volume", "rm", "orca-bench-pgdata"])
        .output();
    out
}

fn tar(args: &[&str]) -> f64 {
    let t = Instant::now();
    let ok = std::process::Command::new("tar")
        .args(args)
        .status()
        .unwrap();
    assert!(ok.success(), "tar {args:?}");
    t.elapsed().as_secs_f64()
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let runs: usize = std::env::var("ORCA_BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    let (v1, v2) = (
        format!("{registry}/orca-test/stateful:v1"),
        format!("{registry}/orca-test/stateful:v2"),
    );
    let server = BenchServer::start("st", "obenchs0", "10.125.3.0/24").await;
    let client = server.client.clone();
    let data_dir = server.data_dir();

    let orca = orca_recreates(&client, server.proxy_port, &v1, &v2, runs).await;

    // Backup and restore of 1 GiB, against tar on the same directory.
    let volume = data_dir.join("volumes/default/pgdata/data");
    fill(&volume.join("bench"));
    let work = tempfile::tempdir_in(&data_dir).unwrap();
    let archive = work.path().join("tar.tar.gz");
    let tar_c = tar(&[
        "czf",
        archive.to_str().unwrap(),
        "-C",
        volume.to_str().unwrap(),
        ".",
    ]);
    let size = std::fs::metadata(&archive).unwrap().len();
    let out = work.path().join("untar");
    std::fs::create_dir_all(&out).unwrap();
    let tar_x = tar(&[
        "xzf",
        archive.to_str().unwrap(),
        "-C",
        out.to_str().unwrap(),
    ]);
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_file(&archive).unwrap();

    let backup_file = work.path().join("orca.tar.gz");
    let t = Instant::now();
    let r = client
        .send(
            http::Method::GET,
            "/api/v1/volumes/default/pgdata/backup",
            None,
        )
        .await
        .unwrap();
    let paused: u64 = r.headers()["x-orca-paused-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut body = r.into_body();
    let mut f = std::io::BufWriter::new(std::fs::File::create(&backup_file).unwrap());
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            f.write_all(d).unwrap();
        }
    }
    f.flush().unwrap();
    drop(f);
    let orca_backup = t.elapsed().as_secs_f64();
    let backup_size = std::fs::metadata(&backup_file).unwrap().len();

    let t = Instant::now();
    let restored: Value = client
        .upload(
            "/api/v1/volumes/default/pgdata/restore",
            tokio::fs::File::open(&backup_file).await.unwrap(),
        )
        .await
        .unwrap();
    let orca_restore = t.elapsed().as_secs_f64();
    assert!(restored["members"].as_u64().unwrap() > 30_000, "{restored}");
    server.stop().await;

    let swarm = match std::env::var("ORCA_BENCH_DOCKER_HOST") {
        Ok(host) => Some(swarm_recreates(&host, &v1, &v2, runs).await),
        Err(_) => None,
    };

    let ms = |d: &[Duration]| {
        d.iter()
            .map(|d| format!("{}", d.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let median = |d: &[Duration]| {
        let mut v = d.to_vec();
        v.sort();
        v[v.len() / 2]
    };
    println!(
        "orca recreate of a 1-s-to-stop replica with a volume: unavailable {} ms (median {} ms)",
        ms(&orca),
        median(&orca).as_millis()
    );
    match &swarm {
        Some(s) => println!(
            "swarm stop-first update, same image and volume: unavailable {} ms (median {} ms); orca {:.1}x shorter",
            ms(s),
            median(s).as_millis(),
            median(s).as_secs_f64() / median(&orca).as_secs_f64().max(0.001)
        ),
        None => println!("swarm: not run (set ORCA_BENCH_DOCKER_HOST; tests/bench/swarm.sh up)"),
    }
    let dir_size = 1.0; // GiB, as filled
    println!(
        "backup of 1 GiB (archive {:.0} MiB): orca {orca_backup:.1} s ({:.0} MiB/s), tar czf {tar_c:.1} s (archive {:.0} MiB): {:.2}x tar's throughput; the replica was paused {paused} ms",
        backup_size as f64 / 1048576.0,
        dir_size * 1024.0 / orca_backup,
        size as f64 / 1048576.0,
        tar_c / orca_backup
    );
    println!(
        "restore of 1 GiB: orca {orca_restore:.1} s (upload, check, unpack, swap, restart), tar xzf {tar_x:.1} s: {:.2}x tar's throughput",
        tar_x / orca_restore
    );
}
