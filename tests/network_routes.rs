//! Path routes through the real ingress: services sharing one domain by
//! prefix, the longest prefix winning segment by segment, `strip_prefix`
//! (with a route that keeps the path as the control), a canary on one
//! route that leaves the others alone, 409 on a claimed prefix (deployed
//! or in the same request), 409 for another project's path on the domain,
//! 400 on bad routes, and a stopped service's
//! route answering 503.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use api::client::ApiClient;
use common::server::OrcaServer;
use serde_json::{json, Value};

const DOMAIN: &str = "shop.test";

/// A kaweb replica answering "kaweb NAME" on every path but /healthz.
fn service(env: &common::TestEnv, name: &str, routes: &[&str], strip: bool) -> Value {
    let mut s = json!({ "name": name, "image": env.image("kaweb:v1"), "port": 8080,
        "domain": DOMAIN, "env": { "VERSION": name }, "stop_grace_secs": 1,
        "readiness": { "path": "/healthz", "interval_secs": 1 } });
    if !routes.is_empty() {
        s["routes"] = json!(routes);
    }
    if strip {
        s["strip_prefix"] = json!(true);
    }
    s
}

async fn get(port: u16, path: &str) -> (u16, String) {
    let (status, body) = common::http::get(port, DOMAIN, path).await;
    (status, body.trim().to_string())
}

