//! Service DNS with real replicas: names and aliases within a project,
//! `<service>.<project>` and `.orca` for internal services only, and
//! services talking to each other by name.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::OrcaServer;
use serde_json::{json, Value};

/// The addresses `name` resolves to inside replica `from` (busybox nslookup).
async fn resolve(cri: &cri::Cri, from: &str, name: &str) -> Vec<String> {
    let args: Vec<String> = ["timeout", "5", "nslookup", name]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = cri
        .exec(from, &args, Duration::from_secs(10))
        .await
        .unwrap();
    let mut ips: Vec<String> = out
        .stdout
        .split("Name:")
        .skip(1)
        .flat_map(|answer| {
            answer
                .lines()
                .filter_map(|l| {
                    l.trim()
                        .strip_prefix("Address:")
                        .map(|a| a.trim().to_string())
                })
                .collect::<Vec<_>>()
        })
        .filter(|a| !a.contains(':'))
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_resolve_by_project_and_internal_services_cluster_wide() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "dns").await;
    let c = server.admin();
    let web = env.image("web:v1");
    let status = common::deploy_all_ready(
        &c,
        json!([
            { "name": "web", "project": "shop", "image": web, "replicas": 2, "port": 8080, "aliases": ["www"], "stop_grace_secs": 1 },
            { "name": "front", "project": "shop", "image": web, "port": 8080, "stop_grace_secs": 1 },
            { "name": "db", "project": "bank", "image": web, "port": 8080, "internal": true, "stop_grace_secs": 1 },
            { "name": "api", "project": "bank", "image": web, "port": 8080, "stop_grace_secs": 1 }
        ]),
    )
    .await;
    let ips = |n: &str| -> Vec<String> {
        let mut v: Vec<String> = status
            .services
            .iter()
            .find(|s| s.name == n)
            .unwrap()
            .instances
            .iter()
            .map(|i| i.ip.clone().unwrap())
            .collect();
        v.sort();
        v
    };
    let front = status
        .services
        .iter()
        .find(|s| s.name == "front")
        .unwrap()
        .instances[0]
        .id
        .clone();
    let cri = server.cri().await;

    assert_eq!(resolve(&cri, &front, "web").await, ips("web"));
    assert_eq!(resolve(&cri, &front, "www").await, ips("web"));
    assert_eq!(resolve(&cri, &front, "web.shop").await, ips("web"));
    assert_eq!(resolve(&cri, &front, "db.bank").await, ips("db"));
    assert_eq!(resolve(&cri, &front, "db.bank.orca").await, ips("db"));
    assert!(
        resolve(&cri, &front, "db").await.is_empty(),
        "another project's service by bare name"
    );
    assert!(
        resolve(&cri, &front, "api.bank").await.is_empty(),
        "a service that is not internal"
    );

    // Two services of one project talk by name.
    let args: Vec<String> = ["timeout", "5", "wget", "-q", "-O", "-", "http://www:8080/"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = cri
        .exec(&front, &args, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "web v1", "{out:?}");

    // A name or alias taken in the project is a clear deploy error.
    let e = c
        .post::<_, Value>("/api/v1/deploy", &json!({ "services": [{ "name": "other", "project": "shop", "image": web, "aliases": ["www"] }] }))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already used by web"), "{e}");
}
