//! Backup and restore of a control plane of three servers on etcd, in the
//! lab: a backup taken through a follower while scales keep coming to all
//! three servers; then the whole control plane is lost (every server
//! killed, every etcd member killed and its data deleted). A new etcd is
//! made, the snapshot restored into it, and the servers started again:
//! the services, secrets, tokens and CA are exactly the snapshot's, the
//! agents come back under the new leader with their certificates, and the
//! replicas that ran on are adopted with the same processes.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use api::store::StoreSnapshot;
use common::cluster::ha::post_at;
use common::cluster::{LabCluster, KAWEB};
use serde_json::{json, Value};

const TIMINGS: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 300";
const AGENTS: [usize; 2] = [3, 4];

/// The entries of `tree`, in key order.
fn tree<'a>(snap: &'a StoreSnapshot, tree: &str) -> Vec<(&'a str, &'a str)> {
    let mut entries: Vec<_> = snap
        .entries
        .iter()
        .filter(|e| e.tree == tree)
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    entries.sort();
    entries
}

/// Each service's spec and version, by name.
fn services(snap: &StoreSnapshot) -> Vec<(String, Value, Value)> {
    tree(snap, "services")
        .into_iter()
        .map(|(name, hexed)| {
            let record: Value = serde_json::from_slice(&hex::decode(hexed).unwrap()).unwrap();
            (
                name.to_string(),
                record["spec"].clone(),
                record["version"].clone(),
            )
        })
        .collect()
}

fn backup(c: &LabCluster, on: usize, name: &str) -> StoreSnapshot {
    let file = c.file(name);
    let out = c.orca_on(on, &["store", "backup", "-f", file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_during_writes_restores_a_lost_control_plane_and_adopts_the_replicas() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_ha(&env, 3, 5, TIMINGS).await;
    let leader = c.until_leader(0, None).await;
    let follower = (0..3).find(|&i| i != leader).unwrap();
    let out = c.orca_on(follower, &["secrets", "set", "K", "sealed-value"]);
    assert!(out.status.success(), "{out:?}");
    c.deploy(json!([
        { "name": "web", "image": c.image(KAWEB), "replicas": 2 },
        { "name": "b", "image": c.image(KAWEB), "replicas": 1,
          "env": { "P": "${secrets.K}" } }
    ]));
    common::eventually("3 replicas", Duration::from_secs(90), async || {
        let web = c.service("web");
        let b = c.service("b");
        if web["running_replicas"] == 2 && b["running_replicas"] == 1 {
            Ok(())
        } else {
            Err(format!("{web}\n{b}"))
        }
    })
    .await;
    let web_pids: Vec<Vec<u32>> = AGENTS
        .iter()
        .map(|&i| sorted(c.pids_on(i, "web")))
        .collect();

    // Scales of b keep coming to all three servers, from an agent's
    // namespace, while the backup is taken through a follower.
    let stop = Arc::new(AtomicBool::new(false));
    let netns = std::path::PathBuf::from(format!("/run/netns/{}", c.lab.nodes[AGENTS[0]].netns));
    let servers: Vec<_> = (0..3).map(|i| c.lab.nodes[i].address).collect();
    let writer = std::thread::spawn({
        let stop = stop.clone();
        move || {
            common::cluster::load::enter(&netns);
            let mut acked = 0u32;
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let body = json!({ "replicas": 1 + n % 2 }).to_string();
                let (status, answer) = post_at(servers[n % 3], "/api/v1/services/b/scale", &body);
                assert_eq!(status, 200, "{answer}");
                acked += 1;
                n += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            acked
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let snap = backup(&c, follower, "state.snap");
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(acked > 4, "the writes went on ({acked} scales)");
    let taken = services(&snap);
    let b = taken.iter().find(|(n, ..)| n == "b").unwrap().clone();
    eprintln!(
        "{acked} scales acknowledged; the snapshot has b at {}",
        b.1["replicas"]
    );
    assert!(
        !tree(&snap, "cluster").is_empty(),
        "the CA is in the snapshot"
    );
    assert!(!tree(&snap, "secrets").is_empty());
    assert!(snap
        .entries
        .iter()
        .all(|e| !e.value.contains(&hex::encode("sealed-value"))));
    // The election's own keys are not part of it.
    assert!(snap.entries.iter().all(|e| e.tree != "leader"));

    // The whole control plane is lost: servers and etcd, with its data.
    for i in 0..3 {
        c.kill_server_at(i);
    }
    for i in 0..3 {
        c.kill_etcd_member(i);
        std::fs::remove_dir_all(c.file(&format!("etcd{i}"))).unwrap();
    }
    for i in 0..3 {
        c.restart_etcd_member(i);
    }
    c.until_etcd_healthy(0).await;
    // Restored from inside a server's namespace, with its config.
    let file = c.file("state.snap");
    let config = c.config_path(0);
    let restore = |c: &LabCluster| {
        c.lab.nodes[0]
            .nsenter(common::orca_bin())
            .args(["store", "restore", file.to_str().unwrap(), "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = restore(&c);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!("restored {} entries", snap.entries.len())),
        "{said}"
    );
    // Never over a store that has anything.
    let again = restore(&c);
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not empty"),
        "{again:?}"
    );

    for i in 0..3 {
        c.spawn_server_at(i);
    }
    let leader = c.until_leader(follower, None).await;
    eprintln!("n{leader} leads the restored control plane");
    c.api_node = leader;
    common::eventually("the agents back", Duration::from_secs(60), async || {
        let ready = c.nodes().iter().filter(|n| n["state"] == "ready").count();
        let b_now = c.service("b");
        if ready == 2 && b_now["running_replicas"] == b.1["replicas"] {
            Ok(())
        } else {
            Err(format!("{:?}\n{b_now}", c.nodes()))
        }
    })
    .await;
    let now: Vec<Vec<u32>> = AGENTS
        .iter()
        .map(|&i| sorted(c.pids_on(i, "web")))
        .collect();
    assert_eq!(now, web_pids, "web's replicas adopted, not started again");

    // Exactly the snapshot's state: services, secrets, tokens and CA.
    let after = backup(&c, leader, "after.snap");
    assert_eq!(services(&after), taken);
    for name in ["secrets", "tokens", "join_tokens", "cluster"] {
        assert_eq!(tree(&after, name), tree(&snap, name), "{name}");
    }
    // The restored secret still opens: a new deploy may name it.
    c.deploy(
        json!([{ "name": "c", "image": c.image(KAWEB), "replicas": 1,
                      "env": { "P": "${secrets.K}" } }]),
    );
    common::eventually("c running", Duration::from_secs(60), async || {
        let s = c.service("c");
        if s["running_replicas"] == 1 {
            Ok(())
        } else {
            Err(format!("{s}"))
        }
    })
    .await;
}

fn sorted(mut pids: Vec<u32>) -> Vec<u32> {
    pids.sort();
    pids
}
