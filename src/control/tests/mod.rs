//! The control plane against a fake node and an in-memory store: deploy,
//! scale, stop, crashes and backoff, adoption, orphans, validation and
//! concurrent writes.

use std::sync::Arc;
use std::time::Duration;

use api::{ApiError, ApiRequest, ApiResponse, Caller, Handler, Role};
use serde_json::{json, Value};

use super::{ControlPlane, Settings};
use crate::agent::fake::FakeAgent;
use crate::agent::{Instance, ProcessState};
use crate::metrics::Metrics;
use crate::store::{MemStore, Repo, ServiceRecord};

fn admin() -> Option<Caller> {
    Some(Caller {
        name: "tester".into(),
        role: Role::Admin,
        project: None,
    })
}

async fn plane_with(agent: Arc<FakeAgent>, store: Arc<MemStore>) -> ControlPlane {
    let cp = ControlPlane::new(
        Repo::new(store),
        Some(agent),
        Settings::default(),
        Metrics::new().unwrap(),
        None,
        None,
    )
    .unwrap();
    cp.start().await.unwrap();
    cp
}

async fn plane() -> (ControlPlane, Arc<FakeAgent>) {
    let agent = Arc::new(FakeAgent::default());
    (
        plane_with(agent.clone(), Arc::new(MemStore::default())).await,
        agent,
    )
}

async fn call(cp: &ControlPlane, request: ApiRequest) -> Result<(u16, Value), ApiError> {
    match cp.handle(request, admin()).await? {
        ApiResponse::Json(status, v) => Ok((status, serde_json::from_slice(&v).unwrap())),
        ApiResponse::Text(t) | ApiResponse::Metrics(t) => Ok((200, Value::String(t))),
        ApiResponse::Stream(_)
        | ApiResponse::Events(_)
        | ApiResponse::Page
        | ApiResponse::Download { .. }
        | ApiResponse::Attach(_) => Ok((200, Value::Null)),
    }
}

fn deploy_req(services: Value) -> ApiRequest {
    ApiRequest::Deploy(serde_json::from_value(json!({ "services": services })).unwrap())
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    eventually_within(what, Duration::from_secs(3), f).await
}

async fn eventually_within(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

fn running(agent: &FakeAgent, service: &str) -> usize {
    agent
        .instances()
        .iter()
        .filter(|i| i.service == service && i.state == ProcessState::Running)
        .count()
}

#[tokio::test]
async fn deploy_scale_stop() {
    let (cp, agent) = plane().await;
    let (status, body) = call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v1", "replicas": 3 }])),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["deployed"], json!(["web"]));
    eventually("3 replicas", || running(&agent, "web") == 3).await;
    let st = cp.status(None);
    assert_eq!(st.services[0].running_replicas, 3);
    assert_eq!(
        serde_json::to_value(st.services[0].status).unwrap(),
        "running"
    );

    call(
        &cp,
        ApiRequest::Scale {
            name: "web".into(),
            replicas: 1,
        },
    )
    .await
    .unwrap();
    eventually("1 replica", || agent.instances().len() == 1).await;
    assert_eq!(agent.instances()[0].slot, 0);

    // Same spec again: nothing to do.
    let (_, body) = call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v1", "replicas": 1 }])),
    )
    .await
    .unwrap();
    assert_eq!(body["unchanged"], json!(["web"]));
    assert_eq!(cp.status(None).services[0].version, 1);

    // A changed spec is a new version: the old replica is replaced.
    let old = agent.instances()[0].id.clone();
    call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v2", "replicas": 1 }])),
    )
    .await
    .unwrap();
    eventually("v2 replica", || {
        agent.instances().iter().any(|i| i.version == 2) && agent.instances().len() == 1
    })
    .await;
    assert!(agent.instances().iter().all(|i| i.id != old));

    call(&cp, ApiRequest::StopService { name: "web".into() })
        .await
        .unwrap();
    eventually("nothing left", || agent.instances().is_empty()).await;
    assert_eq!(
        serde_json::to_value(cp.status(None).services[0].status).unwrap(),
        "stopped"
    );

    // Each acknowledged change is on the event feed, in order.
    use api::events::EventKind::*;
    let (kept, _) = cp.inner().feed.subscribe(Some(0));
    let changes: Vec<_> = kept
        .iter()
        .filter(|e| matches!(e.kind, Deployed | Scaled | Stopped | RolloutComplete))
        .map(|e| (e.kind, e.version))
        .collect();
    assert_eq!(
        changes,
        vec![
            // Version 1 never ran long enough to count as ready.
            (Deployed, Some(1)),
            (Scaled, Some(1)),
            (Deployed, Some(2)),
            (RolloutComplete, Some(2)),
            (Stopped, Some(2)),
        ]
    );
}

