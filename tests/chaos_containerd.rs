//! containerd killed (SIGKILL) and started again in the middle of a rolling
//! update, on a lab node with a containerd of its own: the replicas live on
//! through it (their shims do), orca reconnects, resubscribes and finishes
//! the rollout, and not one request through the ingress fails. Prints the
//! time from containerd answering again to the rollout complete.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::load::Load;
use common::cluster::LabCluster;
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);

use common::cluster::running_versions as versions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_survives_a_containerd_restart_without_a_failed_request() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_server(&env, 1, "").await;
    let spec = |image: &str| {
        json!([{ "name": "web", "image": c.image(image), "replicas": 4,
            "port": 8080, "domain": "cd.test", "stop_grace_secs": 1,
            "deploy": { "max_unavailable": 1 },
            "readiness": { "path": "/healthz", "interval_secs": 1 } }])
    };
    c.deploy(spec("web:v1"));
    common::eventually("v1 complete", LONG, async || {
        let web = c.service("web");
        if versions(&web) == [1; 4] && web["rollout"]["phase"] == "complete" {
            Ok(())
        } else {
            Err(web.to_string())
        }
    })
    .await;
    Load::until_served(&c, 0, "cd.test", LONG).await;
    let load = Load::start(&c, 0, "cd.test");
    c.deploy(spec("web:v2"));
    common::eventually("the rollout under way", LONG, async || {
        let web = c.service("web");
        if versions(&web).contains(&2) {
            Ok(())
        } else {
            Err(web.to_string())
        }
    })
    .await;

    // containerd goes away for 2 s, mid-rollout.
    c.lab.kill_containerd(0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    c.lab.start_containerd_again(0).await;
    let back = Instant::now();
    common::eventually("v2 complete after containerd came back", LONG, async || {
        let web = c.service("web");
        if versions(&web) == [2; 4] && web["rollout"]["phase"] == "complete" {
            Ok(())
        } else {
            let log = c.log(0);
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains("readiness changed"))
                .collect();
            Err(format!(
                "{web}\n-- server log --\n{}",
                lines[lines.len().saturating_sub(60)..].join("\n")
            ))
        }
    })
    .await;
    let finished = back.elapsed();
    let seen = load.finish().await;
    println!(
        "containerd answering again to the rollout complete: {:.2} s; requests through the ingress: {} ok, {} failed",
        finished.as_secs_f64(),
        seen.ok(),
        seen.failures.len()
    );
    seen.assert_no_failure_and_both_versions("the rollout and containerd's restart");
    // And the node's containerd is up in orca's eyes.
    let nodes = c.nodes();
    assert_eq!(nodes[0]["containerd"], "up", "{nodes:?}");
}
