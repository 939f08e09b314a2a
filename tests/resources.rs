//! Limits and reservations on a real node: CPU limits that add up past
//! the cores all run (and stay CFS quotas), the seed's own example runs
//! beside other services, reservations wait for room, a memory limit
//! reserves unless told not to, and a rolling update on a full node
//! replaces in place with no failed request. Sized from the machine the
//! test runs on.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::load::Load;
use common::server::{Extra, OrcaServer};
use serde_json::{json, Value};

/// The node's cores and memory as it reports them.
async fn capacity(c: &api::client::ApiClient) -> (f64, u64) {
    let info: Value = c.get("/api/v1/cluster/info").await.unwrap();
    let r = &info["nodes"][0]["resources"];
    (
        r["cpu"].as_f64().unwrap(),
        r["memory_bytes"].as_u64().unwrap(),
    )
}

async fn node(c: &api::client::ApiClient) -> Value {
    let info: Value = c.get("/api/v1/cluster/info").await.unwrap();
    info["nodes"][0].clone()
}

async fn deploy(c: &api::client::ApiClient, services: Value) {
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": services }))
        .await
        .unwrap();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
}

/// Replica `id`'s CFS quota and period as `cpu.max` writes them
/// ("100000 100000"), on cgroup v2 or v1.
fn cpu_max(namespace: &str, id: &str) -> String {
    let read = |file: &str| {
        std::fs::read_to_string(file)
            .ok()
            .map(|s| s.trim().to_string())
    };
    if let Some(max) = read(&format!("/sys/fs/cgroup/{namespace}/{id}/cpu.max")) {
        return max;
    }
    let v1 = format!("/sys/fs/cgroup/cpu/{namespace}/{id}");
    match (
        read(&format!("{v1}/cpu.cfs_quota_us")),
        read(&format!("{v1}/cpu.cfs_period_us")),
    ) {
        (Some(quota), Some(period)) => format!("{quota} {period}"),
        _ => panic!("no CPU quota for {id} in cgroup v2 or v1"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_limits_past_the_cores_and_the_seed_example_all_run() {
    let Some(env) = common::env() else { return };
    let extra = Extra {
        node_id: Some("worker-1"),
        ..Default::default()
    };
    let server = OrcaServer::start_with(&env, "cpulimits", extra).await;
    let c = server.admin();
    let (cores, _) = capacity(&c).await;
    // Limits adding up to 1.5 times the cores: 2 x 0.5 and 1 x 0.5 of them.
    let web = env.image("web:v1");
    let half = (cores * 0.5 * 100.0).round() / 100.0;
    deploy(
        &c,
        json!([
            { "name": "web", "image": web, "replicas": 2, "resources": { "cpu": half }, "stop_grace_secs": 1 },
            { "name": "api", "image": web, "replicas": 1, "resources": { "cpu": half }, "stop_grace_secs": 1 }
        ]),
    )
    .await;
    common::wait_for_all(&c, "3 replicas at 1.5x the cores running", |s| {
        s.running_replicas == s.replicas
    })
    .await;
    let n = node(&c).await;
    assert!(
        (n["cpu_limits"].as_f64().unwrap() - 3.0 * half).abs() < 1e-6,
        "{n}"
    );
    assert_eq!(n["reserved"]["cpu"].as_f64(), Some(0.0), "{n}");

    // The seed's own example, verbatim, beside them.
    c.put::<_, Value>(
        "/api/v1/secrets/KEY",
        &json!({ "value": "seed-secret", "project": "frontend" }),
    )
    .await
    .unwrap();
    let seed = r#"{
"services": [{
"name": "my-app",
"project": "frontend",
"image": "nginx:alpine",
"replicas": 2,
"port": 80,
"domain": "app.example.com",
"health": "/healthz",
"env": {
"KEY": "${secrets.KEY}"
},
"resources": {
"memory": "512Mi",
"cpu": 1.0
},
"internal": true,
"placement": {
"node": "worker-1"
}
}]
}"#;
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &serde_json::from_str::<Value>(seed).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(r["deployed"], json!(["my-app"]), "{r}");
    let s = common::wait_for(&c, "my-app", "2/2 running", |s| {
        s.running_replicas == 2 && serde_json::to_value(s.status).unwrap() == "running"
    })
    .await;
    common::wait_for_all(&c, "everything still running", |s| {
        s.running_replicas == s.replicas
    })
    .await;
    // Still limits: each replica's CFS quota is one core.
    for i in &s.instances {
        assert_eq!(cpu_max(&server.namespace, &i.id), "100000 100000");
    }
    let n = node(&c).await;
    assert!(
        (n["cpu_limits"].as_f64().unwrap() - (3.0 * half + 2.0)).abs() < 1e-6,
        "{n}"
    );
    assert_eq!(
        n["reserved"]["memory_bytes"].as_u64(),
        Some((2 * 512) << 20),
        "{n}"
    );
    assert_eq!(n["allocated"], n["reserved"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reservations_wait_for_room_and_a_memory_limit_reserves() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "reserve").await;
    let c = server.admin();
    let (cores, memory) = capacity(&c).await;
    let web = env.image("web:v1");
    let sleeper = |name: &str, replicas: u32, resources: Value| {
        json!({ "name": name, "image": web, "replicas": replicas, "resources": resources,
            "stop_grace_secs": 1 })
    };
    let three_quarters = (cores * 0.75 * 100.0).round() / 100.0;
    let half = (cores * 0.5 * 100.0).round() / 100.0;
    deploy(
        &c,
        json!([sleeper(
            "hog",
            1,
            json!({ "reserve": { "cpu": three_quarters } })
        )]),
    )
    .await;
    common::wait_for(&c, "hog", "running", |s| s.running_replicas == 1).await;
    deploy(
        &c,
        json!([sleeper(
            "db",
            1,
            json!({ "cpu": half, "reserve": { "cpu": half } })
        )]),
    )
    .await;
    let want = format!("1 replica unplaced: 1 node lacks {half} CPU to reserve");
    common::wait_for(&c, "db", "pending with the reason", |s| {
        serde_json::to_value(s.status).unwrap() == "pending" && s.message.as_deref() == Some(&want)
    })
    .await;
    c.delete::<Value>("/api/v1/services/hog").await.unwrap();
    common::wait_for(&c, "db", "running once hog is gone", |s| {
        s.running_replicas == 1
    })
    .await;

    // A memory limit reserves: 3 replicas of 40% fit 2 at a time...
    let forty = format!("{}Mi", (memory * 2 / 5) >> 20);
    deploy(
        &c,
        json!([sleeper("limited", 3, json!({ "memory": forty }))]),
    )
    .await;
    common::wait_for(&c, "limited", "2 placed, 1 not", |s| {
        s.running_replicas == 2
            && s.message.as_deref().is_some_and(|m| {
                m.starts_with("1 replica unplaced: 1 node lacks")
                    && m.ends_with("of memory to reserve")
            })
    })
    .await;
    // ...and one that reserves none all run, capped as asked.
    deploy(
        &c,
        json!([sleeper(
            "shared",
            3,
            json!({ "memory": forty, "reserve": { "memory": "0" } })
        )]),
    )
    .await;
    common::wait_for(&c, "shared", "all 3 running", |s| s.running_replicas == 3).await;
}

/// Two replicas of `image` that fill the node's cores by reservation,
/// behind the ingress at `full.test`.
fn full(image: &str, cores: f64, extra: Value) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": 2, "port": 8080, "domain": "full.test",
        "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1,
        "resources": { "reserve": { "cpu": cores / 2.0 } } });
    if let (Some(s), Some(extra)) = (s.as_object_mut(), extra.as_object()) {
        s.extend(extra.clone());
    }
    json!([s])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_on_a_full_node_replaces_in_place_without_a_failed_request() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "inplace").await;
    let c = server.admin();
    let (cores, _) = capacity(&c).await;
    deploy(&c, full(&env.image("web:v1"), cores, json!({}))).await;
    common::wait_for(&c, "web", "2 healthy v1", |s| common::all_ready_on(s, 1, 2)).await;

    let load = Load::start(server.proxy_port, "full.test");
    tokio::time::sleep(Duration::from_millis(300)).await;
    deploy(&c, full(&env.image("web:v2"), cores, json!({}))).await;
    let mut said = None;
    let started = Instant::now();
    loop {
        let st: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
        let s = &st.services[0];
        let r = s.rollout.as_ref().unwrap();
        assert_ne!(
            r.phase,
            api::status::RolloutPhase::Reverted,
            "{}",
            r.message
        );
        if said.is_none() && r.message.contains("in place") {
            said = Some(r.message.clone());
        }
        if common::all_ready_on(s, 2, 2) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "{s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = load.finish("the rollout in place").await;
    assert!(seen.contains_key("web v2"), "{seen:?}");
    let said = said.expect("the rollout said it replaced in place");
    assert!(
        said.contains("no room for a surge on any node; replacing in place, 1 at a time"),
        "{said}"
    );
    eprintln!("replaced in place in {:?}: {said}", started.elapsed());

    // A canary on the full node fails at once, and v2 serves on.
    let asked = Instant::now();
    deploy(
        &c,
        full(
            &env.image("web:v1"),
            cores,
            json!({ "deploy": { "strategy": "canary", "canary_weight": 50 } }),
        ),
    )
    .await;
    let s = common::wait_for(&c, "web", "the canary failed", |s| {
        s.rollout.as_ref().is_some_and(|r| {
            r.phase == api::status::RolloutPhase::Failed
                && r.message.contains("no room for the canary on any node")
        })
    })
    .await;
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "at once: {:?}",
        asked.elapsed()
    );
    assert!(common::all_ready_on(&s, 2, 2), "{s:#?}");
}
