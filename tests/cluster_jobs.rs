//! Jobs on an agent node, in the lab: jobs placed on n1 run and complete
//! there (one after a failed try); with n1's link cut, its agent restarts
//! a crashed long-running replica (the positive control) but leaves the
//! finished jobs' replicas exited; back online, the server neither reruns
//! a job nor restarts its replicas, and `orca run` starts the next run on
//! n1. Every task is read from n1's own containerd.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::cluster::{LabCluster, KAWEB};
use serde_json::{json, Value};

/// A short grace, and no rescheduling during the test.
const TIMINGS: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 300";
const WEB: &str = "web:v1";

async fn until(what: &str, f: impl Fn() -> Result<(), String>) {
    common::eventually(what, Duration::from_secs(90), async || f()).await
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

/// Waits until `service`'s status is `status`; its status.
async fn until_status(c: &LabCluster, service: &str, status: &str) -> Value {
    let what = format!("{service} {status}");
    common::eventually(&what, Duration::from_secs(90), async || {
        let s = c.service(service);
        if s["status"] == status {
            Ok(s)
        } else {
            Err(format!("{s:#}"))
        }
    })
    .await
}

/// Ok once node `id` is in `state`.
fn node_is(c: &LabCluster, id: &str, state: &str) -> Result<(), String> {
    match c.node(id).unwrap()["state"].as_str() {
        Some(s) if s == state => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_on_an_agent_finish_there_and_stay_finished_while_it_is_cut_off() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 2, TIMINGS).await;
    let on_n1 = json!({ "node": "n1" });
    c.deploy(json!([
        { "name": "once", "image": c.image(WEB), "replicas": 2, "restart": "never",
          "command": sh("echo done"), "placement": on_n1 },
        // Fails its first try; the retry in the same container succeeds.
        { "name": "retry", "image": c.image(WEB), "restart": "on-failure",
          "command": sh("if [ -f /ran ]; then exit 0; fi; touch /ran; exit 1"),
          "placement": on_n1 },
        { "name": "pinned", "image": c.image(KAWEB), "placement": on_n1 },
    ]));
    for job in ["once", "retry"] {
        let s = until_status(&c, job, "completed").await;
        for i in s["instances"].as_array().unwrap() {
            assert_eq!(i["node"], "n1", "{s:#}");
            assert_eq!(i["exit_code"], 0, "{s:#}");
            assert_eq!(i["run"], 1, "{s:#}");
        }
    }
    assert!(
        c.service("retry")["instances"][0]["restarts"]
            .as_u64()
            .unwrap()
            >= 1,
        "{:#}",
        c.service("retry")
    );
    c.until_spread("pinned", "pinned runs on n1", |s| s == [0, 1])
        .await;
    let finished = |job: &str| {
        let tasks = c.tasks_of(1, job);
        assert!(!tasks.is_empty(), "{job} has no task on n1");
        assert!(
            tasks.iter().all(|(_, status)| status == "STOPPED"),
            "{job}: {tasks:?}"
        );
        tasks
    };
    let (once, retry) = (finished("once"), finished("retry"));
    assert_eq!(once.len(), 2, "{once:?}");

    // n1 cut off: its agent keeps its replicas by itself. A crash of the
    // long-running one is restarted (the keeper is at work) ...
    c.lab.set_link(1, false);
    until("n1 disconnected", || node_is(&c, "n1", "disconnected")).await;
    let old = c.pids_on(1, "pinned");
    assert_eq!(old.len(), 1, "{old:?}");
    c.kill_replicas(1, "pinned");
    until("pinned restarted by n1's agent", || {
        let pids = c.pids_on(1, "pinned");
        match pids.as_slice() {
            [pid] if !old.contains(pid) => Ok(()),
            _ => Err(format!("{pids:?} (was {old:?})")),
        }
    })
    .await;
    // ... and in those same rounds, the finished jobs stay as they ended.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(finished("once"), once, "while cut off");
    assert_eq!(finished("retry"), retry, "while cut off");

    // Back online: the server reruns nothing.
    c.lab.set_link(1, true);
    until("n1 back", || node_is(&c, "n1", "ready")).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(finished("once"), once, "after the return");
    assert_eq!(finished("retry"), retry, "after the return");
    let s = until_status(&c, "once", "completed").await;
    assert_eq!(s["job"]["run"], 1, "{s:#}");

    // A run asked for now runs on n1 and completes.
    let out = c.orca(&["run", "once", "--wait"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let s = until_status(&c, "once", "completed").await;
    assert_eq!(s["job"]["run"], 2, "{s:#}");
    assert_eq!(s["job"]["last_exit_code"], 0, "{s:#}");
    for i in s["instances"].as_array().unwrap() {
        assert_eq!((&i["node"], &i["run"]), (&json!("n1"), &json!(2)), "{s:#}");
    }
    assert_eq!(c.tasks_of(1, "once").len(), 2, "run 1's replicas replaced");
}
