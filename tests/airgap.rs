//! Deploys that need no registry: an archive dropped in the import
//! directory deploys; `pull = "never"` refuses what is absent; with the
//! registry gone, a redeploy, a scale-up, a crash restart and a rollback
//! all run from the local image (and status says so), while a webhook push
//! fails cleanly; `:latest` is asked of the registry on every deploy.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::server::OrcaServer;
use common::webhook::{deliver, github, SECRET};
use serde_json::{json, Value};

/// A registry of this test's own on loopback, ended by its PID on drop.
struct PrivateRegistry {
    child: Option<Child>,
    addr: String,
    _dir: tempfile::TempDir,
}

impl PrivateRegistry {
    async fn start() -> PrivateRegistry {
        let dir = tempfile::tempdir().unwrap();
        let port = common::free_port();
        let addr = format!("127.0.0.1:{port}");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        common::http_get(port, "/v2/", Duration::from_secs(10))
            .await
            .expect("the private registry answers");
        PrivateRegistry {
            child: Some(child),
            addr,
            _dir: dir,
        }
    }

    /// Copies the test image at `layout:tag` to `repo:tag` here.
    fn push(&self, env: &common::TestEnv, layout: &str, tag: &str, repo: &str) -> String {
        let dest = format!("{}/{repo}:{tag}", self.addr);
        common::run(
            Command::new("skopeo")
                .args(["copy", "-q", "--dest-tls-verify=false"])
                .arg(format!("oci:{}:{tag}", env.images.join(layout).display()))
                .arg(format!("docker://{dest}")),
        );
        dest
    }

    /// Ends the registry (the one this test started).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRegistry {
    fn drop(&mut self) {
        self.stop();
    }
}

