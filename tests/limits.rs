//! Limits that keep one replica from taking the host down: a fork bomb
//! stops at its replica's pids limit while orca and other replicas go on.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::server::OrcaServer;
use serde_json::{json, Value};

/// A file of replica `id`'s pids cgroup, on cgroup v2 or v1.
fn pids_file(namespace: &str, id: &str, file: &str) -> String {
    let candidates = [
        PathBuf::from(format!("/sys/fs/cgroup/{namespace}/{id}/{file}")),
        PathBuf::from(format!("/sys/fs/cgroup/pids/{namespace}/{id}/{file}")),
    ];
    candidates
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_else(|| panic!("none of {candidates:?}"))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "forkbomb").await;
    let c = server.admin();
    let web = env.image("web:v1");
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [
                { "name": "web", "image": web, "port": 8080, "stop_grace_secs": 1 },
                { "name": "bomb", "image": web, "stop_grace_secs": 1,
                  "resources": { "pids": 64 },
                  "command": ["sh", "-c",
                      "(while true; do sleep 600 & done) 2>/dev/null & exec sleep 100000"] }
            ] }),
        )
        .await
        .unwrap();
    assert_eq!(r["deployed"].as_array().unwrap().len(), 2, "{r}");
    let s = common::wait_for_all(&c, "both running", |s| s.running_replicas == 1).await;
    let id = |name: &str| {
        s.services
            .iter()
            .find(|x| x.name == name)
            .unwrap()
            .instances[0]
            .id
            .clone()
    };
    let (bomb, web_id) = (id("bomb"), id("web"));
    assert_eq!(pids_file(&server.namespace, &bomb, "pids.max"), "64");
    assert_eq!(pids_file(&server.namespace, &web_id, "pids.max"), "1024");

    // The bomb (beside PID 1, which runs on) reaches its limit and the
    // kernel refuses it more.
    common::eventually(
        "forks refused at the limit",
        Duration::from_secs(30),
        async || {
            let events = pids_file(&server.namespace, &bomb, "pids.events");
            let refused: u64 = events
                .strip_prefix("max ")
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            if refused > 0 {
                Ok(())
            } else {
                Err(events)
            }
        },
    )
    .await;
    let current: u64 = pids_file(&server.namespace, &bomb, "pids.current")
        .parse()
        .unwrap();
    assert!(current <= 64, "{current} processes");

    // orca answers and another replica still forks and serves.
    let health: Value = c.get("/api/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    let cri = server.cri().await;
    let args: Vec<String> = ["sh", "-c", "wget -q -O - http://127.0.0.1:8080/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = cri
        .exec(&web_id, &args, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(out.stdout.contains("web v1"), "{out:?}");
}
