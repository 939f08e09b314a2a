//! From `POST /deploy` of a `tls = "acme"` service to its first HTTPS 200
//! with a certificate pebble issued (the replica's start, the order, the
//! HTTP-01 challenge through the ingress, the certificate on the ingress),
//! against the same deploy over plain HTTP to its first 200, in one run.
//!
//! Needs the test environment, a release build and pebble
//! (`apt-get install pebble`): `cargo bench --bench acme`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common.rs"]
mod common;
#[path = "../common/pebble.rs"]
mod pebble;
#[path = "../common/tls.rs"]
#[allow(dead_code)]
mod tls;

const ROUNDS: usize = 5;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    assert!(pebble::installed(), "pebble (apt-get install pebble)");
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/kaweb:v1");
    let mut pebble = pebble::Pebble::prepare(common::free_port);
    let https_port = common::free_port();
    let extra = format!(
        "https_listen = \"127.0.0.1:{https_port}\"\n{}",
        pebble.acme_section()
    );
    let server =
        common::BenchServer::start_with_proxy("acme", "obencha0", "10.128.0.0/24", &extra).await;
    pebble.start(server.proxy_port, common::free_port());
    let deadline = Instant::now() + Duration::from_secs(30);
    let roots = loop {
        if let Some(r) = pebble.issuing_root() {
            break r;
        }
        assert!(
            Instant::now() < deadline,
            "pebble does not answer: {}",
            pebble.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let (mut https, mut http) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        for tls in [true, false] {
            let name = format!("{}{round}", if tls { "s" } else { "p" });
            let domain = format!("{name}.test");
            let mut spec = json!({ "name": name, "image": image, "port": 8080, "domain": domain, "stop_grace_secs": 1 });
            if tls {
                spec["tls"] = json!("acme");
            }
            let started = Instant::now();
            server
                .client
                .post::<_, Value>("/api/v1/deploy", &json!({ "services": [spec] }))
                .await
                .unwrap();
            loop {
                let ok = if tls {
                    tls::https_get(https_port, &domain, &roots)
                        .await
                        .is_ok_and(|(a, _)| a.starts_with("HTTP/1.1 200"))
                } else {
                    plain_ok(server.proxy_port, &domain).await
                };
                if ok {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "{domain} never answered"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            if tls {
                https.push(ms)
            } else {
                http.push(ms)
            }
        }
    }
    server.stop().await;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!("deploy to the first 200, {ROUNDS} services each, one run (pebble on loopback, kaweb replicas)");
    println!(
        "  tls = \"acme\", HTTPS with pebble's certificate: {https:.0?} ms, median {:.0} ms",
        median(&mut https.clone())
    );
    println!(
        "  plain HTTP, the same deploy:                   {http:.0?} ms, median {:.0} ms",
        median(&mut http.clone())
    );
}

/// A 200 for `host` over plain HTTP on the ingress.
async fn plain_ok(port: u16, host: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}
