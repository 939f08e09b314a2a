//! HTTPS: orca's ingress terminating TLS (its `tls = { cert, key }`)
//! against nginx terminating TLS with the same certificate, both proxying
//! to the same 3 keep-alive `kaweb` replicas, in one run, with wrk over
//! HTTPS on loopback (SNI `bench.test`, resolved through a hosts file of
//! wrk's own mount namespace). Turns alternate, at saturation and paced,
//! and the medians are compared.
//!
//! Needs the test environment, a release build, wrk and nginx
//! (`apt-get install wrk nginx-light`): `cargo bench --bench ingress_tls`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;

#[path = "common.rs"]
mod common;

use common::{free_port, median, wrk_for_resolving, wrk_paced_resolving, BenchServer, Wrk};

const ROUNDS: usize = 8;
const ROUND_SECS: u32 = 4;
const PAUSE_MS: u32 = 2;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/kaweb:v1");
    let dir = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["bench.test".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost bench.test\n").unwrap();

    let https_port = free_port();
    let server = BenchServer::start_with_proxy(
        "tls",
        "obencht0",
        "10.127.0.0/24",
        &format!(
            "https_listen = \"127.0.0.1:{https_port}\"\ncert_dir = \"{}\"\n",
            dir.path().display()
        ),
    )
    .await;
    let client = server.client.clone();
    let ips = common::deploy_healthy(
        &client,
        &json!({ "services": [{ "name": "web", "image": image, "replicas": 3, "port": 8080, "domain": "bench.test",
                "tls": { "cert": cert_file, "key": key_file },
                "readiness": { "path": "/healthz", "interval_secs": 1 }, "stop_grace_secs": 1 }] }),
        3,
    )
    .await;

    let nginx_port = free_port();
    let nginx_dir = dir.path().join("nginx");
    let tls_server = format!(
        "listen 127.0.0.1:{nginx_port} ssl; server_name bench.test;\n\
         ssl_certificate {}; ssl_certificate_key {}; ssl_protocols TLSv1.2 TLSv1.3;",
        cert_file.display(),
        key_file.display()
    );
    let headers = "proxy_set_header X-Forwarded-Proto https;";
    let mut nginx = common::nginx_proxy(&nginx_dir, &ips, &tls_server, headers).await;

    let orca_url = format!("https://bench.test:{https_port}/");
    let nginx_url = format!("https://bench.test:{nginx_port}/");
    // The certificates take up to a look at the files to reach the ingress.
    let ready = Instant::now() + Duration::from_secs(30);
    while wrk_for_resolving(&hosts, &orca_url, 1).rps == 0.0 {
        assert!(Instant::now() < ready, "orca does not serve HTTPS");
    }
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    wrk_for_resolving(&hosts, &orca_url, 3);
    wrk_for_resolving(&hosts, &nginx_url, 3);
    let (mut orca, mut via_nginx, mut orca_paced, mut nginx_paced) =
        (vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        let saturated = |url: &str| wrk_for_resolving(&hosts, url, ROUND_SECS);
        let paced = |url: &str| wrk_paced_resolving(&hosts, url, ROUND_SECS, PAUSE_MS);
        if round % 2 == 0 {
            orca.push(saturated(&orca_url));
            via_nginx.push(saturated(&nginx_url));
            orca_paced.push(paced(&orca_url));
            nginx_paced.push(paced(&nginx_url));
        } else {
            via_nginx.push(saturated(&nginx_url));
            orca.push(saturated(&orca_url));
            nginx_paced.push(paced(&nginx_url));
            orca_paced.push(paced(&orca_url));
        }
    }
    // SIGTERM to the master stops its workers too.
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();
    server.stop().await;

    println!(
        "HTTPS ingress, one run, 3 kaweb replicas, wrk -t2 -c32 over TLS on loopback ({rounds} turns of {ROUND_SECS} s each, saturated and paced {PAUSE_MS} ms)"
    );
    let errors = |runs: &[Wrk]| runs.iter().filter(|r| !r.errors.is_empty()).count();
    for (load, o, n) in [
        ("saturated", &orca, &via_nginx),
        ("paced", &orca_paced, &nginx_paced),
    ] {
        let (o_rps, n_rps) = (median(o, |r| r.rps), median(n, |r| r.rps));
        let (o_p99, n_p99) = (median(o, |r| r.p99_ms), median(n, |r| r.p99_ms));
        println!(
            "{load:<10} orca {o_rps:>8.0} req/s p99 {o_p99:>6.2} ms | nginx {n_rps:>8.0} req/s p99 {n_p99:>6.2} ms | \
             throughput {:.2}x, p99 {:.2}x (turns with errors: orca {}, nginx {})",
            o_rps / n_rps,
            o_p99 / n_p99,
            errors(o),
            errors(n)
        );
    }
}
