//! `orca server --join-server` on one etcd: a second server joins with a
//! server join token, is given the secrets key over the cluster port's
//! TLS, follows the first, and sends a change on to it. A server that has
//! another secrets key is refused at the join, and so is one that brings
//! an agent's token; neither keeps running.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use api::client::ApiClient;
use common::etcd::Etcd;
use common::server::{Extra, OrcaServer, ADMIN, DEPLOYER};
use serde_json::{json, Value};

/// A new join token: for a server with `server`.
async fn join_token(a: &OrcaServer, server: bool) -> String {
    let mut args = vec!["cluster", "join-token", "--output", "json"];
    if server {
        args.push("--server");
    }
    let (code, out, err) = a.cli(ADMIN, &args).await;
    assert_eq!(code, 0, "{out}{err}");
    serde_json::from_str::<Value>(&out).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `a`'s config for another server `id`: its own data directory and
/// ports, no replicas of its own. The new API port, and the config.
fn config_for(a: &OrcaServer, id: &str) -> (u16, std::path::PathBuf) {
    let text = std::fs::read_to_string(a.dir.path().join("cluster.toml")).unwrap();
    let api = common::free_port();
    let data = a.dir.path().join(format!("data-{id}"));
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("api_listen") {
                format!("api_listen = \"127.0.0.1:{api}\"")
            } else if l.starts_with("grpc_listen") || l.starts_with("http_listen") {
                let key = l.split_whitespace().next().unwrap();
                format!("{key} = \"127.0.0.1:{}\"", common::free_port())
            } else if l.starts_with("data_dir") {
                format!("data_dir = \"{}\"", data.display())
            } else if l.starts_with("id = ") {
                format!("id = \"{id}\"\nworkloads = false")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let path = a.dir.path().join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    (api, path)
}

/// `a`'s cluster port.
fn cluster_port(a: &OrcaServer) -> String {
    let text = std::fs::read_to_string(a.dir.path().join("cluster.toml")).unwrap();
    let line = text.lines().find(|l| l.starts_with("grpc_listen")).unwrap();
    line.split('"').nth(1).unwrap().to_string()
}

fn server(
    config: &std::path::Path,
    join: &str,
    token: &str,
    log: &std::path::Path,
) -> std::process::Child {
    Command::new(common::orca_bin())
        .args(["server", "--config"])
        .arg(config)
        .args(["--join-server", join, "--token", token])
        .env("ORCA_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_joins_with_a_server_token_and_follows() {
    let Some(env) = common::env() else { return };
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let store = format!(
        "[store]\nbackend = \"etcd\"\nendpoints = [\"{}\"]\nprefix = \"/j\"\nleader_ttl_secs = 3\n",
        etcd.url
    );
    let a = OrcaServer::start_with(
        &env,
        "join",
        Extra {
            sections: &store,
            ..Extra::default()
        },
    )
    .await;
    let join = cluster_port(&a);
    // A server token carries the secrets key: an unscoped admin's alone
    // (the admin's below is the positive control).
    let (scoped, _) = a.scoped_token("shop-admin", "admin", "shop").await;
    for client in [a.client(Some(DEPLOYER)), scoped] {
        let asked = client
            .post::<_, Value>("/api/v1/cluster/join-tokens", &json!({ "server": true }))
            .await;
        match asked {
            Err(api::client::ClientError::Api { status, .. }) => assert_eq!(status, 403),
            other => panic!("a server token for a lesser token: {other:?}"),
        }
    }
    let server_token = join_token(&a, true).await;

    let (api, config) = config_for(&a, "second");
    let log = a.dir.path().join("second.log");
    let mut b = server(&config, &join, &server_token, &log);
    let bc = ApiClient::new(&format!("http://127.0.0.1:{api}"), Some(ADMIN.into()));
    common::eventually(
        "the second server's API",
        Duration::from_secs(60),
        async || {
            bc.get::<Value>("/api/v1/health")
                .await
                .map_err(|e| format!("{e}: {}", std::fs::read_to_string(&log).unwrap_or_default()))
        },
    )
    .await;
    assert_eq!(
        std::fs::read(a.dir.path().join("data-second/secrets.key")).unwrap(),
        std::fs::read(a.dir.path().join("data/secrets.key")).unwrap(),
        "the same secrets key"
    );
    // It follows the first, and sends a change on to it.
    common::eventually(
        "two servers, the first leading",
        Duration::from_secs(30),
        async || {
            let info: Value = bc
                .get("/api/v1/cluster/info")
                .await
                .map_err(|e| e.to_string())?;
            let servers = info["servers"].as_array().cloned().unwrap_or_default();
            let leads = |id: &str| servers.iter().any(|s| s["id"] == id && s["leader"] == true);
            if servers.len() == 2 && leads("node-1") && servers.iter().all(|s| s["healthy"] == true)
            {
                Ok(())
            } else {
                Err(format!("{info:#}"))
            }
        },
    )
    .await;
    let logger = env.image("logger:latest");
    bc.post::<_, Value>(
        "/api/v1/deploy",
        &json!({ "services": [{ "name": "through", "image": logger, "stop_grace_secs": 1 }] }),
    )
    .await
    .unwrap();
    common::wait_for(&a.admin(), "through", "running", |s| {
        s.running_replicas == 1
    })
    .await;

    // Another secrets key: refused at the join, and the server stops.
    let (_, other) = config_for(&a, "other-key");
    let dir = a.dir.path().join("data-other-key");
    std::fs::create_dir_all(&dir).unwrap();
    let key: [u8; 32] = std::array::from_fn(|i| i as u8);
    std::fs::write(dir.join("secrets.key"), key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        dir.join("secrets.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    let token = join_token(&a, true).await;
    let bad_log = a.dir.path().join("other-key.log");
    let status = server(&other, &join, &token, &bad_log).wait().unwrap();
    let said = std::fs::read_to_string(&bad_log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains("another secrets key"), "{said}");
    // An agent's token: refused, nothing kept.
    let (_, agent) = config_for(&a, "agent-token");
    let agent_log = a.dir.path().join("agent-token.log");
    let token = join_token(&a, false).await;
    let status = server(&agent, &join, &token, &agent_log).wait().unwrap();
    let said = std::fs::read_to_string(&agent_log).unwrap();
    assert!(!status.success(), "{said}");
    assert!(said.contains("it is an agent's"), "{said}");
    assert!(!a.dir.path().join("data-agent-token/secrets.key").exists());

    let _ = b.kill();
    let _ = b.wait();
}
