//! Shared setup of the integration tests: the real containerd, registry and
//! test images that `tests/env.sh` provides (see `.ci/run`).
//!
//! Under `CI=true` a missing containerd or registry fails the test; outside
//! CI a test skips with a loud message.

#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

pub mod browser;
pub mod cluster;
pub mod counting;
pub mod etcd;
pub mod events;
pub mod host;
pub mod http;
pub mod inventory;
pub mod lab;
pub mod load;
pub mod pebble;
pub mod server;
pub mod tls;
pub mod webhook;

#[allow(unused_imports)]
pub use host::{free_port, free_port_below, run};

use std::path::PathBuf;
use std::time::Duration;

use cri::{ConnectOptions, Cri};

/// What the environment provides.
pub struct TestEnv {
    pub socket: PathBuf,
    pub registry: String,
    pub images: PathBuf,
}

impl TestEnv {
    /// `registry/orca-test/<name>`.
    pub fn image(&self, name: &str) -> String {
        format!("{}/orca-test/{name}", self.registry)
    }
}

/// Whether this runs under CI, where a missing component fails a test.
pub fn in_ci() -> bool {
    std::env::var("CI")
        .map(|v| v == "true" || v == "1")
        .unwrap_or(false)
}

/// The environment, or `None` (outside CI only) when it is not there.
pub fn env() -> Option<TestEnv> {
    let socket = std::env::var("ORCA_TEST_CONTAINERD")
        .ok()
        .map(PathBuf::from);
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let images = std::env::var("ORCA_TEST_IMAGES")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/test-images"));
    let problem = match &socket {
        None => Some("ORCA_TEST_CONTAINERD is not set".to_string()),
        Some(s) if !s.exists() => Some(format!("no containerd socket at {}", s.display())),
        Some(_) if !images.join("web-v1.oci.tar").exists() => Some(format!(
            "no test images in {} (run tests/images/build.sh)",
            images.display()
        )),
        Some(_) => None,
    };
    if let Some(problem) = problem {
        if in_ci() {
            panic!("integration test environment missing under CI: {problem}");
        }
        eprintln!("SKIPPING integration test: {problem}; run `source tests/env.sh && orca_env_start` or `bash .ci/run`");
        return None;
    }
    Some(TestEnv {
        socket: socket.unwrap_or_default(),
        registry,
        images,
    })
}

/// A namespace of its own for one test.
pub fn namespace(test: &str) -> String {
    format!(
        "t-{test}-{}-{:06x}",
        std::process::id(),
        rand_u32() & 0xff_ffff
    )
}

pub fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish() as u32
}

/// A client in `ns` with docker.io mirrored to the test registry.
pub async fn connect(env: &TestEnv, ns: &str) -> Cri {
    let mut options = ConnectOptions::new(&env.socket, ns);
    options
        .registry
        .mirrors
        .insert("docker.io".into(), format!("http://{}", env.registry));
    Cri::connect(options).await.expect("connect to containerd")
}

/// Removes every container and image of the client's namespace.
pub async fn cleanup(cri: &Cri) {
    if let Ok(list) = cri.list_containers(&[]).await {
        for c in list {
            if let Err(e) = cri.remove_container(&c.id).await {
                eprintln!("cleanup of {} failed: {e}", c.id);
            }
        }
    }
}

/// Ends, by PID, the shims containerd at `socket` started for namespace
/// `ns` that outlived their containers. A server killed while containerd
/// was still creating a task can leave one: the container is deleted
/// before the task lands, and nothing is left to tell the shim to exit.
pub fn kill_orphan_shims(socket: &std::path::Path, ns: &str) {
    let socket = socket.to_string_lossy();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let flag = |name: &str| {
            args.windows(2)
                .find(|w| w[0] == name.as_bytes())
                .map(|w| String::from_utf8_lossy(w[1]).into_owned())
        };
        let is_shim = args
            .first()
            .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"));
        if is_shim
            && flag("-namespace").as_deref() == Some(ns)
            && flag("-address").as_deref() == Some(&*socket)
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// GET `path` on 127.0.0.1:`port`, retrying until `timeout`; the body.
pub async fn http_get(port: u16, path: &str, timeout: Duration) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let req = format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n");
            if s.write_all(req.as_bytes()).await.is_ok() {
                let mut buf = Vec::new();
                if s.read_to_end(&mut buf).await.is_ok() {
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some((_, body)) = text.split_once("\r\n\r\n") {
                        if text.starts_with("HTTP/1.") && text.contains(" 200 ") {
                            return Some(body.to_string());
                        }
                    }
                }
            }
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The orca binary built for these tests (it serves as the log shim).
pub fn orca_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_orca"))
}

