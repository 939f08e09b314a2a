//! Several nodes for real, in the lab: agents join over mutual TLS (and
//! are refused with a bad, expired or revoked token, or a wrong CA pin),
//! replicas spread and placed by label, node and size, checked in each
//! node's own containerd.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::load::Load;
use common::cluster::{LabCluster, KAWEB, LOGGER};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_over_mutual_tls_and_bad_joins_are_refused() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_server(&env, 3, "").await;

    // A token of the right shape that the server never issued.
    let good = c.join_token("1h");
    let pin = good.split('-').nth(2).unwrap().to_string();
    let forged = format!("orca-join-{pin}-00000000-{}", "0".repeat(32));
    let (code, log) = c.agent_refused(1, &forged);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("join token refused"),
        "{log}\nserver:\n{}",
        c.log(0)
    );
    assert!(c.log(0).contains("join refused"), "the server says so too");

    // A token for another cluster's CA: the agent does not trust the server
    // and sends no secret.
    let other_ca = format!("orca-join-{}-00000000-{}", "ab".repeat(32), "0".repeat(32));
    let (code, log) = c.agent_refused(1, &other_ca);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("does not match the join token's pin"), "{log}");

    // Revoked, then expired.
    let revoked = c.join_token("1h");
    let id = revoked.split('-').nth(3).unwrap();
    let out = c.orca(&["cluster", "revoke-token", id]);
    assert!(out.status.success());
    let (code, log) = c.agent_refused(1, &revoked);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("join token refused"), "{log}");
    let expiring = c.join_token("1s");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (code, log) = c.agent_refused(1, &expiring);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("expired"), "{log}");
    // Nothing was registered by any of these.
    assert_eq!(c.nodes().len(), 1, "{:?}", c.nodes());
    assert!(!c.data_dir(1).join("cluster/node.crt").exists());

    // A good token: both agents join; the node's key and certificate are 0600.
    c.spawn_agent(1, Some(&good));
    c.spawn_agent(2, Some(&good));
    c.wait_ready(3).await;
    use std::os::unix::fs::PermissionsExt;
    for file in ["node.key", "node.crt", "agent.json"] {
        let mode = std::fs::metadata(c.data_dir(1).join("cluster").join(file))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{file}");
    }
    let n2 = c.node("n2").unwrap();
    assert_eq!(n2["labels"]["zone"], "edge");
    assert_eq!(n2["address"], c.lab.nodes[2].address.to_string());
    assert!(n2["resources"]["memory_bytes"].as_u64().unwrap() > 0);

    // A second agent claiming n1's id with a certificate of its own is
    // refused, and n1 stays as it was.
    let (code, log) = c.agent_refused_as(2, "n1", &good);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("held by another certificate"), "{log}");
    c.wait_ready(3).await;
    let n1 = c.node("n1").unwrap();
    assert_eq!(n1["address"], c.lab.nodes[1].address.to_string(), "{n1}");

    // An agent restarted keeps its id and needs no token.
    c.kill_agent(1);
    c.spawn_agent(1, None);
    c.wait_ready(3).await;
    assert_eq!(c.nodes().len(), 3);

    // Restarted with another network backend than the cluster's, it is
    // refused, saying why; with its own again, it is back.
    c.kill_agent(1);
    c.edit_config(1, |t| {
        t.replace("[network]\n", "[network]\nbackend = \"host-gw\"\n")
    });
    let (code, log) = c.agent_refused_again(1);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("runs [network] backend host-gw, the cluster vxlan on UDP 8472"),
        "{log}"
    );
    c.edit_config(1, |t| t.replace("backend = \"host-gw\"\n", ""));
    c.spawn_agent(1, None);
    c.wait_ready(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_spread_and_follow_placement_and_size() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let image = c.image(KAWEB);
    c.deploy(json!([{ "name": "web", "image": image, "replicas": 6 }]));
    common::eventually("2/2/2 in the nodes' containerds", LONG, async || {
        let spread = c.spread("web");
        if spread == [2, 2, 2] {
            Ok(())
        } else {
            Err(format!("{spread:?}"))
        }
    })
    .await;
    let web = c.service("web");
    let mut nodes: Vec<&str> = web["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["node"].as_str().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n0", "n0", "n1", "n1", "n2", "n2"]);
    // Each node's replicas take addresses of its own /24 (the server's
    // node the first), kept by the server.
    let subnets: std::collections::BTreeMap<String, String> = c
        .nodes()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["subnet"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(subnets["n0"], "10.88.0.0/24");
    let distinct: std::collections::BTreeSet<&String> = subnets.values().collect();
    assert_eq!(distinct.len(), 3, "{subnets:?}");
    for inst in web["instances"].as_array().unwrap() {
        let prefix = subnets[inst["node"].as_str().unwrap()].replace(".0/24", ".");
        let ip = inst["ip"].as_str().unwrap_or("");
        assert!(ip.starts_with(&prefix), "{inst} in {subnets:?}");
    }

    c.deploy(json!([
        { "name": "edge", "image": image, "replicas": 2, "placement": { "labels": { "zone": "edge" } } },
        { "name": "pinned", "image": image, "replicas": 1, "placement": { "node": "n1" } },
        { "name": "nowhere", "image": image, "replicas": 2, "placement": { "labels": { "zone": "moon" } } },
    ]));
    common::eventually("placed by label and node", LONG, async || {
        let (edge, pinned) = (c.spread("edge"), c.spread("pinned"));
        if edge == [0, 0, 2] && pinned == [0, 1, 0] {
            Ok(())
        } else {
            Err(format!("edge {edge:?} pinned {pinned:?}"))
        }
    })
    .await;
    // A readiness check runs on the node of each replica.
    c.deploy(
        json!([{ "name": "checked", "image": image, "replicas": 3, "port": 8080,
        "readiness": { "path": "/healthz" } }]),
    );
    common::eventually(
        "every replica ready, checked by its node",
        LONG,
        async || {
            let s = c.service("checked");
            let instances = s["instances"].as_array().cloned().unwrap_or_default();
            let ready = instances.iter().filter(|i| i["healthy"] == true).count();
            if ready == 3 && s["rollout"]["phase"] == "complete" && c.spread("checked") == [1, 1, 1]
            {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    )
    .await;
    let nowhere = c.service("nowhere");
    assert_eq!(nowhere["status"], "pending", "{nowhere}");
    assert_eq!(
        nowhere["message"],
        "2 replicas unplaced: 3 nodes without the labels"
    );
    assert_eq!(c.spread("nowhere"), [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_never_gets_more_than_it_has() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 2, "").await;
    let cpus = c.node("n1").unwrap()["resources"]["cpu"].as_f64().unwrap();
    // Each replica reserves more than half of n1's CPUs: one fits there.
    let share = (cpus * 0.6 * 100.0).round() / 100.0;
    c.deploy(
        json!([{ "name": "big", "image": c.image(KAWEB), "replicas": 2,
        "resources": { "cpu": share, "reserve": { "cpu": share } }, "placement": { "node": "n1" } }]),
    );
    common::eventually("one placed, one not", LONG, async || {
        let big = c.service("big");
        let want =
            format!("1 replica unplaced: 1 node not n1, 1 node lacks {share} CPU to reserve");
        if c.spread("big") == [0, 1] && big["message"] == want.as_str() {
            Ok(())
        } else {
            Err(format!("{:?} {}", c.spread("big"), big["message"]))
        }
    })
    .await;
    assert_eq!(c.service("big")["status"], "degraded");
    let n1 = c.node("n1").unwrap();
    assert!(
        (n1["reserved"]["cpu"].as_f64().unwrap() - share).abs() < 1e-6,
        "{n1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_exec_and_metrics_cover_every_node() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    c.deploy(json!([{ "name": "logger", "image": c.image(LOGGER), "replicas": 3 }]));
    // Where they go is the scheduler's (tested elsewhere); here some must
    // run on an agent, beside the server's node or another agent.
    c.until_spread("logger", "3 replicas over 2 nodes or more", |s| {
        s.iter().sum::<usize>() == 3 && s[1] + s[2] > 0 && s.iter().filter(|n| **n > 0).count() >= 2
    })
    .await;
    let status = c.service("logger");
    let ids: Vec<(String, String)> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["id"].as_str().unwrap().to_string(),
                i["node"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Tail: lines of every replica, each prefixed by its id.
    common::eventually("lines from every node", LONG, async || {
        let out = c.orca(&["logs", "logger", "--tail", "60"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let missing: Vec<_> = ids
            .iter()
            .filter(|(id, _)| {
                !text
                    .lines()
                    .any(|l| l.starts_with(&format!("[{id}] line ")))
            })
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("{missing:?} in\n{text}"))
        }
    })
    .await;
    // Follow: new lines from the replicas on other nodes come as they are written.
    let out = c.lab.nodes[0]
        .nsenter("timeout")
        .arg("4")
        .arg(common::orca_bin())
        .args([
            "--api",
            "http://127.0.0.1:6880",
            "--token",
            common::cluster::ADMIN,
        ])
        .args(["logs", "logger", "-f", "--tail", "0"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for (id, node) in &ids {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("[{id}] line "))),
            "no followed line of {id} on {node}:\n{text}"
        );
    }
    // Exec: each replica, on whichever node runs it, answers as itself
    // (hostname `<service>-<slot>`), with its stderr and exit code.
    for (id, node) in &ids {
        let out = c.orca(&[
            "exec",
            "logger",
            "--instance",
            id,
            "--",
            "sh",
            "-c",
            "hostname; echo on-err >&2; exit 3",
        ]);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(
            out.status.code(),
            Some(3),
            "{id} on {node}: {stdout}{stderr}"
        );
        let slot = id.split('.').nth(1).unwrap();
        assert_eq!(stdout.trim(), format!("logger-{slot}"), "{id} on {node}");
        assert!(stderr.contains("on-err"), "{id} on {node}: {stderr}");
    }
    // Interactive exec, over the WebSocket and the node's stream: stdin
    // piped to each replica (`-i`), and a terminal (`-it`, on a terminal
    // `script` makes) whose size is the local one's.
    for (id, node) in &ids {
        let slot = id.split('.').nth(1).unwrap();
        let (out, err) = c.exec_piped("logger", id, "from-stdin", "cat; hostname; exit 4");
        assert_eq!(
            out,
            format!("from-stdin\nlogger-{slot}\ncode=4\n"),
            "{id} on {node}: {err}"
        );
        let shown = c.exec_on_terminal(77, 22, "logger", id, "stty size; tty; exit 5");
        assert!(
            shown.contains("22 77") && shown.contains("/dev/pts/") && shown.contains("code=5"),
            "{id} on {node}: {shown}"
        );
    }
    // Metrics: every node, its size and what is reserved there.
    let metrics = String::from_utf8_lossy(&c.orca_metrics()).to_string();
    assert!(metrics.contains("orca_nodes_total 3"), "{metrics}");
    for n in ["n0", "n1", "n2"] {
        assert!(
            metrics.contains(&format!("orca_node_capacity_cpu{{node=\"{n}\"}}")),
            "{n}: {metrics}"
        );
        assert!(metrics.contains(&format!("orca_node_reserved_memory_bytes{{node=\"{n}\"}}")));
        assert!(metrics.contains(&format!("orca_node_ready{{node=\"{n}\"}} 1")));
    }
    common::promtool_clean(&metrics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_and_rollback_across_nodes() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let versions = |c: &LabCluster| common::cluster::running_versions(&c.service("web"));
    let spec = |image: &str| {
        json!([{ "name": "web", "image": c.image(image), "replicas": 6,
        "port": 8080, "domain": "roll.test", "stop_grace_secs": 1,
        "readiness": { "path": "/healthz", "interval_secs": 1 } }])
    };
    c.deploy(spec("web:v1"));
    common::eventually("v1 on every node", LONG, async || {
        let (s, v) = (c.spread("web"), versions(&c));
        if s == [2, 2, 2] && v == [1; 6] && c.service("web")["rollout"]["phase"] == "complete" {
            Ok(())
        } else {
            Err(format!("{s:?} {v:?}"))
        }
    })
    .await;
    // Both rollouts under continuous load through n0's ingress, which
    // routes to replicas on all three nodes: not one request fails.
    Load::until_served(&c, 0, "roll.test", LONG).await;
    let load = Load::start(&c, 0, "roll.test");
    c.deploy(spec("web:v2"));
    common::eventually("v2 on every node", LONG, async || {
        let (s, v) = (c.spread("web"), versions(&c));
        let web = c.service("web");
        if s == [2, 2, 2] && v == [2; 6] && web["rollout"]["phase"] == "complete" {
            Ok(())
        } else {
            Err(format!("{s:?} {v:?} {}", web["rollout"]))
        }
    })
    .await;
    let seen = load.finish().await;
    seen.assert_no_failure_and_both_versions("the rollout");
    eprintln!("rolling update across 3 nodes under load: {seen:?}");
    let load = Load::start(&c, 0, "roll.test");
    let out = c.orca(&["rollback", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::eventually("back to the v1 image", LONG, async || {
        let web = c.service("web");
        let images_ok = web["image"].as_str().unwrap_or("").ends_with("web:v1");
        if images_ok && web["rollout"]["phase"] == "complete" && c.spread("web") == [2, 2, 2] {
            Ok(())
        } else {
            Err(format!("{} {:?}", web["rollout"], c.spread("web")))
        }
    })
    .await;
    let seen = load.finish().await;
    assert!(
        seen.failures.is_empty() && seen.ok() > 0,
        "failed requests during the rollback: {:?} ({} ok)",
        seen.failures,
        seen.ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_across_nodes_then_promote() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let spec = |image: &str, canary: bool| {
        let mut s = json!({ "name": "web", "image": c.image(image), "replicas": 3,
            "port": 8080, "readiness": { "path": "/" } });
        if canary {
            s["deploy"] = json!({ "strategy": "canary", "canary_weight": 50 });
        }
        json!([s])
    };
    c.deploy(spec("web:v1", false));
    c.until_spread("web", "v1 on every node", |s| {
        s == [1, 1, 1] && c.service("web")["rollout"]["phase"] == "complete"
    })
    .await;
    c.deploy(spec("web:v2", true));
    common::eventually(
        "a ready canary beside 3 stable replicas",
        LONG,
        async || {
            let web = c.service("web");
            let instances = web["instances"].as_array().cloned().unwrap_or_default();
            let ready = |canary: bool| {
                instances
                    .iter()
                    .filter(|i| i["canary"] == canary && i["healthy"] == true)
                    .count()
            };
            if ready(false) == 3 && ready(true) >= 1 && web["rollout"]["phase"] == "canary" {
                Ok(())
            } else {
                Err(web.to_string())
            }
        },
    )
    .await;
    let out = c.orca(&["promote", "web"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::eventually("v2 everywhere", LONG, async || {
        let web = c.service("web");
        let versions: Vec<u64> = web["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["version"].as_u64().unwrap())
            .collect();
        if versions.len() == 3
            && versions.iter().all(|v| *v == versions[0])
            && web["image"].as_str().unwrap().ends_with("web:v2")
            && web["rollout"]["phase"] == "complete"
            && c.spread("web") == [1, 1, 1]
        {
            Ok(())
        } else {
            Err(format!("{versions:?} {}", web["rollout"]))
        }
    })
    .await;
}
