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
//!   directory, and how long the consistent backup paused the replica;
//!   two rounds, each phase from settled disks (every dirty page written
//!   back, a restore's replaced content gone, no mass deletion in the last
//!   65 s: ext4 without a journal passes over recently deleted inodes when
//!   it makes files, several times slower), the best of each reported
//!   beside every run. A restore is on disk when orca answers, so `tar
//!   xzf` is timed with the `sync` after it too (and alone).
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

use common::docker::{docker, docker_quiet};
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

/// The same under Swarm: a service with the volume, published on a port
/// of the routing mesh, updated stop-first (its default).
async fn swarm_recreates(host: &str, v1: &str, v2: &str, runs: usize) -> Vec<Duration> {
    const NAME: &str = "orca-bench-db";
    let port = common::free_port();
    for image in [v1, v2] {
        docker(host, &["pull", "-q", image]);
    }
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
    docker_quiet(host, &["volume", "rm", "orca-bench-pgdata"]);
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

/// Writes back every dirty page, so that no phase pays for the one before.
fn sync() -> f64 {
    let t = Instant::now();
    assert!(std::process::Command::new("sync")
        .status()
        .unwrap()
        .success());
    t.elapsed().as_secs_f64()
}

/// Rounds of backup and restore, each side by side with tar.
const ROUNDS: usize = 2;

/// What the backup and restore rounds measured, in seconds.
#[derive(Default)]
struct Transfers {
    tar_c: Vec<f64>,
    tar_x: Vec<f64>,
    tar_x_synced: Vec<f64>,
    orca_backup: Vec<f64>,
    orca_restore: Vec<f64>,
    paused: Vec<u64>,
    tar_size: u64,
    backup_size: u64,
    /// When many files were last deleted.
    deleted: Option<Instant>,
}

/// How long ext4 without a journal (as here) passes over the inodes of
/// deleted files when it makes new ones (`recently_deleted`): a phase
/// that creates files within it runs several times slower.
const RECENTLY_DELETED: Duration = Duration::from_secs(65);

/// Waits until a restore's replaced content is gone (it is removed in the
/// background) and the filesystem no longer passes over deleted inodes,
/// then writes every dirty page back: no phase pays for the one before.
async fn settle(volume_dir: &std::path::Path, m: &mut Transfers) {
    for _ in 0..600 {
        let trash = std::fs::read_dir(volume_dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("trash-"));
        if !trash {
            break;
        }
        m.deleted = Some(Instant::now());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sync();
    if let Some(at) = m.deleted {
        tokio::time::sleep(RECENTLY_DELETED.saturating_sub(at.elapsed())).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
}

/// One round: `tar czf`, orca's backup, `tar xzf`, orca's restore, each
/// from settled disks, on the volume `default/pgdata`.
async fn transfer_round(client: &ApiClient, data_dir: &std::path::Path, m: &mut Transfers) {
    let volume_dir = data_dir.join("volumes/default/pgdata");
    let volume = volume_dir.join("data");
    let work = tempfile::tempdir_in(data_dir).unwrap();
    let archive = work.path().join("tar.tar.gz");
    settle(&volume_dir, m).await;
    m.tar_c.push(tar(&[
        "czf",
        archive.to_str().unwrap(),
        "-C",
        volume.to_str().unwrap(),
        ".",
    ]));
    m.tar_size = std::fs::metadata(&archive).unwrap().len();

    let backup_file = work.path().join("orca.tar.gz");
    settle(&volume_dir, m).await;
    let t = Instant::now();
    let r = client
        .send(
            http::Method::GET,
            "/api/v1/volumes/default/pgdata/backup",
            None,
        )
        .await
        .unwrap();
    m.paused.push(
        r.headers()["x-orca-paused-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap(),
    );
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
    m.orca_backup.push(t.elapsed().as_secs_f64());
    m.backup_size = std::fs::metadata(&backup_file).unwrap().len();

    let out = work.path().join("untar");
    std::fs::create_dir_all(&out).unwrap();
    settle(&volume_dir, m).await;
    let tar_x = tar(&[
        "xzf",
        archive.to_str().unwrap(),
        "-C",
        out.to_str().unwrap(),
    ]);
    m.tar_x.push(tar_x);
    // orca's restore is on disk when it answers: so is this one.
    m.tar_x_synced.push(tar_x + sync());

    settle(&volume_dir, m).await;
    let t = Instant::now();
    let restored: Value = client
        .upload(
            "/api/v1/volumes/default/pgdata/restore",
            tokio::fs::File::open(&backup_file).await.unwrap(),
        )
        .await
        .unwrap();
    m.orca_restore.push(t.elapsed().as_secs_f64());
    assert!(restored["members"].as_u64().unwrap() > 30_000, "{restored}");
    drop(work);
    m.deleted = Some(Instant::now());
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

    let volume = data_dir.join("volumes/default/pgdata/data");
    fill(&volume.join("bench"));
    // Earlier runs' files may have gone just now.
    let mut m = Transfers {
        deleted: Some(Instant::now()),
        ..Transfers::default()
    };
    for _ in 0..ROUNDS {
        transfer_round(&client, &data_dir, &mut m).await;
    }
    server.stop().await;

    let swarm = match common::docker::engine() {
        Some(host) => Some(swarm_recreates(&host, &v1, &v2, runs).await),
        None => None,
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
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    let list = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.1}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (ob, tc) = (best(&m.orca_backup), best(&m.tar_c));
    println!(
        "backup of 1 GiB (archive {:.0} MiB): orca {} s (best {ob:.1}, {:.0} MiB/s), tar czf {} s (best {tc:.1}, archive {:.0} MiB): {:.2}x tar's throughput; the replica was paused {} ms",
        m.backup_size as f64 / 1048576.0,
        list(&m.orca_backup),
        1024.0 / ob,
        list(&m.tar_c),
        m.tar_size as f64 / 1048576.0,
        tc / ob,
        m.paused.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    );
    let (or, tx, txs) = (best(&m.orca_restore), best(&m.tar_x), best(&m.tar_x_synced));
    println!(
        "restore of 1 GiB: orca {} s (best {or:.1}: upload, check, unpack, sync, stop, swap), tar xzf and sync {} s (best {txs:.1}): {:.2}x tar's throughput (tar xzf alone, its data not yet on disk: best {tx:.1} s, {:.2}x)",
        list(&m.orca_restore),
        list(&m.tar_x_synced),
        txs / or,
        tx / or
    );
}