#[tokio::test]
async fn adopts_what_runs_and_removes_orphans() {
    let agent = Arc::new(FakeAgent::default());
    let store = Arc::new(MemStore::default());
    let spec: api::spec::ServiceSpec =
        serde_json::from_value(json!({ "name": "web", "image": "app:v1", "replicas": 2 })).unwrap();
    Repo::new(store.clone())
        .put_service(&ServiceRecord {
            spec,
            version: 4,
            image_digest: Some("sha256:x".into()),
            stopped: false,
            generation: 7,
            history: vec![],
            updated_at: String::new(),
            reverted: None,
            canary: None,
            secrets_fingerprint: None,
            job: Default::default(),
        })
        .unwrap();
    let inst = |id: &str, service: &str, slot| Instance {
        id: id.into(),
        node: "fake-node".into(),
        service: service.into(),
        project: "default".into(),
        version: 4,
        slot,
        pid: Some(42 + slot),
        state: ProcessState::Running,
        ip: None,
        run: 0,
        restart: Default::default(),
    };
    agent.preload(inst("web.0.aaaaaa", "web", 0));
    agent.preload(inst("web.1.bbbbbb", "web", 1));
    agent.preload(inst("gone.0.cccccc", "gone", 0));
    let cp = plane_with(agent.clone(), store).await;
    eventually("orphan removed", || agent.instances().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        agent.calls().iter().all(|c| !c.starts_with("start")),
        "{:?}",
        agent.calls()
    );
    let acted: Vec<String> = agent
        .calls()
        .into_iter()
        .filter(|c| !c.starts_with("isolation") && !c.starts_with("pull"))
        .collect();
    assert_eq!(acted, vec!["remove gone.0.cccccc".to_string()]);
    let pids: Vec<_> = cp.status(None).services[0]
        .instances
        .iter()
        .map(|i| i.pid)
        .collect();
    assert_eq!(pids, vec![Some(42), Some(43)]);
}

