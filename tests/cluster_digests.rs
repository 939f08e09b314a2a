//! Across nodes, a version runs the digest it was deployed with: a node
//! that lacks the image pulls that digest, not the tag that has moved on
//! since, and with `pull = "never"` it refuses to start the replica rather
//! than pull anything. Both on a lab of two nodes, each with its own
//! containerd; the LAN's registry holds the moving tag.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::LabCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_image_pulls_the_versions_digest_or_refuses_with_never() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 2, "").await;
    let reference = format!("moving:d{:06x}", common::rand_u32() & 0xff_ffff);
    c.lab
        .push_image(&env.images.join("web-v1"), "v1", &reference);
    let tag = c.image(&reference);
    // No replicas yet: the deploy pulls the tag on both nodes and records
    // its digest.
    c.deploy(json!([
        { "name": "pin", "image": tag, "replicas": 0, "port": 8080, "stop_grace_secs": 1 },
    ]));
    // Then, with the image on both nodes, one that never pulls.
    c.deploy(json!([
        { "name": "never", "image": tag, "replicas": 0, "port": 8080, "stop_grace_secs": 1,
          "pull": "never" },
    ]));
    common::eventually("both deployed", Duration::from_secs(30), async || {
        let (pin, never) = (c.service("pin"), c.service("never"));
        (pin["version"] == 1 && never["version"] == 1)
            .then_some(())
            .ok_or_else(|| format!("{pin}\n{never}"))
    })
    .await;

    // n1 forgets the image, and the tag moves on to v2.
    let ctr = |i: usize| {
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&c.lab.nodes[i].socket)
            .args(["-n", &c.containerd_namespace(i)]);
        cmd
    };
    let images = common::run(ctr(1).args(["images", "ls", "-q"]));
    for name in images.lines().filter(|l| l.contains("orca-test/moving")) {
        common::run(ctr(1).args(["images", "rm", name]));
    }
    c.lab
        .push_image(&env.images.join("web-v2"), "v2", &reference);

    // One replica on each node: n1's pulls version 1's digest.
    for service in ["pin", "never"] {
        assert!(c
            .orca(&["scale", service, "2", "--detach"])
            .status
            .success());
    }
    c.until_spread("pin", "pin on both nodes", |s| s == [1, 1])
        .await;
    let pin = c.service("pin");
    for i in pin["instances"].as_array().unwrap() {
        let node = if i["node"] == "n0" { 0 } else { 1 };
        let id = i["id"].as_str().unwrap();
        let page = c.exec(node, id, &["cat", "/www/index.html"]);
        assert_eq!(page.trim(), "web v1", "{id} on {}", i["node"]);
    }
    let pulled = common::run(ctr(1).args(["images", "ls", "-q"]));
    assert!(
        pulled.lines().any(|l| l.contains("@sha256:")),
        "n1 pulled by digest: {pulled}"
    );

    // pull = "never": n1 starts nothing and says why; n0 runs its replica.
    let never = common::eventually("never refused on n1", Duration::from_secs(60), async || {
        let s = c.service("never");
        let text = s.to_string();
        (text.contains("pull is \\\"never\\\"") && c.running_on(0, "never") >= 1)
            .then_some(s.clone())
            .ok_or(text)
    })
    .await;
    assert_eq!(c.running_on(1, "never"), 0, "{never}");
}
