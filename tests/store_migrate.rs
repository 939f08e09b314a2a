//! `orca store migrate --to etcd` on a running server: the last snapshot
//! is kept in a file and written into an empty etcd; the server takes no
//! change after it (503, nothing applied); restarted on the new config it
//! has every service, the same replica process (adopted, not started
//! again), the secrets open, and the same cluster CA. A migration into an
//! etcd that holds anything is refused before the server is touched.

#![allow(clippy::unwrap_used)]

mod common;

use common::etcd::Etcd;
use common::server::{OrcaServer, ADMIN, DEPLOYER};
use serde_json::{json, Value};

/// The CA pin of a new join token (`orca-join-<CA SHA-256>-...`).
async fn ca_pin(server: &OrcaServer) -> String {
    let (code, out, err) = server
        .cli(ADMIN, &["cluster", "join-token", "--ttl", "1h"])
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let token = out
        .split_whitespace()
        .find(|w| w.starts_with("orca-join-"))
        .unwrap_or_else(|| panic!("no token in {out}"));
    token.split('-').nth(2).unwrap().to_string()
}

/// `orca store migrate --to etcd --config NEW -f SNAP`: code, out, err.
async fn migrate(
    server: &OrcaServer,
    new: &std::path::Path,
    snap: &std::path::Path,
) -> (i32, String, String) {
    let args = [
        "store",
        "migrate",
        "--to",
        "etcd",
        "--config",
        new.to_str().unwrap(),
        "-f",
        snap.to_str().unwrap(),
    ];
    server.cli(ADMIN, &args).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_moves_to_etcd_and_loses_nothing() {
    let Some(env) = common::env() else { return };
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let mut server = OrcaServer::start(&env, "migrate").await;
    let c = server.admin();
    c.put::<_, Value>("/api/v1/secrets/K", &json!({ "value": "kept-sealed" }))
        .await
        .unwrap();
    let logger = env.image("logger:latest");
    let spec = |name: &str| {
        json!({ "services": [{ "name": name, "image": logger, "stop_grace_secs": 1,
                               "env": { "P": "${secrets.K}" } }] })
    };
    c.post::<_, Value>("/api/v1/deploy", &spec("a"))
        .await
        .unwrap();
    let before = common::wait_for(&c, "a", "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;
    let pin = ca_pin(&server).await;

    // Only an unscoped admin freezes the store: a deployer and a scoped
    // admin get 403, and the server goes on taking changes (the admin's
    // migration below is the positive control).
    let (scoped, _) = server.scoped_token("shop-admin", "admin", "shop").await;
    for client in [server.client(Some(DEPLOYER)), scoped] {
        match client
            .post::<_, Value>("/api/v1/store/freeze", &json!({}))
            .await
        {
            Err(api::client::ClientError::Api { status, .. }) => assert_eq!(status, 403),
            other => panic!("a freeze by a lesser token: {other:?}"),
        }
    }
    c.post::<_, Value>("/api/v1/services/a/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();

    // The new config: the same, with [store] on etcd.
    let config = server.dir.path().join("cluster.toml");
    let on_etcd = format!(
        "{}\n[store]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/m\"\n",
        std::fs::read_to_string(&config).unwrap(),
        etcd.url
    );
    let new = server.dir.path().join("new.toml");
    std::fs::write(&new, &on_etcd).unwrap();
    let snap = server.dir.path().join("migrate.snap");
    let (code, out, err) = migrate(&server, &new, &snap).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("moved") && out.contains("entries into etcd"),
        "{out}"
    );
    assert!(snap.exists());
    let keys = etcd.keys("/m/").await;
    assert!(keys.contains(&"/m/services/a".to_string()), "{keys:?}");

    // Frozen: a change is refused, as JSON, and nothing of it applies.
    match c.post::<_, Value>("/api/v1/deploy", &spec("late")).await {
        Err(api::client::ClientError::Api { status, message }) => {
            assert_eq!(status, 503, "{message}");
            assert!(message.contains("orca store migrate"), "{message}");
        }
        other => panic!("a deploy after the move: {other:?}"),
    }
    assert!(!etcd
        .keys("/m/")
        .await
        .contains(&"/m/services/late".to_string()));

    // Restarted on etcd: everything is there, and the replica adopted.
    server.terminate();
    std::fs::write(&config, &on_etcd).unwrap();
    server.spawn().await;
    let after = common::wait_for(&c, "a", "running", |s| s.running_replicas == 1).await;
    assert_eq!(after.instances[0].pid, before.instances[0].pid, "adopted");
    assert_eq!(after.version, before.version);
    assert_eq!(ca_pin(&server).await, pin, "the same cluster CA");
    assert!(etcd
        .keys("/m/cluster/")
        .await
        .contains(&"/m/cluster/ca".to_string()));
    // The secret opens: a new deploy names it and runs.
    c.post::<_, Value>("/api/v1/deploy", &spec("b"))
        .await
        .unwrap();
    common::wait_for(&c, "b", "running", |s| s.running_replicas == 1).await;

    // Into an etcd that holds anything: refused before the server is
    // frozen, which goes on taking changes.
    let (code, out, err) = migrate(&server, &new, &server.dir.path().join("again.snap")).await;
    assert_ne!(code, 0, "{out}");
    assert!(err.contains("not empty"), "{err}");
    c.post::<_, Value>("/api/v1/services/b/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
}
