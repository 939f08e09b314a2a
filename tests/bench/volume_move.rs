//! `orca volume mv` measured in the multi-node lab: a 1 GiB volume of
//! mixed files moved from n2 to n1 and back (replicas stopped, streamed through
//! the server over the cluster's mTLS connections, checked, unpacked,
//! swapped in, replicas started; the replica ends at once on SIGTERM),
//! against a plain `tar | nc` copy of the
//! same directory between the same two nodes' namespaces, in the same run,
//! timed with the `sync` after it (orca's copy is on disk before its
//! source goes); each from settled disks (dirty pages written back, no
//! mass deletion in the last 65 s); the best of each way reported
//! beside both.
//!
//! Needs the test environment and netcat (`apt-get install
//! netcat-openbsd`): `cargo bench --bench volume_move`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../common/mod.rs"]
#[allow(unused_imports)]
mod common;

use std::time::{Duration, Instant};

use common::cluster::LabCluster;
#[path = "volume_data.rs"]
mod volume_data;
use serde_json::json;
use volume_data::fill;

/// Unix seconds, for the progress lines (a profiler can be started on them).
fn stamp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sync() {
    assert!(std::process::Command::new("sync")
        .status()
        .unwrap()
        .success());
}

/// Writes every dirty page back and waits until ext4 (without a journal,
/// as here) no longer passes over the inodes deleted at `deleted` when it
/// makes files: no phase pays for the one before.
fn settle(deleted: Option<Instant>) {
    sync();
    if let Some(at) = deleted {
        std::thread::sleep(Duration::from_secs(65).saturating_sub(at.elapsed()));
    }
    std::thread::sleep(Duration::from_secs(2));
}

#[tokio::main]
async fn main() {
    let env = common::env().expect("the test environment");
    assert!(
        std::process::Command::new("sh")
            .args(["-c", "command -v nc"])
            .status()
            .unwrap()
            .success(),
        "netcat is needed (apt-get install netcat-openbsd)"
    );
    let c = LabCluster::start(&env, 3, "").await;
    // A replica that ends on SIGTERM at once: the move's own stop, not the
    // workload's, is what counts here.
    let web = c.image("logger:latest");
    // n2 is the lab's "edge" node; placed there first, then free to move.
    c.deploy(
        json!([{ "name": "db", "image": web, "volumes": ["pgdata:/data"],
                      "stop_grace_secs": 1, "placement": { "labels": { "zone": "edge" } } }]),
    );
    c.until_spread("db", "db on n2", |s| s == [0, 0, 1]).await;
    c.deploy(
        json!([{ "name": "db", "image": web, "volumes": ["pgdata:/data"], "stop_grace_secs": 1 }]),
    );
    fill(&c.data_dir(2).join("volumes/default/pgdata/data/bench"));
    let (mut ncs, mut moves) = (Vec::new(), Vec::new());
    let mut deleted = Some(Instant::now());
    // There and back: n2 -> n1, then n1 -> n2.
    for (from, to) in [(2usize, 1usize), (1, 2)] {
        settle(deleted);
        let (nc, nc_alone) = nc_copy(&c, from, to);
        eprintln!("{} tar | nc n{from} -> n{to} done", stamp());
        deleted = Some(Instant::now());
        settle(deleted);
        eprintln!("{} orca volume mv n{from} -> n{to} starts", stamp());
        let t = Instant::now();
        let moved = c.move_volume("default/pgdata", &format!("n{to}"));
        let wall = t.elapsed().as_secs_f64();
        c.until_spread("db", "db moved", |s| s[to] == 1).await;
        let serving = t.elapsed().as_secs_f64();
        deleted = Some(Instant::now());
        let mib = moved["bytes"].as_f64().unwrap() / 1048576.0;
        println!("tar | nc and sync, n{from} -> n{to}: {nc:.1} s ({:.0} MiB/s; {nc_alone:.1} s before the sync)", mib / nc);
        println!(
            "orca volume mv, n{from} -> n{to}: {wall:.1} s for {mib:.0} MiB ({:.0} MiB/s), replica running on n{to} after {serving:.1} s: {:.2}x the throughput of tar | nc",
            mib / wall,
            nc / wall
        );
        if let Some(line) = c.log(0).lines().rev().find(|l| l.contains("volume moved")) {
            println!("  the server's log: {line}");
        }
        ncs.push(nc);
        moves.push(wall);
    }
    let best = |v: &[f64]| v.iter().copied().fold(f64::MAX, f64::min);
    println!(
        "best of each: tar | nc and sync {:.1} s, orca volume mv {:.1} s: {:.2}x",
        best(&ncs),
        best(&moves),
        best(&ncs) / best(&moves)
    );
}

/// `tar | nc` of the volume from node `from` into a fresh directory on
/// node `to`, then `sync`: seconds with the sync, and before it.
fn nc_copy(c: &LabCluster, from: usize, to: usize) -> (f64, f64) {
    let source = c.data_dir(from).join("volumes/default/pgdata/data");
    let into = c.data_dir(to).join("nc-copy");
    std::fs::create_dir_all(&into).unwrap();
    let port = 19_000 + (common::rand_u32() % 1000) as u16;
    let mut listener = c.lab.nodes[to]
        .nsenter("sh")
        .arg("-c")
        .arg(format!("nc -l -p {port} -N | tar -x -C {}", into.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let sent = c.lab.nodes[from]
        .nsenter("sh")
        .arg("-c")
        .arg(format!(
            "tar -c -C {} . | nc -N {} {port}",
            source.display(),
            c.lab.nodes[to].address
        ))
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(listener.wait().unwrap().success());
    let alone = t.elapsed().as_secs_f64();
    // orca's copy is on disk before the source goes: so is this one.
    sync();
    let synced = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&into).unwrap();
    (synced, alone)
}
