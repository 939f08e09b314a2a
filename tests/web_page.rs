//! The status page at `/` in headless Chromium against a real server: it
//! asks for a token, shows a deployed service with its replicas and the
//! node, follows a scale change and its events without a reload, tails a
//! service's log, and keeps the token in the tab only. A screenshot is
//! saved in `target/test-artifacts/status-page.png`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::browser::{self, Browser};
use common::server::{OrcaServer, VIEWER};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

/// Rows of service `name` and of its replicas, and what the page says of them.
const SERVICE_ROWS: &str = r#"
    const svc = document.querySelector('#services tr[data-service="web"]');
    const replicas = document.querySelectorAll('#services tr.replica[data-instance^="web."]');
    return { service: svc ? svc.textContent : null, replicas: replicas.length,
             events: [...document.querySelectorAll('#events li')].map(li => li.dataset.kind),
             error: document.getElementById('error').textContent };
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_cluster_and_follows_it_live() {
    let Some(env) = common::env() else { return };
    if !browser::available() {
        return;
    }
    let server = OrcaServer::start(&env, "page").await;
    common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "web", "project": "shop", "image": env.image("web:v1"), "replicas": 2, "port": 8080, "stop_grace_secs": 1 }]),
    )
    .await;

    // The page itself is public, with a policy that keeps it to this origin.
    let (status, body) = common::http::get(server.port, "orca", "/").await;
    assert_eq!(status, 200);
    assert!(body.contains("<title>orca</title>"));
    let head = common::http::head(server.port, "orca", "/").await;
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );

    let page = Browser::start().await;
    page.open(&format!("http://127.0.0.1:{}/", server.port))
        .await;
    // First it asks for a token; a wrong one is refused.
    page.until(
        "login form",
        WITHIN,
        "return !document.getElementById('login').hidden",
        "return document.body.innerText",
    )
    .await;
    page.type_into("#token", "not-a-token-of-this-cluster")
        .await;
    page.click("#signin").await;
    page.until(
        "refusal",
        WITHIN,
        "return document.getElementById('login-error').textContent.includes('not valid')",
        "return document.body.innerText",
    )
    .await;
    page.type_into("#token", VIEWER).await;
    page.click("#signin").await;

    // The service with its two replicas (node, health), and the node.
    page.until(
        "web and its 2 replicas",
        WITHIN,
        &format!("const r = (() => {{ {SERVICE_ROWS} }})(); return r.service !== null && r.service.includes('2/2') && r.replicas === 2"),
        &format!("return (() => {{ {SERVICE_ROWS} }})()"),
    )
    .await;
    let text = page.eval("return document.body.innerText").await;
    let text = text.as_str().unwrap();
    assert!(text.contains("node-1") && text.contains("ready"), "{text}");
    let nodes = page
        .eval("return [...document.querySelectorAll('#nodes tbody tr')].map(r => r.textContent)")
        .await;
    assert!(nodes.to_string().contains("node-1"), "{nodes}");
    // The token is this tab's only.
    let stored = page
        .eval("return [sessionStorage.getItem('orca-token'), localStorage.length]")
        .await;
    assert_eq!(stored, json!([VIEWER, 0]));

    // A scale appears without a reload: the same page (its marker stays),
    // three replicas, and the events that told it.
    page.eval("window.orcaTestMarker = 7; return true").await;
    let _: Value = server
        .admin()
        .post("/api/v1/services/web/scale", &json!({ "replicas": 3 }))
        .await
        .unwrap();
    page.until(
        "web at 3 replicas",
        WITHIN,
        &format!("const r = (() => {{ {SERVICE_ROWS} }})(); return r.replicas === 3 && r.service.includes('/3') && r.events.includes('scaled')"),
        &format!("return (() => {{ {SERVICE_ROWS} }})()"),
    )
    .await;
    assert_eq!(page.eval("return window.orcaTestMarker").await, json!(7));

    // A log tail per service.
    page.click("#services tr[data-service=\"web\"] button")
        .await;
    page.until(
        "web's log",
        WITHIN,
        "return document.getElementById('logs-text').textContent.includes('web v1 listening')",
        "return document.getElementById('logs').innerText",
    )
    .await;

    let shot = page.screenshot().await;
    assert!(shot.starts_with(b"\x89PNG"), "not a PNG");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("status-page.png"), shot).unwrap();
    page.close().await;
}
