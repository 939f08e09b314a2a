//! Volumes across the lab's nodes: a replica follows its data (a new
//! version without the placement that put it there stays there); a lost
//! node's replica is not started elsewhere with empty data, and status
//! says why; a node restarted (replica, containerd and agent all gone)
//! brings it back with the data; `orca volume mv` brings the same data up on another node; a
//! kill -9 of the server mid-move leaves the source in use and no copy
//! half-made on the target; a move goes node to node, or through the
//! server when the target cannot be reached, whole either way. Every count is read from the nodes' own
//! containerds. A node's `[volumes] host_paths` are its own: a bind mount
//! only n2 allows runs on n2 alone.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::LabCluster;
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);
const FAST: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 5";

/// Node `i`'s replica of `service` and what `script` prints in it.
fn sh(c: &LabCluster, i: usize, service: &str, script: &str) -> String {
    let s = c.service(service);
    let id = s["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["node"] == format!("n{i}") && r["state"] == "running")
        .unwrap_or_else(|| panic!("no running replica of {service} on n{i}: {s:#}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    c.exec(i, &id, &["sh", "-c", script])
}

async fn until(what: &str, f: impl Fn() -> Result<(), String>) {
    common::eventually(what, LONG, async || f()).await
}

fn staged_on(c: &LabCluster, i: usize) -> Vec<String> {
    let dir = c.data_dir(i).join("volumes/default/pgdata");
    std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("incoming"))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_keeps_its_replica_and_moves_whole() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, FAST).await;
    let web = c.image("web:v1");
    // n2 is the lab's "edge" node: the first placement puts it there.
    let spec = |v: &str, pinned: bool| {
        let mut s = json!({ "name": "db", "image": web, "env": { "V": v },
                            "volumes": ["pgdata:/data"], "stop_grace_secs": 1 });
        if pinned {
            s["placement"] = json!({ "labels": { "zone": "edge" } });
        }
        json!([s])
    };
    c.deploy(spec("1", true));
    c.until_spread("db", "db on n2", |s| s == [0, 0, 1]).await;
    until("the volume written", || {
        let out = sh(&c, 2, "db", "echo row1 > /data/rows && cat /data/rows");
        if out.trim() == "row1" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    // A new version without the placement: it stays with its data.
    c.deploy(spec("2", false));
    let started = Instant::now();
    until("version 2 running on n2", || {
        let spread = c.spread("db");
        assert_eq!(
            spread[0] + spread[1],
            0,
            "a replica left its data: {spread:?}"
        );
        let s = c.service("db");
        let ok = s["version"] == 2
            && s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .all(|i| i["version"] == 2 && i["node"] == "n2")
            && spread == [0, 0, 1];
        if ok {
            Ok(())
        } else {
            Err(format!("{spread:?} {s}"))
        }
    })
    .await;
    eprintln!("recreated on n2 in {:?}", started.elapsed());
    assert_eq!(sh(&c, 2, "db", "cat /data/rows").trim(), "row1");

    // n2 lost: nothing starts elsewhere with empty data, and status says why.
    c.kill_agent(2);
    let watch = Instant::now();
    let mut said = String::new();
    while watch.elapsed() < Duration::from_secs(15) {
        let spread = c.spread("db");
        assert_eq!(
            spread[0] + spread[1],
            0,
            "started elsewhere without its data: {spread:?}"
        );
        said = c.service("db")["message"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        said.contains("waiting for node n2, which holds volume default/pgdata"),
        "{said}"
    );
    c.spawn_agent(2, None);
    c.wait_ready(3).await;
    until("db served from n2 again", || {
        let s = c.service("db");
        if s["running_replicas"] == 1 && c.spread("db") == [0, 0, 1] {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;

    // n2 restarted as a machine would be: every process of it gone (its
    // replica, its containerd, its agent), then up again. The same
    // replica's slot comes back on n2 with the data.
    c.kill_agent(2);
    c.kill_replicas(2, "db");
    c.lab.kill_containerd(2);
    c.lab.start_containerd_again(2).await;
    c.spawn_agent(2, None);
    c.wait_ready(3).await;
    until("db running on n2 after its restart", || {
        if c.spread("db") != [0, 0, 1] {
            return Err(format!("{:?}", c.spread("db")));
        }
        let out = sh(&c, 2, "db", "cat /data/rows");
        if out.trim() == "row1" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;

    // Moved to n1, straight from n2: the same data, and nothing left on n2.
    let first = c.move_volume("default/pgdata", "n1");
    assert_eq!(first["via"], "direct", "{first}");
    c.until_spread("db", "db on n1", |s| s == [0, 1, 0]).await;
    until("the rows on n1", || {
        let out = sh(&c, 1, "db", "cat /data/rows");
        if out.trim() == "row1" {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    assert!(
        !c.data_dir(2).join("volumes/default/pgdata").exists(),
        "the source copy stayed"
    );
    let listed = c.json(&["volume", "ls"]);
    assert_eq!(listed["volumes"][0]["node"], "n1", "{listed}");

    // The server killed mid-move: the source stays in use, whole, and
    // the target keeps no half-made copy.
    sh(
        &c,
        1,
        "db",
        "dd if=/dev/zero of=/data/big bs=1048576 count=400 2>/dev/null; sync",
    );
    let mut mv = c.lab.nodes[0]
        .nsenter(common::orca_bin())
        .args([
            "--api",
            "http://127.0.0.1:6880",
            "--token",
            common::cluster::ADMIN,
        ])
        .args(["volume", "mv", "default/pgdata", "--to", "n2"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    until("the move under way on n2", || {
        if staged_on(&c, 2).is_empty() {
            Err("nothing staged yet".into())
        } else {
            Ok(())
        }
    })
    .await;
    c.kill_server();
    let _ = mv.wait();
    c.restart_server().await;
    c.wait_ready(3).await;
    until("db back on n1 with its data", || {
        if c.spread("db") != [0, 1, 0] {
            return Err(format!("{:?}", c.spread("db")));
        }
        let out = sh(
            &c,
            1,
            "db",
            "cat /data/rows; ls -l /data/big | awk '{print $5}'",
        );
        if out.split_whitespace().collect::<Vec<_>>() == ["row1", "419430400"] {
            Ok(())
        } else {
            Err(out)
        }
    })
    .await;
    assert_eq!(c.json(&["volume", "ls"])["volumes"][0]["node"], "n1");
    until("no half-made copy on n2", || {
        let left = staged_on(&c, 2);
        let dir = c.data_dir(2).join("volumes/default/pgdata");
        if left.is_empty() && !dir.join("data").exists() {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    })
    .await;
    // The control: the same move, uncut, goes through, node to node; and
    // back to n1 with n1 taking no connection from n2 (nodes that reach
    // only the server), through the server. The data is whole each time.
    let whole = |node: usize| {
        let out = sh(
            &c,
            node,
            "db",
            "cat /data/rows; ls -l /data/big | awk '{print $5}'",
        );
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            ["row1", "419430400"],
            "{out}"
        );
    };
    let direct = c.move_volume("default/pgdata", "n2");
    assert_eq!(direct["via"], "direct", "{direct}");
    c.until_spread("db", "db on n2", |s| s == [0, 0, 1]).await;
    whole(2);
    let firewall = |script: &str| {
        let ok = c.lab.nodes[1]
            .nsenter("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut nft| {
                use std::io::Write;
                nft.stdin.take().unwrap().write_all(script.as_bytes())?;
                nft.wait()
            })
            .unwrap();
        assert!(ok.success(), "nft: {script}");
    };
    firewall(&format!(
        "table inet orca_test_cut {{\n chain input {{\n  type filter hook input priority -10;\n  \
         ip saddr {} tcp flags syn drop\n }}\n}}\n",
        c.lab.nodes[2].address
    ));
    let relayed = c.move_volume("default/pgdata", "n1");
    firewall("delete table inet orca_test_cut");
    assert_eq!(relayed["via"], "server", "{relayed}");
    c.until_spread("db", "db on n1", |s| s == [0, 1, 0]).await;
    whole(1);
}

/// The server allows no host path; n2 allows one. A bind mount of it is
/// deployed and runs on n2 alone (the control: a service without one
/// spreads over all three), with the host's file in it; a path no node
/// allows is a 403 naming it and the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_paths_are_each_nodes_own() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_server(&env, 3, "").await;
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("hello.txt"), "from the host\n").unwrap();
    c.edit_config(2, |config| {
        format!(
            "{config}\n[volumes]\nhost_paths = [\"{}\"]\n",
            shared.path().display()
        )
    });
    let token = c.join_token("1h");
    for i in 1..3 {
        c.spawn_agent(i, Some(&token));
    }
    c.wait_ready(3).await;
    let web = c.image("web:v1");
    c.deploy(json!([
        { "name": "media", "image": web, "replicas": 3,
          "volumes": [format!("{}:/media:ro", shared.path().display())] },
        { "name": "plain", "image": web, "replicas": 3 }
    ]));
    c.until_spread("plain", "plain on every node", |s| s == [1, 1, 1])
        .await;
    c.until_spread("media", "media on n2 alone", |s| s == [0, 0, 3])
        .await;
    until("the host's file in the replica", || {
        let out = sh(&c, 2, "media", "cat /media/hello.txt");
        (out.trim() == "from the host").then_some(()).ok_or(out)
    })
    .await;
    let nowhere = format!("/srv/orca-nowhere-{}", common::rand_u32());
    let (status, answer) = c.deploy_answer(json!([
        { "name": "other", "image": web, "volumes": [format!("{nowhere}:/x")] }
    ]));
    assert_eq!(status, 403, "{answer}");
    let message = answer.to_string();
    assert!(
        message.contains(&nowhere) && message.contains("host_paths"),
        "{message}"
    );
}
