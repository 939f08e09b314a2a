//! `orca volume mv` measured in the multi-node lab: a 1 GiB volume of
//! mixed files moved from n1 to n2 (replicas stopped, streamed through
//! the server over the cluster's mTLS connections, checked, unpacked,
//! swapped in, replicas started), against a plain `tar | nc` copy of the
//! same directory between the same two nodes' namespaces, in the same run,
//! timed with the `sync` after it (orca's copy is on disk before its
//! source goes); each from settled disks (dirty pages written back, no
//! mass deletion in the last 65 s).
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
    let web = c.image("web:v1");
    // n2 is the lab's "edge" node; placed there first, then free to move.
    c.deploy(
        json!([{ "name": "db", "image": web, "volumes": ["pgdata:/data"],
                      "stop_grace_secs": 1, "placement": { "labels": { "zone": "edge" } } }]),
    );
    c.until_spread("db", "db on n2", |s| s == [0, 0, 1]).await;
    c.deploy(
        json!([{ "name": "db", "image": web, "volumes": ["pgdata:/data"], "stop_grace_secs": 1 }]),
    );
    let source = c.data_dir(2).join("volumes/default/pgdata/data");
    fill(&source.join("bench"));

    // The baseline: tar | nc from n2 to n1, into a fresh directory.
    let into = c.data_dir(1).join("nc-copy");
    std::fs::create_dir_all(&into).unwrap();
    let port = 19_000 + (common::rand_u32() % 1000) as u16;
    let mut listener = c.lab.nodes[1]
        .nsenter("sh")
        .arg("-c")
        .arg(format!("nc -l -p {port} -N | tar -x -C {}", into.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    settle(None);
    let t = Instant::now();
    let sent = c.lab.nodes[2]
        .nsenter("sh")
        .arg("-c")
        .arg(format!(
            "tar -c -C {} . | nc -N {} {port}",
            source.display(),
            c.lab.nodes[1].address
        ))
        .status()
        .unwrap();
    assert!(sent.success());
    assert!(listener.wait().unwrap().success());
    let nc_alone = t.elapsed().as_secs_f64();
    // orca's copy is on disk before the source goes: so is this one.
    sync();
    let nc = t.elapsed().as_secs_f64();
    std::fs::remove_dir_all(&into).unwrap();
    settle(Some(Instant::now()));

    // orca volume mv n2 -> n1.
    let t = Instant::now();
    let out = c.orca(&[
        "volume",
        "mv",
        "default/pgdata",
        "--to",
        "n1",
        "--output",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let moved: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wall = t.elapsed().as_secs_f64();
    c.until_spread("db", "db on n1", |s| s == [0, 1, 0]).await;
    let serving = t.elapsed().as_secs_f64();
    let mib = moved["bytes"].as_f64().unwrap() / 1048576.0;
    if let Some(line) = c.log(0).lines().rev().find(|l| l.contains("volume moved")) {
        println!("the server's log: {line}");
    }
    println!(
        "tar | nc and sync, n2 -> n1: {nc:.1} s ({:.0} MiB/s; {nc_alone:.1} s before the sync)",
        mib / nc
    );
    println!(
        "orca volume mv, n2 -> n1: {wall:.1} s for {mib:.0} MiB ({:.0} MiB/s; {:.1} s by the server's count), replica running on n1 after {serving:.1} s: {:.2}x the throughput of tar | nc",
        mib / wall,
        moved["seconds"].as_f64().unwrap(),
        nc / wall
    );
}
