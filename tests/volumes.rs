//! Named volumes on a real node: the image's content copied in once with
//! its owners; data that survives a new version, a scale, a kill -9 of
//! orca and a stop and deploy; the default recreate strategy never running
//! two versions on one volume (containerd's tasks sampled every 50 ms);
//! per-replica volumes that keep their slot's data; tmpfs; volumes listed
//! and deleted only when unused; bind mounts only for an admin and only
//! under `[volumes] host_paths`.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use api::client::ApiClient;
use common::server::{Extra, OrcaServer, DEPLOYER};
use serde_json::{json, Value};

async fn exec(c: &ApiClient, service: &str, instance: Option<&str>, script: &str) -> String {
    let mut body = json!({ "command": ["sh", "-c", script] });
    if let Some(i) = instance {
        body["instance"] = json!(i);
    }
    let r: Value = c
        .post(&format!("/api/v1/services/{service}/exec"), &body)
        .await
        .unwrap_or_else(|e| panic!("{script} in {instance:?}: {e}"));
    assert_eq!(r["exit_code"], 0, "{script}: {r}");
    r["stdout"].as_str().unwrap().trim().to_string()
}

/// `script`'s output in a running replica, once the control plane has
/// one to run it in (just after a restart, it may know of none yet).
async fn exec_adopted(c: &ApiClient, service: &str, script: &str) -> String {
    let body = json!({ "command": ["sh", "-c", script] });
    common::eventually("an exec", Duration::from_secs(30), async || {
        match c
            .post::<_, Value>(&format!("/api/v1/services/{service}/exec"), &body)
            .await
        {
            Ok(r) if r["exit_code"] == 0 => Ok(r["stdout"].as_str().unwrap().trim().to_string()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

async fn deploy(c: &ApiClient, services: Value) -> Value {
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": services }))
        .await
        .unwrap();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    r
}

/// Waits until `name` runs `n` ready replicas, all of `version`.
async fn settled(c: &ApiClient, name: &str, version: u64, n: usize) -> api::status::ServiceStatus {
    common::wait_for(c, name, &format!("{n} ready on version {version}"), |s| {
        common::all_ready_on(s, version, n)
    })
    .await
}

async fn volumes(c: &ApiClient) -> Vec<Value> {
    let v: Value = c.get("/api/v1/volumes").await.unwrap();
    v["volumes"].as_array().unwrap().clone()
}

fn status_of<T: std::fmt::Debug>(r: Result<T, api::client::ClientError>) -> (u16, String) {
    match r {
        Err(api::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Versions whose tasks run now, by the containers' labels.
async fn running_versions(cri: &cri::Cri, service: &str) -> BTreeSet<String> {
    let list = cri
        .list_containers(&[cri::labels::filter(cri::labels::SERVICE, service)])
        .await
        .unwrap_or_default();
    list.into_iter()
        .filter(|c| c.task.as_ref().is_some_and(|t| t.state.is_alive()))
        .filter_map(|c| c.labels.get(cri::labels::VERSION).cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_named_volume_keeps_its_data_through_everything() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "volumes").await;
    let c = server.admin();
    let spec = |image: &str, replicas: u32| {
        json!([{ "name": "db", "image": env.image(image), "replicas": replicas, "port": 8080, "health": "/",
                 "volumes": ["pgdata:/data"], "stop_grace_secs": 5 }])
    };
    deploy(&c, spec("stateful:v1", 1)).await;
    settled(&c, "db", 1, 1).await;

    // The copy-up: the image's files with their owners, modes and links.
    let seen = exec(
        &c,
        "db",
        None,
        "cat /data/seed.txt; stat -c '%u:%g %a' /data /data/seed.txt /data/sub; readlink /data/link; cat /data/sub/deep.txt",
    )
    .await;
    assert_eq!(
        seen, "seeded\n70:71 755\n70:71 640\n70:71 750\nseed.txt\ndeep",
        "{seen}"
    );
    let on_host = server
        .dir
        .path()
        .join("data/volumes/default/pgdata/data/seed.txt");
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&on_host).unwrap();
        assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (70, 71, 0o640));
    }
    exec(
        &c,
        "db",
        None,
        "echo row1 >> /data/rows; echo changed > /data/seed.txt",
    )
    .await;

    // A new version: recreate by default, never both versions at once.
    let cri = server.cri().await;
    let sampler = {
        let cri = cri.clone();
        tokio::spawn(async move {
            let mut both = 0;
            let mut seen_v2 = false;
            for _ in 0..1200 {
                let running = running_versions(&cri, "db").await;
                if running.len() > 1 {
                    both += 1;
                }
                if running.contains("2") {
                    seen_v2 = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (both, seen_v2)
        })
    };
    deploy(&c, spec("stateful:v2", 1)).await;
    let (both, seen_v2) = sampler.await.unwrap();
    assert!(seen_v2, "version 2 never ran");
    assert_eq!(
        both, 0,
        "two versions ran on one volume at once in {both} samples"
    );
    settled(&c, "db", 2, 1).await;
    // The data is there, and the changed file was not copied over again.
    assert_eq!(
        exec(&c, "db", None, "cat /data/rows /data/seed.txt").await,
        "row1\nchanged"
    );

    // A scale: replicas of one version share the volume.
    deploy(&c, spec("stateful:v2", 2)).await;
    let s = settled(&c, "db", 2, 2).await;
    for i in &s.instances {
        assert_eq!(exec(&c, "db", Some(&i.id), "cat /data/rows").await, "row1");
    }
    deploy(&c, spec("stateful:v2", 1)).await;
    settled(&c, "db", 2, 1).await;

    // kill -9 of orca: the replica is adopted, the data stays.
    server.kill9();
    server.spawn().await;
    settled(&c, "db", 2, 1).await;
    assert_eq!(exec_adopted(&c, "db", "cat /data/rows").await, "row1");

    // Listed with its node, its size and its user.
    let list = volumes(&c).await;
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["name"], "pgdata");
    assert_eq!(list[0]["node"], "node-1");
    assert_eq!(list[0]["used_by"], json!(["db"]));
    assert!(list[0]["size_bytes"].as_u64().unwrap() > 0);

    // Deleting it while used: 409. Stopping never deletes it.
    let (status, message) = status_of(c.delete::<Value>("/api/v1/volumes/default/pgdata").await);
    assert_eq!(status, 409, "{message}");
    assert!(message.contains("used by db"), "{message}");
    let _: Value = c.delete("/api/v1/services/db").await.unwrap();
    common::eventually("db's replicas gone", Duration::from_secs(30), async || {
        let n = running_versions(&cri, "db").await.len();
        if n == 0 {
            Ok(())
        } else {
            Err(format!("{n} running"))
        }
    })
    .await;
    assert!(on_host.exists());
    assert_eq!(volumes(&c).await[0]["used_by"], json!([]));
    deploy(&c, spec("stateful:v2", 1)).await;
    common::wait_for(&c, "db", "a ready replica", |s| common::healthy(s) == 1).await;
    assert_eq!(exec_adopted(&c, "db", "cat /data/rows").await, "row1");

    // Deleted by name once unused; a scoped deployer of another project
    // may not.
    let _: Value = c.delete("/api/v1/services/db").await.unwrap();
    let deployer = server.client(Some(DEPLOYER));
    let (status, message) = status_of(
        deployer
            .delete::<Value>("/api/v1/volumes/default/nothing")
            .await,
    );
    assert_eq!(status, 404, "{message}");
    common::eventually(
        "the volume deleted",
        Duration::from_secs(30),
        async || match deployer
            .delete::<Value>("/api/v1/volumes/default/pgdata")
            .await
        {
            Ok(v) => Ok(v),
            Err(e) => Err(e.to_string()),
        },
    )
    .await;
    assert!(!on_host.exists());
    assert!(volumes(&c).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_replica_volumes_tmpfs_and_an_empty_volume_for_the_user() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "volslots").await;
    let c = server.admin();
    let spec = |version: &str| {
        json!([{ "name": "nats", "image": env.image("stateful:v1"), "replicas": 3, "port": 8080, "health": "/",
                 "env": { "V": version }, "user": "1234:1234", "stop_grace_secs": 5,
                 "volumes": [
                    { "source": "data", "target": "/slot", "per_replica": true },
                    { "type": "tmpfs", "target": "/cache", "size": "8Mi" },
                 ] }])
    };
    deploy(&c, spec("a")).await;
    let s = settled(&c, "nats", 1, 3).await;
    for i in &s.instances {
        // Nothing in the image at /slot: the volume is the user's.
        let owner = exec(
            &c,
            "nats",
            Some(&i.id),
            "stat -c '%u:%g' /slot; hostname > /slot/me",
        )
        .await;
        assert_eq!(owner, "1234:1234");
        let cache = exec(&c, "nats", Some(&i.id), "grep ' /cache ' /proc/mounts").await;
        assert!(
            cache.starts_with("tmpfs /cache tmpfs") && cache.contains("size=8192k"),
            "{cache}"
        );
    }
    // A restart into a new version: each slot finds its own file.
    deploy(&c, spec("b")).await;
    let s = settled(&c, "nats", 2, 3).await;
    for i in &s.instances {
        let me = exec(&c, "nats", Some(&i.id), "cat /slot/me").await;
        let slot = i.id.split('.').nth(1).unwrap();
        assert_eq!(me, format!("nats-{slot}"), "{}", i.id);
    }
    let names: BTreeSet<String> = volumes(&c)
        .await
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["data-0".into(), "data-1".into(), "data-2".into()])
    );
    let _: Value = c.delete("/api/v1/services/nats").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_mounts_need_an_admin_and_an_allowed_host_path() {
    let Some(env) = common::env() else { return };
    let allowed = tempfile::tempdir().unwrap();
    std::fs::write(allowed.path().join("media.txt"), "host file\n").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let sections = format!(
        "[volumes]\nhost_paths = [\"{}\"]\n",
        allowed.path().display()
    );
    let server = OrcaServer::start_with(
        &env,
        "volbind",
        Extra {
            sections: &sections,
            ..Default::default()
        },
    )
    .await;
    let admin = server.admin();
    let deployer = server.client(Some(DEPLOYER));
    let spec = |source: &std::path::Path| {
        json!({ "services": [{ "name": "media", "image": env.image("stateful:v1"), "port": 8080, "health": "/",
                 "volumes": [format!("{}:/media:ro", source.display())], "stop_grace_secs": 1 }] })
    };
    // A deployer: 403 naming the field.
    let (status, message) = status_of(
        deployer
            .post::<_, Value>("/api/v1/deploy", &spec(allowed.path()))
            .await,
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains("bind mount") && message.contains("admin"),
        "{message}"
    );
    // An admin, outside host_paths: 403 naming the path and the key.
    let (status, message) = status_of(
        admin
            .post::<_, Value>("/api/v1/deploy", &spec(elsewhere.path()))
            .await,
    );
    assert_eq!(status, 403, "{message}");
    assert!(
        message.contains(&elsewhere.path().display().to_string()) && message.contains("host_paths"),
        "{message}"
    );
    // The control: an admin, under host_paths: it runs and reads the file.
    let _: Value = admin
        .post("/api/v1/deploy", &spec(allowed.path()))
        .await
        .unwrap();
    settled(&admin, "media", 1, 1).await;
    assert_eq!(
        exec(&admin, "media", None, "cat /media/media.txt").await,
        "host file"
    );
    // Read-only as asked.
    let r: Value = admin
        .post(
            "/api/v1/services/media/exec",
            &json!({ "command": ["sh", "-c", "echo x > /media/new"] }),
        )
        .await
        .unwrap();
    assert_ne!(r["exit_code"], 0, "{r}");
    assert!(!allowed.path().join("new").exists());
    let _: Value = admin.delete("/api/v1/services/media").await.unwrap();
}