fn service(image: &str, extra: Value) -> Value {
    let mut s = json!({ "name": "app", "image": image, "port": 8080, "stop_grace_secs": 1,
        "readiness": { "path": "/healthz", "interval_secs": 1 } });
    for (k, v) in extra.as_object().unwrap() {
        s[k] = v.clone();
    }
    json!({ "services": [s] })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_archive_deploys_and_never_means_never() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "airgap").await;
    let c = server.admin();

    // `pull = "never"` and an absent image: a clear error, nothing started.
    let e = c
        .post::<_, Value>(
            "/api/v1/deploy",
            &service("orca-test/absent:v1", json!({ "pull": "never" })),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("not on this node") && e.contains("orca image import"),
        "{e}"
    );
    let s: Value = c.get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"], json!([]));

    // A `docker save` archive dropped in the import directory is imported
    // once, and deploys though no registry has it (the mirror would 404).
    let dropped = server.dir.path().join("data/images/web.tar");
    std::fs::copy(env.images.join("web-v1.docker.tar"), &dropped).unwrap();
    let cri = server.cri().await;
    common::eventually("the import", Duration::from_secs(30), async || {
        cri.image("orca-test/imported:docker")
            .await
            .map_err(|e| e.to_string())
    })
    .await;
    c.post::<_, Value>(
        "/api/v1/deploy",
        &service("orca-test/imported:docker", json!({})),
    )
    .await
    .unwrap();
    common::wait_for(&c, "app", "running the imported image", |s| {
        common::all_ready_on(s, 1, 1)
    })
    .await;
    assert!(server.log().matches("imported").count() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_outage_stops_nothing_the_node_has() {
    let Some(env) = common::env() else { return };
    let mut registry = PrivateRegistry::start().await;
    let v1 = registry.push(&env, "web-v1", "v1", "outage/web");
    let v2 = registry.push(&env, "web-v2", "v2", "outage/web");
    let server = OrcaServer::start(&env, "outage").await;
    let c = server.admin();
    let always = json!({ "pull": "always" });
    c.post::<_, Value>("/api/v1/deploy", &service(&v1, always.clone()))
        .await
        .unwrap();
    common::wait_for(&c, "app", "v1", |s| common::all_ready_on(s, 1, 1)).await;
    c.post::<_, Value>("/api/v1/deploy", &service(&v2, always.clone()))
        .await
        .unwrap();
    common::wait_for(&c, "app", "v2", |s| common::all_ready_on(s, 2, 1)).await;

    registry.stop();

    // A redeploy with pull = always runs the local image, and says so.
    let changed = json!({ "pull": "always", "env": { "RELEASE": "3" } });
    c.post::<_, Value>("/api/v1/deploy", &service(&v2, changed))
        .await
        .unwrap();
    let s = common::wait_for(&c, "app", "v3 from the local image", |s| {
        common::all_ready_on(s, 3, 1)
    })
    .await;
    let message = s.message.clone().unwrap_or_default();
    assert!(
        message.contains("registry unreachable") && message.contains("sha256:"),
        "{message}"
    );
    // A scale-up.
    c.post::<_, Value>("/api/v1/services/app/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
    let s = common::wait_for(&c, "app", "2 replicas", |s| common::all_ready_on(s, 3, 2)).await;
    // A crash restart.
    let pid = s.instances[0].pid.unwrap();
    // The replica's PID, which this test had orca start.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    common::wait_for(&c, "app", "restarted", |s| {
        s.instances
            .iter()
            .any(|i| i.restarts == 1 && i.state == api::status::InstanceState::Running)
    })
    .await;
    // A rollback to version 1.
    c.post::<_, Value>("/api/v1/services/app/rollback", &json!({ "version": 1 }))
        .await
        .unwrap();
    let s = common::wait_for(&c, "app", "back on v1's image", |s| {
        common::all_ready_on(s, 4, 2)
    })
    .await;
    assert_eq!(s.image, v1);

    // A push webhook asks the registry, whatever `pull` says: with it down
    // the redeploy fails, says why, and what runs is untouched.
    let hook: Value = c
        .post(
            "/api/v1/webhooks",
            &json!({ "repo": "acme/app", "service": "app", "branch": "main", "secret": SECRET }),
        )
        .await
        .unwrap();
    let push =
        json!({ "ref": "refs/heads/main", "repository": { "full_name": "acme/app" } }).to_string();
    let (status, body) = deliver(&server.addr(), &github("push", &push, Some("o-1")), &push).await;
    assert_eq!(status, 202, "{body}");
    common::eventually("the push's outcome", Duration::from_secs(30), async || {
        let hooks: Value = c.get("/api/v1/webhooks").await.unwrap();
        let result = hooks["webhooks"][0]["invocations"][0]["result"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if result.starts_with("redeploy failed") && result.contains("registry unreachable") {
            Ok(())
        } else {
            Err(result)
        }
    })
    .await;
    assert_eq!(hook["service"], "app");
    common::wait_for(&c, "app", "untouched", |s| common::all_ready_on(s, 4, 2)).await;

    // An image the node never had cannot come from a registry that is
    // down: a clear error, and what runs is untouched.
    let e = c
        .post::<_, Value>(
            "/api/v1/deploy",
            &service(&format!("{}/outage/web:v9", registry.addr), json!({})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("registry unreachable"), "{e}");
    common::wait_for(&c, "app", "untouched", |s| common::all_ready_on(s, 4, 2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_asked_of_the_registry_on_every_deploy() {
    let Some(env) = common::env() else { return };
    let proxy = common::counting::start(&env.registry).await;
    let server = OrcaServer::start(&env, "latest").await;
    let c = server.admin();
    let latest = format!("{}/orca-test/logger:latest", proxy.addr);
    let pinned = format!("{}/orca-test/web:v1", proxy.addr);
    let spec = json!({ "services": [
        { "name": "log", "image": latest, "stop_grace_secs": 1 },
        { "name": "web", "image": pinned, "stop_grace_secs": 1 }
    ] });
    for _ in 0..2 {
        c.post::<_, Value>("/api/v1/deploy", &spec).await.unwrap();
    }
    let manifests = |repo: &str| {
        proxy.count(|k| k.starts_with("GET ") && k.contains(repo) && k.contains("/manifests/"))
    };
    // `:latest` twice; a pinned tag once, then from containerd.
    assert!(manifests("logger") >= 2, "{:?}", proxy.all());
    assert_eq!(manifests("orca-test/web"), 1, "{:?}", proxy.all());
}
