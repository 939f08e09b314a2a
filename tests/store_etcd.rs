//! A server whose store is etcd (`[store] backend = "etcd"`), against a
//! real etcd: its state lives under the prefix and nowhere in the data
//! directory, a kill -9 of the server loses nothing and its replicas are
//! adopted, a write while etcd is down is refused whole and goes through
//! once it is back; a server waits, saying so, for an etcd that is down
//! at its start, and serves nothing before it answers; the wrong
//! certificates stop the start with a message that names the store.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::time::Duration;

use api::client::ClientError;
use common::etcd::Etcd;
use common::server::{Extra, OrcaServer};
use common::tls::TestPki;
use serde_json::{json, Value};

fn on_etcd(url: &str) -> String {
    format!("[store]\nbackend = \"etcd\"\nendpoints = [\"{url}\"]\nprefix = \"/t1\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_on_etcd_keeps_its_state_there() {
    let Some(env) = common::env() else { return };
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    let sections = on_etcd(&etcd.url);
    let mut server = OrcaServer::start_with(
        &env,
        "etcd",
        Extra {
            sections: &sections,
            ..Extra::default()
        },
    )
    .await;
    let c = server.admin();
    let logger = env.image("logger:latest");
    let spec = |name: &str| json!({ "services": [{ "name": name, "image": logger, "stop_grace_secs": 1 }] });
    c.post::<_, Value>("/api/v1/deploy", &spec("kept"))
        .await
        .unwrap();
    let before = common::wait_for(&c, "kept", "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;

    // In etcd, under the prefix; no sled database in the data directory.
    let keys = etcd.keys("/t1/").await;
    assert!(keys.contains(&"/t1/services/kept".to_string()), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("/t1/ipam/")), "{keys:?}");
    assert!(!server.dir.path().join("data/db").exists());

    // kill -9 of the server: back from etcd, the same replica adopted.
    server.kill9();
    server.spawn().await;
    let after = common::wait_for(&c, "kept", "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;
    assert_eq!(after.instances[0].pid, before.instances[0].pid);
    assert_eq!(after.version, before.version);

    // etcd down: a deploy is refused, as JSON, and nothing of it stays.
    etcd.kill9();
    match c.post::<_, Value>("/api/v1/deploy", &spec("later")).await {
        Err(ClientError::Api { status, message }) => {
            assert!(status >= 500, "{status} {message}");
            assert!(message.contains("store"), "{message}");
        }
        other => panic!("a deploy without its store: {other:?}"),
    }
    assert!(!common::is_listed(&c, "later").await);
    // Back: the same deploy goes through and is kept.
    etcd.spawn().await;
    common::eventually(
        "a deploy once etcd is back",
        Duration::from_secs(30),
        async || {
            c.post::<_, Value>("/api/v1/deploy", &spec("later"))
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    common::wait_for(&c, "later", "running", |s| s.running_replicas == 1).await;
    assert!(etcd
        .keys("/t1/services/")
        .await
        .contains(&"/t1/services/later".to_string()));
}

/// Runs `orca server` with `store` as its `[store]` and a minimal rest,
/// expecting it to stop: its stderr.
async fn start_fails(env: &common::TestEnv, store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[cluster]\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{}\"\n[containerd]\nsocket = \"{}\"\n{store}",
        dir.path().join("data").display(),
        common::free_port(),
        env.socket.display(),
    );
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(common::orca_bin())
            .args(["server", "--config"])
            .arg(path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_waits_for_an_etcd_that_is_down_and_starts_once_it_answers() {
    let Some(env) = common::env() else { return };
    let Some(mut etcd) = Etcd::start().await else {
        return;
    };
    etcd.kill9();
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = format!(
        "[cluster]\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{port}\"\ngrpc_listen = \"127.0.0.1:{}\"\n\
         [containerd]\nsocket = \"{}\"\n[node]\nworkloads = false\n[proxy]\nhttp_listen = \"127.0.0.1:{}\"\n\
         [[token]]\nname = \"admin\"\nvalue = \"{}\"\nrole = \"admin\"\n{}",
        dir.path().join("data").display(),
        common::free_port(),
        env.socket.display(),
        common::free_port(),
        common::server::ADMIN,
        on_etcd(&etcd.url),
    );
    let path = dir.path().join("cluster.toml");
    std::fs::write(&path, config).unwrap();
    let log = dir.path().join("server.log");
    let mut child = std::process::Command::new(common::orca_bin())
        .args(["server", "--config"])
        .arg(&path)
        .env("ORCA_LOG", "info")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let api = api::client::ApiClient::new(
        &format!("http://127.0.0.1:{port}"),
        Some(common::server::ADMIN.into()),
    );
    // It waits, says so, and serves nothing meanwhile.
    common::eventually(
        "the server says it waits",
        Duration::from_secs(20),
        async || {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            if said.contains("waiting for etcd") {
                Ok(())
            } else {
                Err(said)
            }
        },
    )
    .await;
    assert!(child.try_wait().unwrap().is_none(), "it stopped");
    assert!(api.get::<Value>("/api/v1/health").await.is_err());
    // etcd back: it starts, and takes a change.
    etcd.spawn().await;
    common::eventually("the server's API", Duration::from_secs(60), async || {
        api.get::<Value>("/api/v1/health")
            .await
            .map_err(|e| format!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()))
    })
    .await;
    api.put::<_, Value>("/api/v1/secrets/K", &json!({ "value": "v" }))
        .await
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();

    // A config that is wrong on its face is refused before any of it.
    let err = start_fails(&env, "[store]\nbackend = \"etcd\"\n").await;
    assert!(
        err.contains("[store] backend = \"etcd\" needs endpoints"),
        "{err}"
    );
    let err = start_fails(
        &env,
        "[store]\nbackend = \"etcd\"\nendpoints = [\"https://127.0.0.1:1\"]\n",
    )
    .await;
    assert!(err.contains("https endpoints need ca"), "{err}");
}

/// `[store]` for an etcd with TLS: its URL, and the CA, certificate and
/// key files.
fn on_tls_etcd(url: &str, ca: &Path, cert: &Path, key: &Path) -> String {
    format!(
        "{}ca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n",
        on_etcd(url),
        ca.display(),
        cert.display(),
        key.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_takes_only_the_right_certificates() {
    let Some(env) = common::env() else { return };
    let Some(etcd) = Etcd::start_tls().await else {
        return;
    };
    let ours = etcd.dir.path();
    let theirs = tempfile::tempdir().unwrap();
    TestPki::new("other").write(theirs.path());
    let at = |dir: &Path, f: &str| dir.join(f);
    // A CA that did not sign etcd's certificate; a client certificate of
    // another CA: each stops the start, naming the store.
    // (etcd closes the connection on a client certificate it does not
    // trust, so only the first says why.)
    for (ca, client, says) in [
        (theirs.path(), ours, "invalid peer certificate"),
        (ours, theirs.path(), "open the store on etcd"),
    ] {
        let store = on_tls_etcd(
            &etcd.url,
            &at(ca, "ca.pem"),
            &at(client, "client.pem"),
            &at(client, "client-key.pem"),
        );
        let err = start_fails(&env, &store).await;
        assert!(
            err.contains(&format!("open the store on etcd at {}", etcd.url)),
            "{err}"
        );
        assert!(err.contains(says), "{err}");
    }
    // The right ones: the server starts and a deploy is kept.
    let store = on_tls_etcd(
        &etcd.url,
        &at(ours, "ca.pem"),
        &at(ours, "client.pem"),
        &at(ours, "client-key.pem"),
    );
    let server = OrcaServer::start_with(
        &env,
        "etcdtls",
        Extra {
            sections: &store,
            ..Extra::default()
        },
    )
    .await;
    let c = server.admin();
    let spec = json!({ "services": [{ "name": "over-tls", "image": env.image("logger:latest"), "stop_grace_secs": 1 }] });
    c.post::<_, Value>("/api/v1/deploy", &spec).await.unwrap();
    common::wait_for(&c, "over-tls", "running", |s| s.running_replicas == 1).await;
}
