//! What the benchmarks share: a release `orca server` of their own (API,
//! ingress, bridge and subnet), free ports, and wrk's numbers.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::client::ApiClient;
use serde_json::Value;

#[path = "../common/host.rs"]
pub mod host;

#[path = "docker.rs"]
pub mod docker;

#[allow(unused_imports)]
pub use host::{free_port, run};

pub const TOKEN: &str = "bench-admin-token-0123456789";

/// What wrk measured.
pub struct Wrk {
    pub rps: f64,
    pub p99_ms: f64,
    /// wrk's error lines, if any.
    pub errors: String,
}

/// The median of `f` over `runs`.
pub fn median(runs: &[Wrk], f: fn(&Wrk) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// `wrk -t2 -c32 -d8s --latency` on `url`, with one extra header.
pub fn wrk(url: &str, header: Option<&str>) -> Wrk {
    wrk_for(url, header, 8)
}

/// `wrk -t2 -c32 -d<secs>s --latency` on `url`, with one extra header:
/// as many requests as the server answers (a closed loop at saturation).
pub fn wrk_for(url: &str, header: Option<&str>, secs: u32) -> Wrk {
    wrk_run(url, header, secs, None, Via::Here)
}

/// Where wrk runs.
#[derive(Clone, Copy)]
enum Via<'a> {
    Here,
    /// Inside a network namespace (a lab's).
    Netns(&'a std::path::Path),
    /// With this file as its /etc/hosts (a mount namespace of its own), so
    /// that a URL can name a test domain (HTTPS sends it as SNI).
    Hosts(&'a std::path::Path),
}

/// [`wrk_for`] with `hosts` as wrk's /etc/hosts.
pub fn wrk_for_resolving(hosts: &std::path::Path, url: &str, secs: u32) -> Wrk {
    wrk_run(url, None, secs, None, Via::Hosts(hosts))
}

/// [`wrk_paced`] with `hosts` as wrk's /etc/hosts.
pub fn wrk_paced_resolving(hosts: &std::path::Path, url: &str, secs: u32, pause_ms: u32) -> Wrk {
    wrk_run(
        url,
        None,
        secs,
        Some(&pause_script(pause_ms)),
        Via::Hosts(hosts),
    )
}

/// [`wrk_for`] run inside the network namespace at `netns` (a lab's).
pub fn wrk_for_in(netns: &std::path::Path, url: &str, header: Option<&str>, secs: u32) -> Wrk {
    wrk_run(url, header, secs, None, Via::Netns(netns))
}

/// [`wrk_paced`] run inside the network namespace at `netns`.
pub fn wrk_paced_in(
    netns: &std::path::Path,
    url: &str,
    header: Option<&str>,
    secs: u32,
    pause_ms: u32,
) -> Wrk {
    wrk_run(
        url,
        header,
        secs,
        Some(&pause_script(pause_ms)),
        Via::Netns(netns),
    )
}

fn pause_script(pause_ms: u32) -> std::path::PathBuf {
    let script = std::env::temp_dir().join(format!("orca-bench-pause-{pause_ms}.lua"));
    std::fs::write(
        &script,
        format!("function delay()\n  return {pause_ms}\nend\n"),
    )
    .unwrap();
    script
}

/// Like [`wrk_for`], but each of the 32 connections waits `pause_ms`
/// between a response and its next request, so the load stays below
/// saturation and the latency is the server's, not the queue's.
pub fn wrk_paced(url: &str, header: Option<&str>, secs: u32, pause_ms: u32) -> Wrk {
    wrk_run(url, header, secs, Some(&pause_script(pause_ms)), Via::Here)
}

fn wrk_run(
    url: &str,
    header: Option<&str>,
    secs: u32,
    script: Option<&std::path::Path>,
    via: Via<'_>,
) -> Wrk {
    let mut cmd = match via {
        Via::Netns(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net={}", ns.display())).arg("wrk");
            c
        }
        Via::Hosts(hosts) => {
            let mut c = Command::new("unshare");
            c.args(["-m", "sh", "-c"])
                .arg(format!(
                    "mount --bind {} /etc/hosts && exec wrk \"$@\"",
                    hosts.display()
                ))
                .arg("wrk");
            c
        }
        Via::Here => Command::new("wrk"),
    };
    let duration = format!("-d{secs}s");
    cmd.args(["-t2", "-c32", &duration, "--latency"]);
    if let Some(h) = header {
        cmd.args(["-H", h]);
    }
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().expect("wrk (apt-get install wrk)");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let p99_ms = text
        .lines()
        .find(|l| l.trim_start().starts_with("99%"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(|v| {
            if let Some(ms) = v.strip_suffix("ms") {
                ms.parse().unwrap_or(0.0)
            } else if let Some(us) = v.strip_suffix("us") {
                us.parse::<f64>().unwrap_or(0.0) / 1000.0
            } else if let Some(s) = v.strip_suffix('s') {
                s.parse::<f64>().unwrap_or(0.0) * 1000.0
            } else {
                0.0
            }
        })
        .unwrap_or(0.0);
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    // A run with failed requests measures failures, not the server.
    println!(
        "wrk {url}: {rps:.0} req/s, p99 {p99_ms:.2} ms, errors: {}",
        if errors.is_empty() { "none" } else { &errors }
    );
    assert!(
        errors.is_empty() && rps > 0.0,
        "wrk {url} saw errors: {errors}\n{text}"
    );
    Wrk {
        rps,
        p99_ms,
        errors,
    }
}

/// A release server with its own data dir, namespace, bridge and ports.
pub struct BenchServer {
    pub child: Child,
    pub client: ApiClient,
    pub api_port: u16,
    pub proxy_port: u16,
    pub namespace: String,
    pub socket: String,
    bridge: String,
    _dir: tempfile::TempDir,
}

/// Where a bench server's log goes: the file `ORCA_BENCH_LOG` names
/// (appended), else nowhere.
fn bench_log() -> Stdio {
    match std::env::var("ORCA_BENCH_LOG") {
        Ok(path) => std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null()),
        Err(_) => Stdio::null(),
    }
}

impl BenchServer {
    /// Starts `target/release/orca server` and waits for its health endpoint.
    pub async fn start(name: &str, bridge: &str, subnet: &str) -> BenchServer {
        Self::start_with_proxy(name, bridge, subnet, "").await
    }

    /// [`BenchServer::start`] with `proxy_extra` lines in its [proxy].
    pub async fn start_with_proxy(
        name: &str,
        bridge: &str,
        subnet: &str,
        proxy_extra: &str,
    ) -> BenchServer {
        let socket = std::env::var("ORCA_TEST_CONTAINERD")
            .expect("ORCA_TEST_CONTAINERD (start the test environment)");
        let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/orca");
        let dir = tempfile::tempdir().unwrap();
        let (api_port, proxy_port, grpc_port) = (free_port(), free_port(), free_port());
        let namespace = format!("bench-{name}-{}", std::process::id());
        // ORCA_BENCH_PROXY_WORKERS sets the ingress's worker threads.
        let workers = std::env::var("ORCA_BENCH_PROXY_WORKERS")
            .map(|n| format!("workers = {n}\n"))
            .unwrap_or_default()
            + proxy_extra;
        std::fs::write(
            dir.path().join("cluster.toml"),
            format!(
                "[cluster]\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{api_port}\"\ngrpc_listen = \"127.0.0.1:{grpc_port}\"\n[containerd]\nsocket = \"{socket}\"\nnamespace = \"{namespace}\"\n[network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n[proxy]\nhttp_listen = \"127.0.0.1:{proxy_port}\"\n{workers}[[token]]\nname = \"admin\"\nvalue = \"{TOKEN}\"\nrole = \"admin\"\n",
                dir.path().join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(&bin)
            .args(["server", "--config"])
            .arg(dir.path().join("cluster.toml"))
            .stderr(bench_log())
            .spawn()
            .expect("target/release/orca (cargo build --release)");
        let client = ApiClient::new(&format!("http://127.0.0.1:{api_port}"), Some(TOKEN.into()));
        for _ in 0..400 {
            if client.get::<Value>("/api/v1/health").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        BenchServer {
            child,
            client,
            api_port,
            proxy_port,
            namespace,
            socket,
            bridge: bridge.to_string(),
            _dir: dir,
        }
    }

    /// The server's data_dir.
    pub fn data_dir(&self) -> std::path::PathBuf {
        self._dir.path().join("data")
    }

    /// Stops every service, then the server, and removes its bridge and tables.
    pub async fn stop(mut self) {
        let _ = self
            .client
            .post::<_, Value>("/api/v1/stop", &serde_json::json!({}))
            .await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let _ = self.child.kill();
        let _ = self.child.wait();
        host::remove_bridge(&self.bridge);
    }
}

/// A bench that panics leaves no server behind (its replicas stay, for
/// the environment's cleanup).
impl Drop for BenchServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deploys `n` replicas of the test web image as service `web` and waits
/// until they run; their ids and PIDs.
pub async fn deploy_web(client: &ApiClient, n: usize) -> Vec<(String, u32)> {
    let image = format!(
        "{}/orca-test/web:v1",
        std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
    );
    let _: Value = client
        .post(
            "/api/v1/deploy",
            &serde_json::json!({ "services": [{ "name": "web", "image": image, "replicas": n, "port": 8080, "stop_grace_secs": 1 }] }),
        )
        .await
        .unwrap();
    wait_running(client, n).await
}

/// Follows the events of `service`, each with the moment it arrived; the
/// follower ends when the task is aborted. Returns once it is listening.
pub async fn follow_events(
    client: ApiClient,
    service: &str,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::mpsc::UnboundedReceiver<(std::time::Instant, api::events::Event)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let path = format!("/api/v1/events?service={service}");
    let follower = tokio::spawn(async move {
        let mut reader = api::events::SseReader::default();
        let _ = client
            .stream(&path, |chunk| {
                for e in reader.push(chunk).unwrap() {
                    let _ = tx.send((std::time::Instant::now(), e));
                }
                std::ops::ControlFlow::Continue(())
            })
            .await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    (follower, rx)
}

/// SIGKILL to `pid` (a replica's process, which the bench had orca start).
pub fn sigkill(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

/// Waits until `n` replicas of the first service run; their ids and PIDs.
pub async fn wait_running(client: &ApiClient, n: usize) -> Vec<(String, u32)> {
    for _ in 0..600 {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        let running: Vec<(String, u32)> = s["services"][0]["instances"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| i["state"] == "running")
            .filter_map(|i| Some((i["id"].as_str()?.to_string(), i["pid"].as_u64()? as u32)))
            .collect();
        if running.len() == n {
            return running;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("replicas did not start");
}

/// Deploys `body` (one service) and waits until `n` replicas are healthy;
/// their addresses.
pub async fn deploy_healthy(client: &ApiClient, body: &Value, n: usize) -> Vec<String> {
    client
        .post::<_, Value>("/api/v1/deploy", body)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        assert!(
            std::time::Instant::now() < deadline,
            "replicas not healthy: {s}"
        );
        let inst = s["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if inst.len() == n && inst.iter().all(|i| i["healthy"] == true) {
            return inst
                .iter()
                .map(|i| i["ip"].as_str().unwrap().to_string())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts nginx (Debian's) in the foreground with `dir/nginx.conf`, which
/// the caller wrote, and gives it half a second to listen.
/// nginx in `dir` proxying to `ips` (port 8080) with keep-alive, as the
/// ingress does: `server` opens its server block (`listen ...;` and any
/// TLS lines), `headers` adds proxy headers to its location.
pub async fn nginx_proxy(
    dir: &std::path::Path,
    ips: &[String],
    server: &str,
    headers: &str,
) -> Child {
    std::fs::create_dir_all(dir).unwrap();
    let upstreams: String = ips.iter().map(|ip| format!("server {ip}:8080;")).collect();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; upstream web {{ {upstreams} keepalive 64; }}\n\
             server {{ {server}\n\
             location / {{ proxy_pass http://web; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;\n\
             {headers} }} }} }}\n",
            d = dir.display(),
        ),
    )
    .unwrap();
    start_nginx(dir).await
}

pub async fn start_nginx(dir: &std::path::Path) -> Child {
    let child = Command::new("nginx")
        .args([
            "-c",
            &dir.join("nginx.conf").display().to_string(),
            "-p",
            &dir.display().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    tokio::time::sleep(Duration::from_millis(500)).await;
    child
}
