//! Limits and reservations through the control plane over a fake node:
//! CPU limits past the cores all run, reservations wait for room, a
//! memory limit reserves unless told not to, and rollouts that find no
//! room replace in place, or fail at once when even that cannot work.

use std::time::{Duration, Instant};

use api::status::RolloutPhase;
use serde_json::{json, Value};

use super::{call, deploy_req, eventually_within, plane, running};
use crate::control::ControlPlane;

const LONG: Duration = Duration::from_secs(20);

async fn deploy(cp: &ControlPlane, services: Value) {
    let (status, body) = call(cp, deploy_req(services)).await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(
        body["errors"].as_array().is_none_or(|e| e.is_empty()),
        "{body}"
    );
}

fn service(cp: &ControlPlane, name: &str) -> api::status::ServiceStatus {
    cp.status(None)
        .services
        .into_iter()
        .find(|s| s.name == name)
        .unwrap()
}

#[tokio::test]
async fn cpu_limits_past_the_cores_all_run() {
    // The fake node has 4 cores; the limits add up to 6.
    let (cp, agent) = plane().await;
    deploy(
        &cp,
        json!([
            { "name": "web", "image": "x", "replicas": 4, "resources": { "cpu": 1.0 } },
            { "name": "api", "image": "x", "replicas": 2, "resources": { "cpu": 1.0 } }
        ]),
    )
    .await;
    eventually_within("6 running", LONG, || {
        running(&agent, "web") == 4 && running(&agent, "api") == 2
    })
    .await;
    let info = cp.cluster_info();
    assert_eq!(info.nodes[0].reserved.cpu, 0.0);
    assert!((info.nodes[0].cpu_limits - 6.0).abs() < 1e-9);
}

#[tokio::test]
async fn a_cpu_reservation_waits_for_room_and_starts_once_freed() {
    let (cp, agent) = plane().await;
    deploy(
        &cp,
        json!([{ "name": "hog", "image": "x", "replicas": 1,
            "resources": { "reserve": { "cpu": 3.0 } } }]),
    )
    .await;
    eventually_within("hog runs", LONG, || running(&agent, "hog") == 1).await;
    deploy(
        &cp,
        json!([{ "name": "db", "image": "x", "replicas": 1,
            "resources": { "cpu": 2.0, "reserve": { "cpu": 2.0 } } }]),
    )
    .await;
    eventually_within("db pending with the reason", LONG, || {
        let s = service(&cp, "db");
        s.message.as_deref() == Some("1 replica unplaced: 1 node lacks 2 CPU to reserve")
            && serde_json::to_value(s.status).unwrap() == "pending"
    })
    .await;
    assert_eq!(running(&agent, "db"), 0);
    call(&cp, api::ApiRequest::StopService { name: "hog".into() })
        .await
        .unwrap();
    eventually_within("db runs once hog is gone", LONG, || {
        running(&agent, "db") == 1
    })
    .await;
}

#[tokio::test]
async fn a_memory_limit_reserves_and_a_zero_reservation_does_not() {
    // 8 GiB on the fake node.
    let (cp, agent) = plane().await;
    deploy(
        &cp,
        json!([{ "name": "limited", "image": "x", "replicas": 3,
            "resources": { "memory": "3Gi" } }]),
    )
    .await;
    eventually_within("2 of 3 placed", LONG, || {
        running(&agent, "limited") == 2
            && service(&cp, "limited").message.as_deref()
                == Some("1 replica unplaced: 1 node lacks 3Gi of memory to reserve")
    })
    .await;
    deploy(
        &cp,
        json!([{ "name": "shared", "image": "x", "replicas": 3,
            "resources": { "memory": "3Gi", "reserve": { "memory": "0" } } }]),
    )
    .await;
    eventually_within("all 3 placed", LONG, || running(&agent, "shared") == 3).await;
    assert_eq!(cp.cluster_info().nodes[0].reserved.memory_bytes, 6 << 30);
}

/// Two replicas that fill the fake node's 4 cores by reservation.
fn full(image: &str, extra: Value) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": 2,
        "resources": { "reserve": { "cpu": 2.0 } } });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    json!([s])
}

