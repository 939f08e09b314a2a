//! Project isolation in the kernel, with real replicas: a replica reaches
//! its own project's replicas, not another project's, except services
//! marked `internal`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::OrcaServer;
use serde_json::json;

/// Whether replica `from` gets an answer from `ip:8080` (busybox wget inside it).
async fn reaches(cri: &cri::Cri, from: &str, ip: &str) -> bool {
    // busybox wget's own -T crashes it; timeout(1) bounds it instead.
    let args: Vec<String> = [
        "timeout",
        "3",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{ip}:8080/"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let out = cri
        .exec(from, &args, Duration::from_secs(10))
        .await
        .unwrap();
    out.code == 0 && out.stdout.starts_with("web v1")
}

/// Waits (up to 30 s) until orca's isolation table lists every address in `ips`.
async fn rules_name(server: &OrcaServer, ips: &[String]) {
    let table = network::nft::isolation_table(&common::server::bridge_name(&server.namespace));
    let what = format!("the isolation table to name all of {ips:?}");
    common::eventually(&what, Duration::from_secs(30), async || {
        let out = std::process::Command::new("nft")
            .args(["list", "table", "ip", &table])
            .output()
            .unwrap();
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let words: std::collections::HashSet<&str> = listed
            .split(|c: char| !(c.is_ascii_digit() || c == '.'))
            .collect();
        if ips.iter().all(|ip| words.contains(ip.as_str())) {
            Ok(())
        } else {
            Err(listed)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_are_isolated_except_internal_services() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "isolate").await;
    let c = server.admin();
    let web = env.image("web:v1");
    // Healthy: the port check has connected, so every replica listens.
    let status = common::deploy_all_ready(
        &c,
        json!([
            { "name": "front", "project": "shop", "image": web, "replicas": 2, "port": 8080, "stop_grace_secs": 1 },
            { "name": "private", "project": "bank", "image": web, "port": 8080, "stop_grace_secs": 1 },
            { "name": "shared", "project": "bank", "image": web, "port": 8080, "internal": true, "stop_grace_secs": 1 }
        ]),
    )
    .await;
    let by_name = |n: &str| {
        status
            .services
            .iter()
            .find(|s| s.name == n)
            .unwrap()
            .instances
            .clone()
    };
    let front = by_name("front");
    let private = by_name("private");
    let shared = by_name("shared");
    let ip = |i: &api::status::InstanceStatus| i.ip.clone().unwrap();
    // The rules are applied after the state changes: wait until the
    // kernel's table names every replica.
    let all: Vec<String> = front
        .iter()
        .chain(&private)
        .chain(&shared)
        .map(ip)
        .collect();
    rules_name(&server, &all).await;

    let cri = server.cri().await;
    assert!(
        reaches(&cri, &front[0].id, &ip(&front[1])).await,
        "same project must be reachable"
    );
    assert!(
        !reaches(&cri, &front[0].id, &ip(&private[0])).await,
        "another project's service must not be"
    );
    assert!(
        reaches(&cri, &front[0].id, &ip(&shared[0])).await,
        "an internal service must be"
    );
    assert!(reaches(&cri, &private[0].id, &ip(&shared[0])).await);
    // The internal service cannot open connections into other projects.
    assert!(!reaches(&cri, &shared[0].id, &ip(&front[0])).await);
    // The host (the ingress proxy's side) reaches everything.
    for i in front.iter().chain(&private).chain(&shared) {
        let out = std::process::Command::new("/bin/busybox")
            .args([
                "timeout",
                "3",
                "/bin/busybox",
                "wget",
                "-q",
                "-O",
                "-",
                &format!("http://{}:8080/", ip(i)),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "host to {}", i.id);
    }
}