/// Waits until `path` answers `want` (routes follow readiness).
async fn until(port: u16, path: &str, want: (u16, &str)) {
    common::eventually(
        &format!("{path} answering {want:?}"),
        Duration::from_secs(30),
        async || match get(port, path).await {
            (s, b) if s == want.0 && b.contains(want.1) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}

async fn deploy_error(c: &ApiClient, services: Value) -> (u16, String) {
    match c
        .post::<_, Value>("/api/v1/deploy", &json!({ "services": services }))
        .await
    {
        Err(api::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_share_a_domain_and_the_longest_wins() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "routes").await;
    let c = server.admin();
    let port = server.proxy_port;
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [
                service(&env, "front", &[], false),
                service(&env, "api", &["/api"], true),
                service(&env, "apiv2", &["/api/v2"], true),
                service(&env, "plain", &["/plain"], false),
            ] }),
        )
        .await
        .unwrap();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    for name in ["front", "api", "apiv2", "plain"] {
        common::wait_for(&c, name, "ready", |s| common::healthy(s) == 1).await;
    }
    until(port, "/", (200, "kaweb front")).await;
    until(port, "/plain/x", (200, "kaweb plain")).await;

    // The longest prefix the path lies under, segment by segment.
    assert_eq!(get(port, "/").await, (200, "kaweb front".into()));
    assert_eq!(get(port, "/apix").await, (200, "kaweb front".into()));
    assert_eq!(get(port, "/api").await, (200, "kaweb api".into()));
    assert_eq!(get(port, "/api/users").await, (200, "kaweb api".into()));
    assert_eq!(
        get(port, "/api/v2/users").await,
        (200, "kaweb apiv2".into())
    );
    // Stripped: the replica sees /healthz. Kept whole (the control, same
    // image): it sees /plain/healthz, which is not its health path.
    assert_eq!(get(port, "/api/healthz").await, (200, "ok".into()));
    assert_eq!(get(port, "/api/v2/healthz").await, (200, "ok".into()));
    assert_eq!(
        get(port, "/plain/healthz").await,
        (200, "kaweb plain".into())
    );

    // A claimed prefix is refused, deployed or in the same request.
    let (status, message) =
        deploy_error(&c, json!([service(&env, "api2", &["/api"], false)])).await;
    assert_eq!(status, 409, "{message}");
    assert!(
        message.contains("route shop.test/api is already served by api"),
        "{message}"
    );
    let (status, message) = deploy_error(&c, json!([service(&env, "front2", &[], false)])).await;
    assert_eq!(status, 409, "{message}");
    assert!(
        message.contains("domain shop.test is already served by front"),
        "{message}"
    );
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [
                service(&env, "dup1", &["/dup"], false),
                service(&env, "dup2", &["/dup"], false),
            ] }),
        )
        .await
        .unwrap();
    assert_eq!(r["deployed"], json!(["dup1"]), "{r}");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .contains("dup2: route shop.test/dup is already served by dup1"),
        "{r}"
    );
    // Another project never takes a path of this domain; the control is
    // the same request in this project, above (apiv2, plain).
    let mut foreign = service(&env, "admin", &["/admin"], false);
    foreign["project"] = json!("other");
    let (status, message) = deploy_error(&c, json!([foreign])).await;
    assert_eq!(status, 409, "{message}");
    assert!(
        message.contains("of project default (a domain's routes stay in one project)"),
        "{message}"
    );
    // Bad routes: 400, nothing deployed.
    for (routes, want) in [
        (json!(["api/"]), "must start with /"),
        (json!(["/api/"]), "trailing"),
        (json!(["/a/../b"]), ".."),
    ] {
        let mut s = service(&env, "bad", &[], false);
        s["routes"] = routes;
        let (status, message) = deploy_error(&c, json!([s])).await;
        assert_eq!(status, 400, "{message}");
        assert!(message.contains(want), "{message}");
    }
    let mut s = service(&env, "bad", &["/x"], false);
    s.as_object_mut().unwrap().remove("domain");
    let (status, message) = deploy_error(&c, json!([s])).await;
    assert_eq!(
        (status, message.contains("routes needs a domain")),
        (400, true),
        "{message}"
    );

    // A canary on /api splits /api alone.
    let mut canary = service(&env, "api", &["/api"], true);
    canary["env"]["VERSION"] = json!("api-next");
    canary["deploy"] = json!({ "strategy": "canary", "canary_weight": 50 });
    let _: Value = c
        .post("/api/v1/deploy", &json!({ "services": [canary] }))
        .await
        .unwrap();
    common::wait_for(&c, "api", "a ready canary beside the stable replica", |s| {
        s.instances
            .iter()
            .filter(|i| i.healthy == Some(true))
            .count()
            == 2
    })
    .await;
    until(port, "/api", (200, "kaweb api-next")).await;
    let mut seen: HashMap<String, usize> = HashMap::new();
    for _ in 0..100 {
        *seen.entry(get(port, "/api").await.1).or_default() += 1;
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(
        seen["kaweb api"] >= 30 && seen["kaweb api-next"] >= 30,
        "{seen:?}"
    );
    for _ in 0..20 {
        assert_eq!(get(port, "/").await, (200, "kaweb front".into()));
        assert_eq!(get(port, "/api/v2/x").await, (200, "kaweb apiv2".into()));
    }

    // A stopped service's route answers 503; the others go on.
    let _: Value = c.delete("/api/v1/services/api").await.unwrap();
    until(port, "/api/users", (503, "no ready replica")).await;
    assert_eq!(get(port, "/apix").await, (200, "kaweb front".into()));
    assert_eq!(get(port, "/api/v2/x").await, (200, "kaweb apiv2".into()));
    // A path no route of a known domain takes: 404 naming the path.
    let mut lone = service(&env, "lone", &["/x"], false);
    lone["domain"] = json!("lone.test");
    let _: Value = c
        .post("/api/v1/deploy", &json!({ "services": [lone] }))
        .await
        .unwrap();
    common::eventually(
        "lone.test/y answering 404",
        Duration::from_secs(30),
        async || match common::http::get(port, "lone.test", "/y").await {
            (404, b) if b.contains(r#"no service for path \"/y\" on \"lone.test\""#) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    for name in ["front", "apiv2", "plain", "dup1", "lone"] {
        let _: Value = c.delete(&format!("/api/v1/services/{name}")).await.unwrap();
    }
}
