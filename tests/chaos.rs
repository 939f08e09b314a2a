//! kill -9 of the server at a random moment of every kind of change, then a
//! restart: the service settles at the last acknowledged state (replica
//! count and version), with exactly one container, task, snapshot, network
//! namespace, veth, port binding, cgroup and log file per replica, no
//! duplicate address, and nothing left once it is stopped; no address stays
//! leased. `ORCA_SOAK=1` runs ten times the rounds.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use api::client::ApiClient;
use api::status::{RolloutPhase, ServiceStatus, StatusResponse};
use common::inventory::{self, Inventory};
use common::server::OrcaServer;
use serde_json::{json, Value};

/// Rounds of the five changes: 3, or 30 under `ORCA_SOAK=1`.
fn rounds() -> usize {
    if std::env::var("ORCA_SOAK").is_ok_and(|v| v == "1") {
        30
    } else {
        3
    }
}

/// Up to 1.5 s, at random.
async fn random_pause() -> Duration {
    let pause = Duration::from_millis(u64::from(common::rand_u32() % 1500));
    tokio::time::sleep(pause).await;
    pause
}

fn spec(image: &str, replicas: u32, canary: bool) -> Value {
    let mut s = json!({ "name": "web", "image": image, "replicas": replicas, "port": 8080,
        "stop_grace_secs": 1, "readiness": { "path": "/", "interval_secs": 1 } });
    if canary {
        s["deploy"] = json!({ "strategy": "canary", "canary_weight": 20 });
    }
    s
}

async fn deploy(c: &ApiClient, spec: Value) -> u64 {
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": [spec] }))
        .await
        .unwrap();
    r["versions"]["web"]
        .as_u64()
        .unwrap_or_else(|| panic!("no version in {r}"))
}

/// kill -9 after a random pause, then a restart.
async fn crash(server: &mut OrcaServer, what: &str) {
    let pause = random_pause().await;
    server.kill9();
    eprintln!("kill -9 {pause:?} into {what}");
    server.spawn().await;
}

/// The server log's last lines that name a replica or a rollout.
fn tail(server: &OrcaServer) -> String {
    let log = server.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("web.") || l.contains("rollout") || l.contains("listening"))
        .collect();
    lines[lines.len().saturating_sub(120)..].join("\n")
}

/// Waits until `web` runs `n` ready replicas of `version` and nothing else,
/// then checks the host holds exactly one of everything per replica.
async fn settled(server: &OrcaServer, n: usize, version: u64, what: &str) {
    let c = server.admin();
    let done = |s: &ServiceStatus| {
        s.version == version
            && s.instances.len() == n
            && s.instances
                .iter()
                .all(|i| i.version == version && i.healthy == Some(true) && i.ip.is_some())
            && s.rollout
                .as_ref()
                .is_some_and(|r| r.phase == RolloutPhase::Complete)
    };
    let status = common::eventually(what, Duration::from_secs(90), async || {
        let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
        match s.services.iter().find(|s| s.name == "web") {
            Some(web) if done(web) => Ok(web.clone()),
            _ => Err(format!(
                "{s:#?}\n-- server log, last lines --\n{}",
                tail(server)
            )),
        }
    })
    .await;
    let ids: BTreeSet<_> = status.instances.iter().map(|i| i.id.clone()).collect();
    let ips: BTreeSet<_> = status.instances.iter().map(|i| i.ip.clone()).collect();
    assert_eq!(ids.len(), n, "duplicate replica ids after {what}");
    assert_eq!(ips.len(), n, "duplicate addresses after {what}");
    host_holds(server, Inventory::each(n), what).await;
}

/// The host's counts reach `want` (removals finish in the background).
async fn host_holds(server: &OrcaServer, want: Inventory, what: &str) {
    common::eventually(
        &format!("the host holds {want:?} after {what}"),
        Duration::from_secs(30),
        async || {
            let got = inventory::of(server);
            if got == want {
                Ok(())
            } else {
                Err(format!("{got:?}\n{}", inventory::listing(server)))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_at_any_point_of_a_change_keeps_the_last_acknowledged_state() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "chaos").await;
    let (v1, v2) = (env.image("web:v1"), env.image("web:v2"));
    host_holds(&server, Inventory::default(), "the start").await;
    for round in 0..rounds() {
        eprintln!("round {round}");
        let c = server.admin();

        // A deploy of 10 replicas.
        let version = deploy(&c, spec(&v1, 10, false)).await;
        crash(&mut server, "a deploy of 10").await;
        settled(&server, 10, version, "a deploy of 10").await;

        // A rolling update.
        let c = server.admin();
        let version = deploy(&c, spec(&v2, 10, false)).await;
        crash(&mut server, "a rolling update").await;
        settled(&server, 10, version, "a rolling update").await;

        // A canary promote.
        let c = server.admin();
        let canary = deploy(&c, spec(&v1, 10, true)).await;
        common::eventually("the canary", Duration::from_secs(60), async || {
            let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
            let web = &s.services[0];
            let up = web
                .instances
                .iter()
                .any(|i| i.canary && i.healthy == Some(true));
            if up {
                Ok(())
            } else {
                Err(format!("{web:#?}"))
            }
        })
        .await;
        let r: Value = c
            .post("/api/v1/services/web/promote", &json!({}))
            .await
            .unwrap();
        assert_eq!(r["version"].as_u64(), Some(canary), "{r}");
        crash(&mut server, "a promote").await;
        settled(&server, 10, canary, "a promote").await;

        // A scale down.
        let c = server.admin();
        let _: Value = c
            .post("/api/v1/services/web/scale", &json!({ "replicas": 3 }))
            .await
            .unwrap();
        crash(&mut server, "a scale to 3").await;
        settled(&server, 3, canary, "a scale to 3").await;

        // A stop: nothing is left.
        let c = server.admin();
        let _: Value = c.delete("/api/v1/services/web").await.unwrap();
        crash(&mut server, "a stop").await;
        host_holds(&server, Inventory::default(), "a stop").await;
        let c = server.admin();
        let s: StatusResponse = c.get("/api/v1/status").await.unwrap();
        assert!(s.services.iter().all(|s| s.instances.is_empty()), "{s:#?}");
    }
    // And no address is leased by what is gone.
    server.terminate();
    assert_eq!(inventory::leases(&server), 0, "leased addresses left");
}