#[tokio::test]
async fn a_rolling_update_on_a_full_node_replaces_in_place() {
    let (cp, agent) = plane().await;
    deploy(&cp, full("app:v1", json!({}))).await;
    eventually_within("v1 complete", LONG, || {
        service(&cp, "web")
            .rollout
            .is_some_and(|r| r.phase == RolloutPhase::Complete)
    })
    .await;
    deploy(&cp, full("app:v2", json!({}))).await;
    let mut said_in_place = false;
    let start = Instant::now();
    loop {
        let s = service(&cp, "web");
        said_in_place |= s.message.as_deref().is_some_and(|m| {
            m.contains("no room for a surge on any node; replacing in place, 1 at a time")
        });
        let serving = agent
            .instances()
            .iter()
            .filter(|i| i.service == "web" && i.state == crate::agent::ProcessState::Running)
            .count();
        assert!(serving >= 1, "max_unavailable 1 keeps one serving");
        let r = s.rollout.unwrap();
        assert_ne!(r.phase, RolloutPhase::Reverted, "{}", r.message);
        if r.version == 2 && r.phase == RolloutPhase::Complete {
            break;
        }
        assert!(start.elapsed() < LONG, "not complete: {}", r.message);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(said_in_place, "status said it replaced in place");
    assert!(agent.instances().iter().all(|i| i.version == 2));
    let (kept, _) = cp.inner().feed.subscribe(Some(0));
    assert!(
        kept.iter()
            .any(|e| e.message.contains("replacing in place, 1 at a time")),
        "an event said so"
    );
}

#[tokio::test]
async fn a_canary_without_room_fails_at_once() {
    let (cp, agent) = plane().await;
    deploy(&cp, full("app:v1", json!({}))).await;
    eventually_within("v1 runs", LONG, || running(&agent, "web") == 2).await;
    let asked = Instant::now();
    deploy(
        &cp,
        full(
            "app:v2",
            json!({ "deploy": { "strategy": "canary", "canary_weight": 50 } }),
        ),
    )
    .await;
    eventually_within("the canary failed", LONG, || {
        service(&cp, "web").rollout.is_some_and(|r| {
            r.phase == RolloutPhase::Failed
                && r.message.contains("no room for the canary on any node")
        })
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "at once, not after a deadline"
    );
    assert_eq!(running(&agent, "web"), 2, "the stable replicas serve on");
}

#[tokio::test]
async fn a_version_that_fits_nowhere_fails_at_once() {
    let (cp, agent) = plane().await;
    deploy(
        &cp,
        json!([{ "name": "web", "image": "app:v1", "replicas": 2,
            "resources": { "reserve": { "cpu": 1.0 } } }]),
    )
    .await;
    eventually_within("v1 complete", LONG, || {
        service(&cp, "web")
            .rollout
            .is_some_and(|r| r.phase == RolloutPhase::Complete)
    })
    .await;
    let asked = Instant::now();
    deploy(
        &cp,
        json!([{ "name": "web", "image": "app:v2", "replicas": 2,
            "resources": { "reserve": { "cpu": 5.0 } } }]),
    )
    .await;
    eventually_within("reverted with the scheduler's reasons", LONG, || {
        service(&cp, "web").rollout.is_some_and(|r| {
            r.phase == RolloutPhase::Reverted
                && r.message
                    .contains("no node can take a replica of version 2")
                && r.message.contains("lacks 5 CPU to reserve")
        })
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "at once, not after a deadline"
    );
    assert_eq!(running(&agent, "web"), 2);
    assert!(agent.instances().iter().all(|i| i.version == 1));
}

#[tokio::test]
async fn services_stored_before_reservations_run_on_where_they_are() {
    use std::sync::Arc;

    use crate::agent::fake::FakeAgent;
    use crate::agent::{Instance, ProcessState};
    use crate::store::{MemStore, Repo, ServiceRecord};

    // A record as stored before reservations (a canary without `failed`):
    // CPU limits adding up to 9 of the fake node's 4 cores, all running.
    let stored = json!({
        "spec": { "name": "web", "image": "app:v1", "replicas": 3, "resources": { "cpu": 3.0 } },
        "version": 2, "image_digest": "sha256:x", "stopped": false, "generation": 5,
        "history": [], "updated_at": "", "reverted": null, "secrets_fingerprint": null,
        "canary": { "version": 3, "weight": 10, "image_digest": "sha256:y",
            "spec": { "name": "web", "image": "app:v2", "resources": { "cpu": 3.0 } } }
    });
    let record: ServiceRecord = serde_json::from_value(stored).unwrap();
    assert!(record.canary.as_ref().is_some_and(|c| c.failed.is_none()));
    let store = Arc::new(MemStore::default());
    Repo::new(store.clone()).put_service(&record).unwrap();
    let agent = Arc::new(FakeAgent::default());
    for (slot, version) in [(0, 2), (1, 2), (2, 2), (0, 3)] {
        agent.preload(Instance {
            id: format!("web.{slot}.v{version}"),
            node: "fake-node".into(),
            service: "web".into(),
            project: "default".into(),
            version,
            slot,
            pid: Some(100 + slot),
            state: ProcessState::Running,
            ip: None,
            run: 0,
            restart: Default::default(),
        });
    }
    let cp = super::plane_with(agent.clone(), store).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acted: Vec<String> = agent
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("start") || c.starts_with("remove"))
        .collect();
    assert!(acted.is_empty(), "nothing moved: {acted:?}");
    assert_eq!(service(&cp, "web").running_replicas, 3);
    assert_eq!(agent.instances().len(), 4);
}
