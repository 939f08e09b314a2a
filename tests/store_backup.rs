//! `orca store backup` and `restore` on a real server: a snapshot taken
//! while scales keep coming, restored into a new data directory, makes a
//! server whose services are those of the snapshot and which adopts the
//! replicas still running; a restore never writes over a store that has
//! anything in it, and only an unscoped admin takes a backup.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use api::store::StoreSnapshot;
use common::server::{OrcaServer, ADMIN, DEPLOYER};
use serde_json::{json, Value};

/// The record of `service` in the snapshot, decoded.
fn record(snap: &StoreSnapshot, service: &str) -> Value {
    let e = snap
        .entries
        .iter()
        .find(|e| e.tree == "services" && e.key == service)
        .unwrap_or_else(|| panic!("{service} not in the snapshot"));
    serde_json::from_slice(&hex::decode(&e.value).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_during_writes_restores_into_a_new_server() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "backup").await;
    let c = server.admin();
    let logger = env.image("logger:latest");
    c.put::<_, Value>("/api/v1/secrets/K", &json!({ "value": "sealed-value" }))
        .await
        .unwrap();
    let spec = |name: &str, replicas: u32, env_ref: bool| {
        let mut s =
            json!({ "name": name, "image": logger, "replicas": replicas, "stop_grace_secs": 1 });
        if env_ref {
            s["env"] = json!({ "P": "${secrets.K}" });
        }
        s
    };
    c.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [spec("a", 1, true), spec("b", 1, false)] }),
    )
    .await
    .unwrap();
    let a = common::wait_for(&c, "a", "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;

    // Scales keep coming while the backup is taken.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                c.post::<_, Value>(
                    "/api/v1/services/b/scale",
                    &json!({ "replicas": 1 + n % 3 }),
                )
                .await
                .unwrap();
            }
            n
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let file = server.dir.path().join("state.snap");
    let (code, out, err) = server
        .cli(ADMIN, &["store", "backup", "-f", file.to_str().unwrap()])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    stop.store(true, Ordering::Relaxed);
    let scales = writer.await.unwrap();
    assert!(scales > 1, "the writes went on ({scales} scales)");
    let snap: StoreSnapshot = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let b = record(&snap, "b");
    let b_replicas = b["spec"]["replicas"].as_u64().unwrap();
    assert!((1..=3).contains(&b_replicas), "{b}");
    assert!(snap
        .entries
        .iter()
        .any(|e| e.tree == "secrets" && !e.value.contains(&hex::encode("sealed-value"))));
    // A file that is there is never written over.
    let (code, _, err) = server
        .cli(ADMIN, &["store", "backup", "-f", file.to_str().unwrap()])
        .await;
    assert_ne!(code, 0);
    assert!(err.contains("must not exist"), "{err}");

    // The server dies; its replicas run on. A new data directory is made
    // from the snapshot (with the old one's key, which it does not hold).
    server.kill9();
    let old = server.dir.path().join("data");
    let new = server.dir.path().join("restored");
    std::fs::create_dir_all(&new).unwrap();
    std::fs::copy(old.join("secrets.key"), new.join("secrets.key")).unwrap();
    let restore = [
        "store",
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        new.to_str().unwrap(),
    ];
    let (code, out, err) = server.cli(ADMIN, &restore).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("restored {} entries", snap.entries.len())),
        "{out}"
    );
    // Never into a store that has anything.
    let (code, _, err) = server.cli(ADMIN, &restore).await;
    assert_ne!(code, 0);
    assert!(err.contains("not empty"), "{err}");

    let config = server.dir.path().join("cluster.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(&old.display().to_string(), &new.display().to_string()),
    )
    .unwrap();
    server.spawn().await;
    let b_now = common::wait_for(&c, "b", "the snapshot's count", |s| {
        s.replicas as u64 == b_replicas && s.running_replicas as u64 == b_replicas
    })
    .await;
    assert_eq!(b_now.version, b["version"].as_u64().unwrap());
    let a_now = common::wait_for(&c, "a", "running", |s| s.running_replicas == 1).await;
    assert_eq!(a_now.instances[0].pid, a.instances[0].pid, "a adopted");
    // The sealed secret opens with the key: a new deploy may name it.
    c.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [spec("c", 1, true)] }),
    )
    .await
    .unwrap();

    // Only an unscoped admin: a deployer and a scoped admin get 403.
    let (scoped, _) = server.scoped_token("shop-admin", "admin", "shop").await;
    for client in [server.client(Some(DEPLOYER)), scoped] {
        match client.get::<Value>("/api/v1/store/backup").await {
            Err(api::client::ClientError::Api { status, .. }) => assert_eq!(status, 403),
            other => panic!("{other:?}"),
        }
    }
}
