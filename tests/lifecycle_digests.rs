//! A version runs the image digest it was deployed with, whatever its tag
//! names later: after the tag moves to a crashing image, the revert, a
//! scale-up and a rollback all start the recorded digest (the tag is never
//! moved back by hand here), and each replica serves the first image.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use api::status::{InstanceState, RolloutPhase};
use common::server::OrcaServer;
use serde_json::{json, Value};

/// What each running replica of `name` serves from its image.
async fn served(server: &OrcaServer, c: &api::client::ApiClient, name: &str) -> Vec<String> {
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let service = s.services.iter().find(|s| s.name == name).unwrap();
    let cri = server.cri().await;
    let mut out = Vec::new();
    for i in &service.instances {
        let r = cri
            .exec(
                &i.id,
                &["cat".to_string(), "/www/index.html".to_string()],
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        out.push(r.stdout.trim().to_string());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_runs_its_digest_after_the_tag_moves() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "digests").await;
    let c = server.admin();
    let tag = format!("{}/orca-test/pinned:{}", env.registry, server.namespace);
    common::skopeo_tag(&env, "web-v1", "v1", &tag);
    let spec = |replicas: u32| {
        json!({ "services": [{ "name": "pin", "image": tag, "replicas": replicas, "port": 8080,
            "pull": "always", "readiness": { "path": "/" }, "stop_grace_secs": 1,
            "deploy": { "progress_deadline_secs": 30 } }] })
    };
    c.post::<_, Value>("/api/v1/deploy", &spec(2))
        .await
        .unwrap();
    common::wait_for(&c, "pin", "version 1 ready", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.version == 1 && r.phase == RolloutPhase::Complete)
    })
    .await;
    assert_eq!(served(&server, &c, "pin").await, ["web v1", "web v1"]);

    // The tag moves to an image that crashes; the redeploy resolves it, a
    // new version, which crashes and is reverted.
    common::skopeo_tag(&env, "crasher-latest", "latest", &tag);
    let r: Value = c.post("/api/v1/deploy", &spec(2)).await.unwrap();
    assert_eq!(r["versions"]["pin"], 2, "{r}");
    common::wait_for(&c, "pin", "version 2 reverted", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.version == 2 && r.phase == RolloutPhase::Reverted)
            && s.instances
                .iter()
                .all(|i| i.version == 1 && i.state == InstanceState::Running)
    })
    .await;

    // A scale-up starts new replicas of version 1: its digest, not the tag.
    c.post::<_, Value>("/api/v1/services/pin/scale", &json!({ "replicas": 3 }))
        .await
        .unwrap();
    let s = common::wait_for(&c, "pin", "3 ready replicas of version 1", |s| {
        s.instances.len() == 3
            && s.instances.iter().all(|i| {
                i.version == 1 && i.state == InstanceState::Running && i.healthy == Some(true)
            })
    })
    .await;
    assert_eq!(s.instances.iter().filter(|i| i.restarts > 0).count(), 0);
    assert_eq!(served(&server, &c, "pin").await, ["web v1"; 3]);

    // The tag moves again, to v2, and is deployed; a rollback to version 1
    // is then a new version that runs version 1's digest, not the tag's.
    common::skopeo_tag(&env, "web-v2", "v2", &tag);
    let r: Value = c.post("/api/v1/deploy", &spec(3)).await.unwrap();
    assert_eq!(r["versions"]["pin"], 3, "{r}");
    common::wait_for(&c, "pin", "version 3 complete", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.version == 3 && r.phase == RolloutPhase::Complete)
    })
    .await;
    assert_eq!(served(&server, &c, "pin").await, ["web v2"; 3]);
    let r: Value = c
        .post("/api/v1/services/pin/rollback", &json!({ "version": 1 }))
        .await
        .unwrap();
    let version = r["version"].as_u64().unwrap();
    assert_eq!(version, 4, "{r}");
    common::wait_for(&c, "pin", "the rollback complete", |s| {
        s.rollout
            .as_ref()
            .is_some_and(|r| r.version == version && r.phase == RolloutPhase::Complete)
    })
    .await;
    assert_eq!(served(&server, &c, "pin").await, ["web v1"; 3]);
    let versions: Value = c.get("/api/v1/services/pin/versions").await.unwrap();
    let digests: Vec<&Value> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["image_digest"])
        .collect();
    // Newest first: the rollback's digest is version 1's, not version 3's.
    assert_eq!(digests[0], digests[3], "{versions}");
    assert_ne!(digests[0], digests[1], "{versions}");
    assert!(digests[0]
        .as_str()
        .is_some_and(|d| d.starts_with("sha256:")));
}