#[tokio::test]
async fn bad_deploys_change_nothing() {
    let (cp, agent) = plane().await;
    let cases = [
        (
            json!([{ "name": "../etc", "image": "x" }]),
            "invalid service name",
        ),
        (
            json!([{ "name": "web", "image": "x", "replicas": -1 }]),
            "invalid replicas",
        ),
        (
            json!([{ "name": "web", "image": "x", "replicas": 1000 }]),
            "invalid replicas",
        ),
        (
            json!([{ "name": "web", "image": "x", "resources": { "memory": "lots" } }]),
            "resources.memory",
        ),
        (
            json!([{ "name": "web", "image": "x", "resources": { "cpu": 5000.0 } }]),
            "resources.cpu",
        ),
        (
            json!([{ "name": "web", "image": "Not An Image" }]),
            "invalid image reference",
        ),
        (
            json!([{ "name": "web", "image": "missing/app:v1" }]),
            "image not found",
        ),
        (
            json!([{ "name": "web", "image": "x", "env": { "P": "${secrets.DB}" } }]),
            "unknown secret \"DB\"",
        ),
        (
            json!([{ "name": "pypi", "project": "org", "image": "x" }]),
            "project name \"org\" is reserved",
        ),
        (
            json!([{ "name": "web", "project": "corp", "image": "x" }]),
            "is reserved",
        ),
    ];
    for (services, want) in cases {
        let (status, body) = call(&cp, deploy_req(services.clone())).await.unwrap();
        assert_eq!(status, 400, "{services}");
        assert!(
            body["error"].as_str().unwrap().contains(want),
            "{services}: {body}"
        );
        assert_eq!(body["deployed"], json!([]));
    }
    assert!(cp.status(None).services.is_empty());
    assert!(agent.instances().is_empty());

    // One bad service does not stop a good one beside it.
    let (status, body) = call(
        &cp,
        deploy_req(json!([{ "name": "good", "image": "x" }, { "name": "BAD", "image": "x" }])),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(body["deployed"], json!(["good"]));
    assert_eq!(body["errors"].as_array().unwrap().len(), 1);

    // A name taken by another project.
    let (status, _) = call(
        &cp,
        deploy_req(json!([{ "name": "good", "project": "other", "image": "x" }])),
    )
    .await
    .unwrap();
    assert_eq!(status, 409);

    let e = call(
        &cp,
        ApiRequest::Scale {
            name: "nope".into(),
            replicas: 1,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.status, e.message.as_str()),
        (404, "service not found: nope")
    );
    let e = call(
        &cp,
        ApiRequest::Promote {
            name: "good".into(),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.status, 409);
}

#[tokio::test]
async fn failed_starts_back_off_and_report_why() {
    let (cp, agent) = plane().await;
    call(
        &cp,
        deploy_req(json!([{ "name": "bad", "image": "broken/app:v1" }])),
    )
    .await
    .unwrap();
    eventually("failed status", || {
        let s = cp.status(None);
        serde_json::to_value(s.services[0].status).unwrap() == "failed"
    })
    .await;
    let s = &cp.status(None).services[0];
    assert!(
        s.message.as_deref().unwrap().contains("no such file"),
        "{:?}",
        s.message
    );
    let starts = agent
        .calls()
        .iter()
        .filter(|c| c.starts_with("start"))
        .count();
    assert!(
        (2..=3).contains(&starts),
        "{starts} starts: backoff not applied"
    );
}

#[tokio::test]
async fn drained_node_gets_no_new_replicas() {
    let (cp, agent) = plane().await;
    call(
        &cp,
        ApiRequest::Drain {
            node: "fake-node".into(),
            deadline_secs: None,
            move_volumes: false,
        },
    )
    .await
    .unwrap();
    call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "x", "replicas": 2 }])),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(agent.instances().is_empty());
    let s = &cp.status(None).services[0];
    assert_eq!(serde_json::to_value(s.status).unwrap(), "pending");
    assert!(s.message.as_deref().unwrap().contains("drained"));
    assert!(cp.cluster_info().nodes[0].drained);
    call(
        &cp,
        ApiRequest::Undrain {
            node: "fake-node".into(),
        },
    )
    .await
    .unwrap();
    eventually("replicas after undrain", || running(&agent, "web") == 2).await;
    let e = call(
        &cp,
        ApiRequest::Drain {
            node: "other".into(),
            deadline_secs: None,
            move_volumes: false,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_end_in_the_last_acknowledged_state() {
    let (cp, agent) = plane().await;
    call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "x", "replicas": 1 }])),
    )
    .await
    .unwrap();
    // Each task answers the generation its write got, and the replica
    // count that write asked for.
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let cp = cp.clone();
            tokio::spawn(async move {
                let (request, wanted) = match i % 3 {
                    0 => {
                        let n = (i % 7) as i64;
                        let name = "web".into();
                        (ApiRequest::Scale { name, replicas: n }, n)
                    }
                    1 => (ApiRequest::StopService { name: "web".into() }, 0),
                    _ => {
                        let n = (i % 5) as i64;
                        let spec = json!([{ "name": "web", "image": "x", "replicas": n }]);
                        (deploy_req(spec), n)
                    }
                };
                let (_, body) = call(&cp, request).await.unwrap();
                let generation = body["generation"]
                    .as_u64()
                    .or_else(|| body["generations"]["web"].as_u64())
                    .unwrap();
                (generation, wanted)
            })
        })
        .collect();
    let mut acks = Vec::new();
    for t in tasks {
        acks.push(t.await.unwrap());
    }
    // The last acknowledged write is the one with the highest generation;
    // the store and the node end in its state.
    let (_, last) = acks.iter().max_by_key(|(g, _)| *g).copied().unwrap();
    let want = last as usize;
    let record = cp.inner().repo.service("web").unwrap().unwrap();
    assert_eq!(record.desired_replicas() as usize, want);
    eventually("convergence", || {
        running(&agent, "web") == want && agent.instances().len() == want
    })
    .await;
    assert_eq!(cp.inner().state().records["web"], record);
}

mod exec;
mod lost;
mod nodes;
mod resources;
mod restarts;
mod rollout;
mod secrets;
