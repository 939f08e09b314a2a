//! A full data directory, on a real server whose `data_dir` is a small
//! tmpfs: writes answer 507 with a JSON error and change nothing, reads keep
//! working, what was acknowledged before is kept (also across a kill -9),
//! and writes work again once there is space.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;

use api::client::ClientError;
use common::server::{Extra, OrcaServer};
use serde_json::{json, Value};

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Fills the filesystem of `dir` with one file; returns its path.
fn fill(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("fill");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while f.write_all(&block).is_ok() {}
    let small = [0u8; 512];
    while f.write_all(&small).is_ok() {}
    let _ = f.sync_all();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_data_dir_refuses_writes_with_507_and_loses_nothing() {
    let Some(env) = common::env() else { return };
    let extra = Extra {
        data_tmpfs: Some("48m"),
        ..Default::default()
    };
    let mut server = OrcaServer::start_with(&env, "full", extra).await;
    let c = server.admin();
    let web = env.image("web:v1");
    let deploy = |name: &str| json!({ "services": [{ "name": name, "image": web, "port": 8080, "stop_grace_secs": 1 }] });
    let _: Value = c.post("/api/v1/deploy", &deploy("kept")).await.unwrap();
    let _: Value = c
        .post("/api/v1/tokens", &json!({ "name": "ci", "role": "viewer" }))
        .await
        .unwrap();

    let data = server.dir.path().join("data");
    let filler = fill(&data);

    // Writes: 507, JSON, nothing changed.
    let (status, message) = status_of(c.post::<_, Value>("/api/v1/deploy", &deploy("new")).await);
    assert_eq!(status, 507, "{message}");
    assert!(message.contains("full"), "{message}");
    let (status, _) = status_of(
        c.post::<_, Value>("/api/v1/tokens", &json!({ "name": "ci2", "role": "viewer" }))
            .await,
    );
    assert_eq!(status, 507);
    let (status, _) = status_of(
        c.post::<_, Value>("/api/v1/services/kept/scale", &json!({ "replicas": 3 }))
            .await,
    );
    assert_eq!(status, 507);

    // Reads keep working, and show only what was acknowledged.
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["kept"]);
    assert_eq!(s.services[0].replicas, 1);
    let tokens: Value = c.get("/api/v1/tokens").await.unwrap();
    let text = tokens.to_string();
    assert!(text.contains("\"ci\"") && !text.contains("\"ci2\""), "{text}");

    // Space again: writes work.
    std::fs::remove_file(&filler).unwrap();
    let _: Value = c.post("/api/v1/deploy", &deploy("new")).await.unwrap();
    let _: Value = c
        .post("/api/v1/services/kept/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();

    // Nothing refused shows up later, nothing acknowledged is lost: after a
    // kill -9 and a restart, exactly the acknowledged state.
    server.kill9();
    server.spawn().await;
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let mut got: Vec<(String, u32)> = s
        .services
        .iter()
        .map(|s| (s.name.clone(), s.replicas))
        .collect();
    got.sort();
    assert_eq!(got, [("kept".to_string(), 2), ("new".to_string(), 1)]);
    let tokens: Value = c.get("/api/v1/tokens").await.unwrap();
    let text = tokens.to_string();
    assert!(text.contains("\"ci\"") && !text.contains("\"ci2\""), "{text}");
}
