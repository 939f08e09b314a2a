//! Rolling updates under load through the ingress: v1 to v2 with no failed
//! request, and a broken v3 that is reverted to v2, also without one.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::load::Load;
use common::server::OrcaServer;
use serde_json::{json, Value};

fn spec(image: &str) -> Value {
    json!({ "services": [{ "name": "web", "image": image, "replicas": 3, "port": 8080, "domain": "roll.test",
        "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1,
        "deploy": { "progress_deadline_secs": 20 } }] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_and_revert_without_a_failed_request() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "rolling").await;
    let c = server.admin();
    c.post::<_, Value>("/api/v1/deploy", &spec(&env.image("web:v1")))
        .await
        .unwrap();
    common::wait_for(&c, "web", "3 healthy v1", |s| common::all_ready_on(s, 1, 3)).await;

    // v1 -> v2 under load.
    let load = Load::start(server.proxy_port, "roll.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let r: Value = c
        .post("/api/v1/deploy", &spec(&env.image("web:v2")))
        .await
        .unwrap();
    assert_eq!(r["deployed"], json!(["web"]));
    let s = common::wait_for(&c, "web", "only v2", |s| common::all_ready_on(s, 2, 3)).await;
    let took = started.elapsed();
    let seen = load.finish("the rollout").await;
    assert!(
        seen.contains_key("web v1") && seen.contains_key("web v2"),
        "{seen:?}"
    );
    assert_eq!(serde_json::to_value(s.status).unwrap(), "running");
    eprintln!("rolling 3 replicas v1 -> v2 took {took:?}; requests: {seen:?}");

    // A broken v3 (exits after 2 s, never ready) is reverted to v2.
    let load = Load::start(server.proxy_port, "roll.test");
    c.post::<_, Value>("/api/v1/deploy", &spec(&env.image("crasher:latest")))
        .await
        .unwrap();
    let s = common::wait_for(&c, "web", "revert to v2", |s| {
        s.version == 2
            && s.message
                .as_deref()
                .is_some_and(|m| m.contains("deploy of version 3 failed"))
            && s.instances.len() == 3
            && s.instances.iter().all(|i| i.version == 2)
    })
    .await;
    let seen = load.finish("the failed rollout").await;
    assert_eq!(seen.keys().collect::<Vec<_>>(), vec!["web v2"], "{seen:?}");
    assert!(s.message.unwrap().contains("reverted to version 2"));

    let v: Value = c.get("/api/v1/services/web/versions").await.unwrap();
    assert_eq!(v["current"], 2);
    assert_eq!(v["versions"].as_array().unwrap().len(), 3);

    // Rollback to a numbered version is a new version, rolled out the same way.
    let load = Load::start(server.proxy_port, "roll.test");
    let r: Value = c
        .post("/api/v1/services/web/rollback", &json!({ "version": 1 }))
        .await
        .unwrap();
    assert_eq!(
        (r["version"].as_u64(), r["rolled_back_to"].as_u64()),
        (Some(4), Some(1)),
        "{r}"
    );
    common::wait_for(&c, "web", "v1 again", |s| common::all_ready_on(s, 4, 3)).await;
    let seen = load.finish("the rollback").await;
    assert!(seen.contains_key("web v1"), "{seen:?}");
    let (_, body) = common::http::get(server.proxy_port, "roll.test", "/").await;
    assert_eq!(body, "web v1");
    let v: Value = c.get("/api/v1/services/web/versions").await.unwrap();
    assert_eq!(v["versions"][0]["note"], "rollback to 1");
    let e = c
        .post::<_, Value>("/api/v1/services/web/rollback", &json!({ "version": 99 }))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("version 99 of web not found"), "{e}");
}
