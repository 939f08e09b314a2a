//! The control plane measured side by side in one run:
//!
//! - deploy of 1 service × 10 and × 30 replicas, from the POST until every
//!   replica answers HTTP on its own address, against 10 and 30 parallel
//!   `ctr run -d` of the same warm image on the same containerd, timed the
//!   same way: until each answers HTTP (on the host's network, as ctr
//!   makes none);
//! - `/api/v1/health` and `/api/v1/status` under wrk on loopback with 500
//!   services in the store;
//! - the server's resident memory idle with 0 and with 500 services.
//!
//! Needs the test environment (`source tests/env.sh && orca_env_start`), a
//! release build (`cargo build --release`) and wrk (`apt-get install wrk`):
//! `cargo bench --bench control_plane`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use api::client::ApiClient;
use serde_json::{json, Value};

#[path = "common.rs"]
mod common;

use common::host::ctr;
use common::{run, wrk, BenchServer};

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// True once `ip:8080/` answers 200.
async fn answers(ip: &str) -> bool {
    answers_at(ip, 8080).await
}

/// True once `ip:port/` answers 200.
async fn answers_at(ip: &str, port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(Ok(mut s)) = tokio::time::timeout(
        Duration::from_millis(200),
        tokio::net::TcpStream::connect((ip, port)),
    )
    .await
    else {
        return false;
    };
    if s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.0 200") || buf.starts_with(b"HTTP/1.1 200")
}

/// Waits until `n` replicas of `name` run and every one answers HTTP.
async fn wait_serving(client: &ApiClient, name: &str, n: usize) {
    let mut ok = std::collections::HashSet::new();
    let give_up = Instant::now() + Duration::from_secs(120);
    loop {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        assert!(
            Instant::now() < give_up,
            "{} of {n} replicas of {name} answer HTTP after 2 minutes: {s}",
            ok.len()
        );
        let ips: Vec<String> = s["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .and_then(|x| x["instances"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|i| i["state"] == "running")
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect();
        let pending: Vec<&String> = ips.iter().filter(|ip| !ok.contains(*ip)).collect();
        let results = futures::future::join_all(pending.iter().map(|ip| answers(ip))).await;
        for (ip, up) in pending.into_iter().zip(results) {
            if up {
                ok.insert(ip.clone());
            }
        }
        if ok.len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let server = BenchServer::start("cp", "obench0", "10.123.0.0/24").await;
    let socket = server.socket.clone();
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/web:v1");
    let client = server.client.clone();
    let port = server.api_port;
    let ns = server.namespace.clone();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_empty = rss_kib(server.child.id());

    // Warm the image on both sides.
    client
        .post::<_, Value>(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "warm", "image": image, "replicas": 0 }] }),
        )
        .await
        .unwrap();
    let ctr_ns = format!("{ns}-ctr");
    run(&mut ctr(
        &socket,
        &ctr_ns,
        &["images", "pull", "--plain-http", &image],
    ));

    let mut deploys = Vec::new();
    for n in [10u32, 30] {
        let name = format!("svc{n}");
        let t = Instant::now();
        client
            .post::<_, Value>(
                "/api/v1/deploy",
                &json!({ "services": [{ "name": name, "image": image, "replicas": n, "stop_grace_secs": 1 }] }),
            )
            .await
            .unwrap();
        wait_serving(&client, &name, n as usize).await;
        let orca = t.elapsed();

        // ctr timed the same way: until every container answers HTTP. ctr
        // has no network of its own to give them, so they share the host's
        // (less work than orca's namespace, veth and address each), each on
        // its own loopback port.
        // Distinct ports: each held until all are chosen.
        let held: Vec<std::net::TcpListener> = (0..n)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let ports: Vec<u16> = held
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        drop(held);
        let t = Instant::now();
        let children: Vec<_> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let env = format!("PORT={port}");
                let id = format!("c{n}-{i}");
                ctr(
                    &socket,
                    &ctr_ns,
                    &["run", "-d", "--net-host", "--env", &env, &image, &id],
                )
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        for mut c in children {
            c.wait().unwrap();
        }
        let mut serving = std::collections::HashSet::new();
        let give_up = Instant::now() + Duration::from_secs(120);
        while serving.len() < ports.len() {
            assert!(
                Instant::now() < give_up,
                "{} of {n} ctr containers answer HTTP after 2 minutes",
                serving.len()
            );
            for port in &ports {
                if !serving.contains(port) && answers_at("127.0.0.1", *port).await {
                    serving.insert(*port);
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ctr_time = t.elapsed();
        deploys.push((n, orca, ctr_time));
        client
            .delete::<Value>(&format!("/api/v1/services/{name}"))
            .await
            .unwrap();
    }
    // ctr's containers: kill and remove (they are ours, by name).
    for (n, _, _) in &deploys {
        for i in 0..*n {
            let id = format!("c{n}-{i}");
            let _ = ctr(&socket, &ctr_ns, &["tasks", "kill", "-s", "KILL", &id]).output();
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (n, _, _) in &deploys {
        for i in 0..*n {
            let id = format!("c{n}-{i}");
            let _ = ctr(&socket, &ctr_ns, &["tasks", "delete", &id]).output();
            let _ = ctr(&socket, &ctr_ns, &["containers", "delete", &id]).output();
        }
    }
    // runc leaves ctr's namespace-level cgroup directory behind, empty.
    cri::cgroup::Cgroups::default().remove(&format!("/{ctr_ns}"));

    // 500 services in the store.
    for batch in 0..5 {
        let services: Vec<Value> = (0..100)
            .map(|i| json!({ "name": format!("s{}", batch * 100 + i), "project": format!("p{}", i % 10), "image": image, "replicas": 0 }))
            .collect();
        let r: Value = client
            .post("/api/v1/deploy", &json!({ "services": services }))
            .await
            .unwrap();
        assert_eq!(r["deployed"].as_array().unwrap().len(), 100, "{r}");
    }
    // Let the removals of the deploy benchmark finish.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_500 = rss_kib(server.child.id());
    let health = wrk(&format!("http://127.0.0.1:{port}/api/v1/health"), None);
    let status = wrk(
        &format!("http://127.0.0.1:{port}/api/v1/status"),
        Some(&format!("Authorization: Bearer {}", common::TOKEN)),
    );

    server.stop().await;

    println!("control plane, one run, same containerd ({image})");
    for (n, orca, ctr_time) in deploys {
        println!(
            "deploy 1 service x {n:>2} until every replica answers HTTP: orca {:>7.0} ms   {n} parallel ctr run -d (host network) until each answers HTTP {:>7.0} ms   ratio {:.2}",
            orca.as_secs_f64() * 1000.0,
            ctr_time.as_secs_f64() * 1000.0,
            orca.as_secs_f64() / ctr_time.as_secs_f64()
        );
    }
    println!(
        "GET /api/v1/health, 500 services: {:>8.0} req/s  p99 {:.2} ms",
        health.rps, health.p99_ms
    );
    println!(
        "GET /api/v1/status, 500 services: {:>8.0} req/s  p99 {:.2} ms",
        status.rps, status.p99_ms
    );
    println!(
        "RSS idle: {} KiB with 0 services, {} KiB with 500",
        rss_empty, rss_500
    );
}
