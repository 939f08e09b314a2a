//! Weighted canaries through the ingress: the split follows the weight,
//! rollback during a canary removes it, promote makes it the only version,
//! and a second canary after a promote works.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::server::OrcaServer;
use serde_json::{json, Value};

/// The body of one request through the ingress, which must succeed.
async fn get(port: u16) -> String {
    let (status, body) = common::http::get(port, "canary.test", "/").await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn split(port: u16, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        *seen.entry(get(port).await).or_default() += 1;
    }
    seen
}

/// The distinct answers of 50 requests, sorted.
async fn distinct_answers(port: u16) -> Vec<String> {
    let mut seen: Vec<String> = split(port, 50).await.into_keys().collect();
    seen.sort();
    seen
}

fn spec(image: &str, canary: Option<i64>) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": 2, "port": 8080, "domain": "canary.test",
        "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 });
    if let Some(w) = canary {
        s["deploy"] = json!({ "strategy": "canary", "canary_weight": w });
    }
    json!({ "services": [s] })
}

/// Waits until every running replica is ready and the counts match.
async fn settle(
    c: &api::client::ApiClient,
    stable: usize,
    canary: usize,
) -> api::status::ServiceStatus {
    let ready = |svc: &api::status::ServiceStatus, want_canary: bool| {
        svc.instances
            .iter()
            .filter(|i| {
                i.canary == want_canary
                    && i.healthy == Some(true)
                    && i.state == api::status::InstanceState::Running
            })
            .count()
    };
    let svc = common::wait_for(
        c,
        "web",
        &format!("{stable} stable + {canary} canary ready"),
        |svc| {
            ready(svc, false) == stable
                && ready(svc, true) == canary
                && svc.instances.len() == stable + canary
        },
    )
    .await;
    // Routes follow readiness; give them a beat.
    tokio::time::sleep(Duration::from_millis(300)).await;
    svc
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_rollback_promote_and_again() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "canary").await;
    let c = server.admin();
    let (v1, v2) = (env.image("web:v1"), env.image("web:v2"));
    c.post::<_, Value>("/api/v1/deploy", &spec(&v1, None))
        .await
        .unwrap();
    settle(&c, 2, 0).await;
    let e = c
        .post::<_, Value>("/api/v1/services/web/promote", &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no canary"), "{e}");

    // Canary at 50 %: both versions, within a few percent over 1000 requests.
    c.post::<_, Value>("/api/v1/deploy", &spec(&v2, Some(50)))
        .await
        .unwrap();
    let s = settle(&c, 2, 1).await;
    assert_eq!(s.version, 1, "the stable version stays");
    assert!(
        s.message
            .as_deref()
            .unwrap_or("")
            .contains("canary version 2 at 50%"),
        "{s:#?}"
    );
    let seen = split(server.proxy_port, 1000).await;
    let v2_share = *seen.get("web v2").unwrap_or(&0) as f64 / 1000.0;
    assert!((v2_share - 0.5).abs() <= 0.05, "{seen:?}");

    // DNS splits by weight too: asked from a stable replica, `web` answers
    // the canary or the stable replicas, taking turns.
    let canary_ip = s
        .instances
        .iter()
        .find(|i| i.canary)
        .unwrap()
        .ip
        .clone()
        .unwrap();
    let asker = s.instances.iter().find(|i| !i.canary).unwrap().id.clone();
    let cri = server.cri().await;
    let script = "for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do \
        timeout 5 nslookup -type=a web | sed -n '/^Name:/,$p' | grep '^Address' | tr '\\n' ' '; echo; done";
    let out = cri
        .exec(
            &asker,
            &["sh".into(), "-c".into(), script.into()],
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    let answers: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(answers.len(), 20, "{out:?}");
    let to_canary = answers.iter().filter(|a| a.contains(&canary_ip)).count();
    assert!(
        answers
            .iter()
            .all(|a| a.contains(&canary_ip) != (a.matches("Address").count() == 2)),
        "each answer is one side: {answers:#?}"
    );
    assert_eq!(to_canary, 10, "50% of the answers: {answers:#?}");

    // Rollback during a canary removes it.
    let r: Value = c
        .post("/api/v1/services/web/rollback", &json!({}))
        .await
        .unwrap();
    assert_eq!(r["removed_canary"], 2, "{r}");
    settle(&c, 2, 0).await;
    assert_eq!(distinct_answers(server.proxy_port).await, ["web v1"]);

    // A new canary, then promote: only v2.
    c.post::<_, Value>("/api/v1/deploy", &spec(&v2, Some(20)))
        .await
        .unwrap();
    let s = settle(&c, 2, 1).await;
    let canary_version = s.instances.iter().find(|i| i.canary).unwrap().version;
    let seen = split(server.proxy_port, 500).await;
    let share = *seen.get("web v2").unwrap_or(&0) as f64 / 500.0;
    assert!((share - 0.2).abs() <= 0.06, "20% canary: {seen:?}");
    let r: Value = c
        .post("/api/v1/services/web/promote", &json!({}))
        .await
        .unwrap();
    assert_eq!(r["version"].as_u64(), Some(canary_version));
    let s = settle(&c, 2, 0).await;
    assert!(
        s.instances.iter().all(|i| i.version == canary_version),
        "{s:#?}"
    );
    assert_eq!(distinct_answers(server.proxy_port).await, ["web v2"]);

    // A second canary after the promote works.
    c.post::<_, Value>("/api/v1/deploy", &spec(&v1, Some(50)))
        .await
        .unwrap();
    settle(&c, 2, 1).await;
    let seen = split(server.proxy_port, 200).await;
    assert!(
        seen.contains_key("web v1") && seen.contains_key("web v2"),
        "{seen:?}"
    );
}
