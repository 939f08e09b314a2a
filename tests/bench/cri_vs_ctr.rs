//! orca's `cri` against `ctr` on the same containerd and image, side by
//! side in one run, alternating who goes first:
//!
//! - cold pull + unpack from the local registry vs `ctr images pull`, each
//!   of an image built for it (`cold-image.sh`), so no blob is known yet;
//! - create + start of one container until its task runs vs `ctr run -d`.
//!
//! Run with the test environment up (`source tests/env.sh && orca_env_start`):
//! `cargo bench --bench cri_vs_ctr` (ROUNDS=N to change the rounds).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use cri::container::LogTarget;
use cri::{ConnectOptions, ContainerConfig, Cri, NetworkMode};

struct Env {
    socket: String,
    registry: String,
}

#[path = "../common/host.rs"]
#[allow(dead_code)]
mod host;

/// `ctr` in namespace `ns`, which must succeed.
fn ctr(env: &Env, ns: &str, args: &[&str]) {
    host::run(&mut host::ctr(&env.socket, ns, args));
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn connect(env: &Env, ns: &str) -> Cri {
    Cri::connect(ConnectOptions::new(&env.socket, ns))
        .await
        .expect("connect")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Ok(socket) = std::env::var("ORCA_TEST_CONTAINERD") else {
        eprintln!("ORCA_TEST_CONTAINERD is not set; start the test environment first");
        std::process::exit(2);
    };
    let env = Env {
        socket,
        registry: std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into()),
    };
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    let image = format!("{}/orca-test/web:v1", env.registry);
    let run_id = std::process::id();

    // Cold pull: a fresh namespace and an image no one has pulled (every
    // blob new to containerd), one for each side in each round.
    let (mut orca_pull, mut ctr_pull) = (Vec::new(), Vec::new());
    let cold = |tag: String| {
        host::run(
            std::process::Command::new("bash")
                .arg(concat!(
                    env!("CARGO_MANIFEST_DIR"),
                    "/tests/bench/cold-image.sh"
                ))
                .arg(&env.registry)
                .arg(&tag),
        );
        format!("{}/orca-test/cold:{tag}", env.registry)
    };
    for round in 0..rounds {
        let ns_o = format!("bench-po-{run_id}-{round}");
        let ns_c = format!("bench-pc-{run_id}-{round}");
        let (image_o, image_c) = (
            cold(format!("o-{run_id}-{round}")),
            cold(format!("c-{run_id}-{round}")),
        );
        let cri = connect(&env, &ns_o).await;
        let orca = || async {
            let t = Instant::now();
            let report = cri.pull_with_report(&image_o).await.expect("orca pull");
            let took = t.elapsed();
            assert_eq!(report.fetched_blobs, 3, "not a cold pull");
            took
        };
        let ctr_run = || {
            let t = Instant::now();
            ctr(&env, &ns_c, &["images", "pull", "--plain-http", &image_c]);
            t.elapsed()
        };
        if round % 2 == 0 {
            orca_pull.push(orca().await);
            ctr_pull.push(ctr_run());
        } else {
            ctr_pull.push(ctr_run());
            orca_pull.push(orca().await);
        }
    }

    // Create + start: warm image, new network namespace on both sides.
    let ns_o = format!("bench-ro-{run_id}");
    let ns_c = format!("bench-rc-{run_id}");
    let cri = connect(&env, &ns_o).await;
    let pulled = cri.pull(&image).await.expect("pull");
    ctr(&env, &ns_c, &["images", "pull", "--plain-http", &image]);
    let logs = std::env::temp_dir().join(format!("orca-bench-logs-{run_id}"));
    let orca_bin = std::env::var("ORCA_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/orca")
        });
    let (mut orca_start, mut orca_start_logged, mut ctr_start) =
        (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let start = |id: String, log: LogTarget| {
            let cri = cri.clone();
            let pulled = pulled.clone();
            async move {
                let config = ContainerConfig {
                    id: id.clone(),
                    network: NetworkMode::Isolated,
                    ..Default::default()
                };
                let t = Instant::now();
                cri.create_container(&pulled, &config)
                    .await
                    .expect("create");
                cri.start_task(&id, &log).await.expect("start");
                t.elapsed()
            }
        };
        let ctr_id = format!("c{round}");
        let ctr_once = || {
            let t = Instant::now();
            ctr(&env, &ns_c, &["run", "-d", &image, &ctr_id]);
            t.elapsed()
        };
        let logged = LogTarget::Shim {
            binary: orca_bin.clone(),
            file: logs.join(format!("l{round}.log")),
        };
        if round % 2 == 0 {
            orca_start.push(start(format!("o{round}"), LogTarget::Discard).await);
            ctr_start.push(ctr_once());
            orca_start_logged.push(start(format!("l{round}"), logged).await);
        } else {
            ctr_start.push(ctr_once());
            orca_start_logged.push(start(format!("l{round}"), logged).await);
            orca_start.push(start(format!("o{round}"), LogTarget::Discard).await);
        }
    }
    for c in cri.list_containers(&[]).await.unwrap() {
        cri.remove_container(&c.id).await.unwrap();
    }
    for round in 0..rounds {
        let id = format!("c{round}");
        let _ = host::ctr(&env.socket, &ns_c, &["tasks", "kill", "-s", "KILL", &id]).output();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for round in 0..rounds {
        let id = format!("c{round}");
        let _ = host::ctr(&env.socket, &ns_c, &["tasks", "delete", &id]).output();
        let _ = host::ctr(&env.socket, &ns_c, &["containers", "delete", &id]).output();
    }
    let _ = std::fs::remove_dir_all(&logs);
    // runc leaves ctr's namespace-level cgroup directory behind, empty.
    cri::cgroup::Cgroups::default().remove(&format!("/{ns_c}"));

    let (op, cp) = (median(orca_pull), median(ctr_pull));
    let (os, ol, cs) = (
        median(orca_start),
        median(orca_start_logged),
        median(ctr_start),
    );
    println!("median of {rounds} rounds, same containerd, same image ({image})");
    println!("{:<44} {:>9} {:>9} {:>7}", "", "orca ms", "ctr ms", "ratio");
    println!(
        "{:<44} {:>9.1} {:>9.1} {:>7.2}",
        "cold pull + unpack",
        ms(op),
        ms(cp),
        ms(op) / ms(cp)
    );
    println!(
        "{:<44} {:>9.1} {:>9.1} {:>7.2}",
        "create + start (no logs, as ctr run -d)",
        ms(os),
        ms(cs),
        ms(os) / ms(cs)
    );
    println!(
        "{:<44} {:>9.1} {:>9.1} {:>7.2}",
        "create + start (orca log shim)",
        ms(ol),
        ms(cs),
        ms(ol) / ms(cs)
    );
}
