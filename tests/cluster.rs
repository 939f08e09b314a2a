//! Several nodes for real, in the lab: agents join over mutual TLS (and
//! are refused with a bad, expired or revoked token, or a wrong CA pin),
//! replicas spread and placed by label, node and size, checked in each
//! node's own containerd.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{LabCluster, KAWEB};
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
    assert_eq!(c.node("n1").unwrap()["state"], "ready");

    // An agent restarted keeps its id and needs no token.
    c.kill_agent(1);
    c.spawn_agent(1, None);
    c.wait_ready(3).await;
    assert_eq!(c.nodes().len(), 3);
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
        "resources": { "cpu": share }, "placement": { "node": "n1" } }]),
    );
    common::eventually("one placed, one not", LONG, async || {
        let big = c.service("big");
        let want = format!("1 replica unplaced: 1 node not n1, 1 node lacks {share} CPU");
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
        (n1["allocated"]["cpu"].as_f64().unwrap() - share).abs() < 1e-6,
        "{n1}"
    );
}
