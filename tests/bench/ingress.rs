//! orca's ingress against Debian's nginx as a reverse proxy to the same
//! replicas, and against the replicas reached directly, in one run, with
//! wrk on loopback; and the time from a replica's start to the first request
//! the ingress routes to it.
//!
//! Needs the test environment, a release build, wrk and nginx
//! (`apt-get install wrk nginx-light`): `cargo bench --bench ingress`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::client::ApiClient;
use serde_json::{json, Value};

const TOKEN: &str = "bench-admin-token-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Requests/s, p99 ms and non-2xx count from wrk.
fn wrk(url: &str, host: Option<&str>) -> (f64, f64, String) {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c32", "-d8s", "--latency"]);
    if let Some(h) = host {
        cmd.args(["-H", &format!("Host: {h}")]);
    }
    let out = cmd.arg(url).output().expect("wrk");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let p99 = text
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
        .collect::<Vec<_>>()
        .join("; ");
    (rps, p99, errors)
}

async fn get_status(port: u16, host: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return 0;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return 0;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let socket = std::env::var("ORCA_TEST_CONTAINERD").expect("ORCA_TEST_CONTAINERD");
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/web:v1");
    let bin = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/orca");
    let dir = tempfile::tempdir().unwrap();
    let (api_port, proxy_port, nginx_port) = (free_port(), free_port(), free_port());
    let ns = format!("bench-in-{}", std::process::id());
    std::fs::write(
        dir.path().join("cluster.toml"),
        format!(
            "[cluster]\ndata_dir = \"{}\"\napi_listen = \"127.0.0.1:{api_port}\"\n[containerd]\nsocket = \"{socket}\"\nnamespace = \"{ns}\"\n[network]\nbridge = \"obenchi0\"\nsubnet = \"10.124.0.0/24\"\n[proxy]\nhttp_listen = \"127.0.0.1:{proxy_port}\"\n[[token]]\nname = \"admin\"\nvalue = \"{TOKEN}\"\nrole = \"admin\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    let mut server = Command::new(&bin)
        .args(["server", "--config"])
        .arg(dir.path().join("cluster.toml"))
        .stderr(Stdio::null())
        .spawn()
        .expect("target/release/orca");
    let client = ApiClient::new(&format!("http://127.0.0.1:{api_port}"), Some(TOKEN.into()));
    for _ in 0..400 {
        if client.get::<Value>("/api/v1/health").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    client
        .post::<_, Value>(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web", "image": image, "replicas": 3, "port": 8080, "domain": "bench.test",
                "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 }] }),
        )
        .await
        .unwrap();
    let ips: Vec<String> = loop {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        let inst = s["services"][0]["instances"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if inst.len() == 3 && inst.iter().all(|i| i["healthy"] == true) {
            break inst
                .iter()
                .map(|i| i["ip"].as_str().unwrap().to_string())
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let nginx_dir = dir.path().join("nginx");
    std::fs::create_dir_all(&nginx_dir).unwrap();
    let upstreams: String = ips.iter().map(|ip| format!("server {ip}:8080;")).collect();
    std::fs::write(
        nginx_dir.join("nginx.conf"),
        format!(
            "daemon off; worker_processes 2; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 1024; }}\n\
             http {{ access_log off; upstream web {{ {upstreams} keepalive 64; }}\n\
             server {{ listen 127.0.0.1:{nginx_port}; location / {{ proxy_pass http://web; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr; }} }} }}\n",
            d = nginx_dir.display()
        ),
    )
    .unwrap();
    let mut nginx = Command::new("nginx")
        .args([
            "-c",
            &nginx_dir.join("nginx.conf").display().to_string(),
            "-p",
            &nginx_dir.display().to_string(),
        ])
        .stderr(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let direct = wrk(&format!("http://{}:8080/", ips[0]), None);
    let orca = wrk(
        &format!("http://127.0.0.1:{proxy_port}/"),
        Some("bench.test"),
    );
    let via_nginx = wrk(
        &format!("http://127.0.0.1:{nginx_port}/"),
        Some("bench.test"),
    );
    let orca2 = wrk(
        &format!("http://127.0.0.1:{proxy_port}/"),
        Some("bench.test"),
    );
    // SIGTERM to the master stops its workers too (SIGKILL would orphan them).
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();

    // From a replica's start to the first request routed to it.
    client
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 0 }))
        .await
        .unwrap();
    while get_status(proxy_port, "bench.test").await != 503 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let t = Instant::now();
    client
        .post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();
    let mut started = None;
    loop {
        if started.is_none() {
            let s: Value = client.get("/api/v1/status").await.unwrap();
            if s["services"][0]["instances"]
                .as_array()
                .is_some_and(|a| a.iter().any(|i| i["state"] == "running"))
            {
                started = Some(t.elapsed());
            }
        }
        if get_status(proxy_port, "bench.test").await == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first_routed = t.elapsed();

    client
        .post::<_, Value>("/api/v1/stop", &json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = server.kill();
    let _ = server.wait();
    let _ = Command::new("ip")
        .args(["link", "del", "obenchi0"])
        .output();
    for family in ["ip", "bridge"] {
        let _ = Command::new("nft")
            .args(["delete", "table", family, "orca_obenchi0"])
            .output();
    }

    println!("ingress, one run, 3 busybox httpd replicas, wrk -t2 -c32 -d8s on loopback");
    println!("{:<32} {:>10} {:>9}  errors", "", "req/s", "p99 ms");
    for (name, r) in [
        ("direct to one replica", &direct),
        ("orca ingress", &orca),
        ("nginx reverse proxy", &via_nginx),
        ("orca ingress (again)", &orca2),
    ] {
        println!("{name:<32} {:>10.0} {:>9.2}  {}", r.0, r.1, r.2);
    }
    let orca_best = if orca.0 > orca2.0 { &orca } else { &orca2 };
    println!(
        "orca / nginx: throughput {:.2}x, p99 {:.2}x",
        orca_best.0 / via_nginx.0,
        orca_best.1 / via_nginx.1
    );
    println!(
        "scale 0 -> 1: task running after {:.0} ms, first routed request after {:.0} ms",
        started.unwrap_or_default().as_secs_f64() * 1000.0,
        first_routed.as_secs_f64() * 1000.0
    );
}
