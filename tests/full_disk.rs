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

/// Bytes free on the filesystem of `dir`.
fn free(dir: &std::path::Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).unwrap();
    st.blocks_available() * st.fragment_size()
}

/// Fills the filesystem of `dir` with one file until `leave` bytes are
/// free (or less); returns its path.
fn fill(dir: &std::path::Path, leave: u64) -> std::path::PathBuf {
    fill_as(dir, "fill", leave)
}

fn fill_as(dir: &std::path::Path, name: &str, leave: u64) -> std::path::PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 64 * 1024];
    while free(dir) > leave && f.write_all(&block).is_ok() {}
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
        .post(
            "/api/v1/tokens",
            &json!({ "name": "before-full", "role": "viewer" }),
        )
        .await
        .unwrap();

    let data = server.dir.path().join("data");
    // A little more than the store keeps in reserve (8 MiB): a few writes
    // fit, then none.
    let filler = fill(&data, 10 << 20);

    // Writes: acknowledged while they leave the reserve free, then 507
    // with JSON, and nothing changed.
    let big = "x".repeat(256 * 1024);
    let mut stored = Vec::new();
    let refused = loop {
        let key = format!("big{}", stored.len());
        let put = c
            .put::<_, Value>(&format!("/api/v1/secrets/{key}"), &json!({ "value": big }))
            .await;
        match put {
            Ok(_) => stored.push(key),
            Err(e) => break (key, status_of::<()>(Err(e))),
        }
        assert!(stored.len() < 40, "never refused: {stored:?}");
    };
    assert!(!stored.is_empty(), "nothing fitted before the reserve");
    let (refused_key, (status, message)) = refused;
    assert_eq!(status, 507, "{message}");
    assert!(message.contains("full"), "{message}");
    let (status, _) = status_of(
        c.put::<_, Value>(
            &format!("/api/v1/secrets/{refused_key}"),
            &json!({ "value": big }),
        )
        .await,
    );
    assert_eq!(status, 507, "a second try, still full");
    // The node registry's writes too, however small: with less than the
    // reserve left, a drain is refused, and not applied.
    let more = fill_as(&data, "fill-more", 4 << 20);
    let (status, message) = status_of(
        c.post::<_, Value>("/api/v1/cluster/nodes/node-1/drain", &json!({}))
            .await,
    );
    assert_eq!(status, 507, "{message}");
    let info: Value = c.get("/api/v1/cluster/info").await.unwrap();
    assert_eq!(info["nodes"][0]["drained"], false, "{info}");
    std::fs::remove_file(&more).unwrap();

    // Reads keep working, and show only what was acknowledged.
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let names: Vec<&str> = s.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["kept"]);
    let secrets: Value = c.get("/api/v1/secrets").await.unwrap();
    let text = secrets.to_string();
    assert!(!text.contains(&format!("\"{refused_key}\"")), "{text}");
    for key in &stored {
        assert!(text.contains(&format!("\"{key}\"")), "{key} in {text}");
    }

    // Space again: writes work.
    std::fs::remove_file(&filler).unwrap();
    let _: Value = c
        .put(
            &format!("/api/v1/secrets/{refused_key}"),
            &json!({ "value": "small" }),
        )
        .await
        .unwrap();
    stored.push(refused_key);
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
    assert!(
        text.contains("\"before-full\"") && !text.contains("\"while-full\""),
        "{text}"
    );
}