/// `promtool check metrics` accepts the text (promtool comes with Debian's
/// prometheus package, which .ci/run installs).
pub fn promtool_clean(metrics: &str) {
    use std::io::Write;
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if in_ci() => {
            panic!("promtool missing under CI: {e}")
        }
        Err(e) => {
            eprintln!("SKIPPING the promtool check: {e}");
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Calls `probe` every 100 ms until it gives `Ok`, and returns that; past
/// `timeout`, fails saying `what` it waited for and the last `Err`.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, String>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last: {last}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether status lists a service `name` (deployed, in any state).
pub async fn is_listed(client: &api::client::ApiClient, name: &str) -> bool {
    let s: api::status::StatusResponse = client.get("/api/v1/status").await.unwrap();
    s.services.iter().any(|s| s.name == name)
}

/// Polls status until service `name` satisfies `f` (60 s at most, then
/// fails saying `what` it waited for and the last status).
pub async fn wait_for(
    client: &api::client::ApiClient,
    name: &str,
    what: &str,
    f: impl Fn(&api::status::ServiceStatus) -> bool,
) -> api::status::ServiceStatus {
    eventually(
        &format!("{name}: {what}"),
        Duration::from_secs(60),
        async || {
            let s: api::status::StatusResponse = client.get("/api/v1/status").await.unwrap();
            match s.services.into_iter().find(|s| s.name == name) {
                Some(svc) if f(&svc) => Ok(svc),
                other => Err(format!("{other:#?}")),
            }
        },
    )
    .await
}

/// Replicas of `s` whose health check passes.
pub fn healthy(s: &api::status::ServiceStatus) -> usize {
    s.instances
        .iter()
        .filter(|i| i.healthy == Some(true))
        .count()
}

/// Whether `s` runs exactly `n` replicas, all of `version` and all ready.
pub fn all_ready_on(s: &api::status::ServiceStatus, version: u64, n: usize) -> bool {
    s.version == version
        && s.instances.len() == n
        && s.instances
            .iter()
            .all(|i| i.version == version && i.healthy == Some(true))
}

/// Deploys `services` (a JSON list), asserts each was deployed, and waits
/// until every replica runs, is healthy and has an address.
pub async fn deploy_all_ready(
    client: &api::client::ApiClient,
    services: serde_json::Value,
) -> api::status::StatusResponse {
    let count = services.as_array().map_or(0, Vec::len);
    let r: serde_json::Value = client
        .post(
            "/api/v1/deploy",
            &serde_json::json!({ "services": services }),
        )
        .await
        .unwrap();
    assert_eq!(r["deployed"].as_array().map_or(0, Vec::len), count, "{r}");
    wait_for_all(client, "every replica healthy with an address", |s| {
        s.instances.len() == s.replicas as usize
            && s.instances
                .iter()
                .all(|i| i.ip.is_some() && i.healthy == Some(true))
    })
    .await
}

/// Polls status until every service satisfies `f` (60 s at most).
pub async fn wait_for_all(
    client: &api::client::ApiClient,
    what: &str,
    f: impl Fn(&api::status::ServiceStatus) -> bool,
) -> api::status::StatusResponse {
    eventually(what, Duration::from_secs(60), async || {
        let s: api::status::StatusResponse = client.get("/api/v1/status").await.unwrap();
        if s.services.iter().all(&f) {
            Ok(s)
        } else {
            Err(format!("{s:#?}"))
        }
    })
    .await
}

/// Points `dest` (a registry reference) at the image of the test layout
/// `layout` under `tag`, as pushing a moved tag would.
#[allow(dead_code)]
pub fn skopeo_tag(env: &TestEnv, layout: &str, tag: &str, dest: &str) {
    run(std::process::Command::new("skopeo")
        .args(["copy", "-q", "--dest-tls-verify=false"])
        .arg(format!("oci:{}:{tag}", env.images.join(layout).display()))
        .arg(format!("docker://{dest}")));
}
