//! Files, secret files, exec probes and devices on a real node: contents,
//! modes and owners as asked; a secret file that is nowhere on disk (the
//! same search finds a marker written to a volume); a secret changed is a
//! new version; a replica whose secrets a reboot took is replaced; an exec probe gates readiness and its timeout holds; a
//! device node only an admin may give, and only one `[volumes] devices`
//! allows.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use api::client::ApiClient;
use common::server::{Extra, OrcaServer, DEPLOYER};
use serde_json::{json, Value};

async fn exec(c: &ApiClient, service: &str, script: &str) -> (u32, String) {
    let body = json!({ "command": ["sh", "-c", script] });
    let r: Value = c
        .post(&format!("/api/v1/services/{service}/exec"), &body)
        .await
        .unwrap_or_else(|e| panic!("{script}: {e}"));
    (
        r["exit_code"].as_u64().unwrap() as u32,
        r["stdout"].as_str().unwrap().trim().to_string(),
    )
}

fn status_of<T: std::fmt::Debug>(r: Result<T, api::client::ClientError>) -> (u16, String) {
    match r {
        Err(api::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Files under `dirs` that hold `needle` (grep, every file as text).
fn files_holding(needle: &str, dirs: &[&std::path::Path]) -> Vec<String> {
    let out = Command::new("grep")
        .args([
            "-rlF",
            "--binary-files=text",
            "--no-messages",
            "--devices=skip",
            needle,
        ])
        .args(dirs)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn files_and_secret_files_and_exec_probes() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "files").await;
    let c = server.admin();
    let secret = format!("s3cret-{:08x}", common::rand_u32());
    let _: Value = c
        .put("/api/v1/secrets/DB_PASS", &json!({ "value": secret }))
        .await
        .unwrap();
    let spec = json!([
        { "name": "db", "image": env.image("stateful:v1"), "user": "1234:1234", "stop_grace_secs": 5,
          "volumes": ["data:/store"],
          "files": [
            { "target": "/etc/app.conf", "content": "a=1\n", "mode": "0640" },
            { "target": "/run/secrets/db_password", "secret": "DB_PASS" },
          ],
          "readiness": { "exec": ["sh", "-c", "test -s /run/secrets/db_password"], "interval_secs": 1 } },
        // An exec probe that outlives its timeout never passes.
        { "name": "slow", "image": env.image("stateful:v1"), "stop_grace_secs": 1,
          "readiness": { "exec": ["sleep", "5"], "timeout_secs": 1, "interval_secs": 1 } },
    ]);
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": spec }))
        .await
        .unwrap();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    common::wait_for(&c, "db", "ready by its exec probe", |s| {
        common::healthy(s) == 1
    })
    .await;

    let (code, seen) = exec(
        &c,
        "db",
        "stat -c '%u:%g %a' /etc/app.conf /run/secrets/db_password; cat /etc/app.conf /run/secrets/db_password",
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        seen,
        format!("1234:1234 640\n1234:1234 400\na=1\n{secret}"),
        "{seen}"
    );
    // The files are read-only to the replica.
    let (code, _) = exec(&c, "db", "echo x > /etc/app.conf").await;
    assert_ne!(code, 0);

    // Nowhere on disk: not in the data dir, not in containerd's root. The
    // control: the same search finds a marker written into a volume.
    let marker = format!("marker-{:08x}", common::rand_u32());
    assert_eq!(
        exec(&c, "db", &format!("echo {marker} > /store/marker"))
            .await
            .0,
        0
    );
    let data = server.dir.path().join("data");
    let containerd_root = env.socket.parent().unwrap().join("root");
    let dirs = [data.as_path(), containerd_root.as_path()];
    assert!(
        !files_holding(&marker, &dirs).is_empty(),
        "the search finds nothing at all"
    );
    let found = files_holding(&secret, &dirs);
    assert!(found.is_empty(), "the secret is on disk: {found:?}");

    // The slow probe: never ready, though its replica runs.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let slow = s.services.iter().find(|s| s.name == "slow").unwrap();
    assert_eq!(slow.instances.len(), 1);
    assert_ne!(slow.instances[0].healthy, Some(true), "{slow:?}");

    // A host reboot empties the secrets' tmpfs and ends the replica: it
    // cannot start again in place, so a new one takes its slot, given the
    // secret afresh.
    let secrets = format!("/run/orca/test-{}/secrets", server.namespace);
    let s: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
    let victim = s
        .services
        .iter()
        .find(|s| s.name == "db")
        .unwrap()
        .instances[0]
        .clone();
    assert!(Command::new("umount")
        .args(["-l", &secrets])
        .status()
        .unwrap()
        .success());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = common::wait_for(&c, "db", "a new replica in the rebooted one's slot", |s| {
        common::healthy(s) == 1 && s.instances.len() == 1 && s.instances[0].id != victim.id
    })
    .await;
    // Ids are service.slot.suffix.
    let slot = |id: &str| id.rsplit_once('.').unwrap().0.to_string();
    assert_eq!(slot(&s.instances[0].id), slot(&victim.id));
    assert_eq!(
        exec(&c, "db", "cat /run/secrets/db_password").await,
        (0, secret.clone())
    );

    // A changed secret is a new version, which reads the new value.
    let new_secret = format!("n3w-{:08x}", common::rand_u32());
    let _: Value = c
        .put("/api/v1/secrets/DB_PASS", &json!({ "value": new_secret }))
        .await
        .unwrap();
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": [spec[0].clone()] }))
        .await
        .unwrap();
    assert_eq!(r["versions"]["db"], 2, "{r}");
    common::wait_for(&c, "db", "version 2 ready", |s| {
        common::all_ready_on(s, 2, 1)
    })
    .await;
    let read = common::eventually(
        "the new secret",
        Duration::from_secs(30),
        async || match exec(&c, "db", "cat /run/secrets/db_password").await {
            (0, v) if v == new_secret => Ok(v),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(read, new_secret);
    for name in ["db", "slow"] {
        let _: Value = c.delete(&format!("/api/v1/services/{name}")).await.unwrap();
    }
    // The secrets' tmpfs is the node's for good; this test's goes with it.
    common::eventually(
        "the secret files released",
        Duration::from_secs(30),
        async || match std::fs::read_dir(&secrets).map(|d| d.count()) {
            Ok(0) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    let _ = Command::new("umount").args(["-l", &secrets]).status();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_are_the_admins_and_the_nodes_to_give() {
    let Some(env) = common::env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mknod = |name: &str, minor: &str| {
        let path = dir.path().join(name);
        let ok = Command::new("mknod")
            .arg(&path)
            .args(["c", "1", minor])
            .status()
            .unwrap();
        assert!(ok.success(), "mknod {}", path.display());
        path.display().to_string()
    };
    // Null-like devices of the test's own: one allowed, one not.
    let allowed = mknod("null0", "3");
    let refused = mknod("zero0", "5");
    let sections = format!(
        "[volumes]\ndevices = [\"{}/null*\"]\n",
        dir.path().display()
    );
    let server = OrcaServer::start_with(
        &env,
        "devices",
        Extra {
            sections: &sections,
            ..Default::default()
        },
    )
    .await;
    let admin = server.admin();
    let spec = |device: &str| {
        json!({ "services": [{ "name": "zigbee", "image": env.image("stateful:v1"),
                "devices": [device], "stop_grace_secs": 1 }] })
    };
    let deployer = server.client(Some(DEPLOYER));
    let (status, message) = status_of(
        deployer
            .post::<_, Value>("/api/v1/deploy", &spec(&allowed))
            .await,
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("devices") && message.contains("admin"),
        "{message}"
    );
    let (status, message) = status_of(
        admin
            .post::<_, Value>("/api/v1/deploy", &spec(&refused))
            .await,
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains(&refused) && message.contains("[volumes] devices"),
        "{message}"
    );
    // The control: the allowed one, by an admin, is there and usable.
    let _: Value = admin.post("/api/v1/deploy", &spec(&allowed)).await.unwrap();
    common::wait_for(&admin, "zigbee", "running", |s| s.running_replicas == 1).await;
    let (code, seen) = common::eventually(
        "the device in the replica",
        Duration::from_secs(30),
        async || {
            let r = exec(
                &admin,
                "zigbee",
                &format!("stat -c '%F %t:%T' {allowed} && echo hi > {allowed}"),
            )
            .await;
            if r.0 == 0 {
                Ok(r)
            } else {
                Err(format!("{r:?}"))
            }
        },
    )
    .await;
    assert_eq!((code, seen.as_str()), (0, "character special file 1:3"));
    // Another device of the host is not reachable in it.
    let (code, _) = exec(&admin, "zigbee", &format!("test -e {refused}")).await;
    assert_ne!(code, 0);
    let _: Value = admin.delete("/api/v1/services/zigbee").await.unwrap();
}
