//! `GET /api/v1/events` and `orca events` on a real server: a deploy, its
//! replicas starting and getting ready, the rollout's progress, a scale, a
//! crash and its restart, a stop, each as an event with an id; filters by
//! service; resuming after an id by query and by `Last-Event-ID`. Node
//! events: `tests/cluster_failure.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::BufRead;
use std::time::Duration;

use api::events::EventKind::{self, *};
use common::events::EventStream;
use common::server::{OrcaServer, ADMIN, VIEWER};
use serde_json::{json, Value};

const WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_happens_to_a_service_comes_as_events() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "events").await;
    let c = server.admin();
    let mut all = EventStream::open(server.port, VIEWER, "", None).await;
    assert_eq!(all.content_type, "text/event-stream");
    let mut web_only = EventStream::open(server.port, VIEWER, "service=web", None).await;

    let service = |name: &str, replicas: u32| json!({ "name": name, "project": "shop", "image": env.image("web:v1"), "replicas": replicas, "port": 8080, "stop_grace_secs": 1 });
    let _: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [service("web", 2), service("other", 1)] }),
        )
        .await
        .unwrap();
    let of = |kind: EventKind, name: &'static str| {
        move |e: &api::events::Event| e.kind == kind && e.service.as_deref() == Some(name)
    };
    let (_, deployed) = all.until("web deployed", WITHIN, of(Deployed, "web")).await;
    assert_eq!(
        (deployed.version, deployed.project.as_deref()),
        (Some(1), Some("shop"))
    );
    let (_, complete) = all
        .until("web complete", WITHIN, of(RolloutComplete, "web"))
        .await;
    assert_eq!(complete.version, Some(1));
    // Before it completed: both replicas started and got ready, and the
    // rollout moved; each replica event names its replica and node.
    let web_events: Vec<_> = all
        .seen
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.service.as_deref() == Some("web"))
        .collect();
    for kind in [ReplicaStarted, ReplicaReady] {
        let of_kind: Vec<_> = web_events.iter().filter(|e| e.kind == kind).collect();
        assert_eq!(of_kind.len(), 2, "{kind:?}: {web_events:#?}");
        assert!(of_kind
            .iter()
            .all(|e| e.instance.is_some() && e.node.as_deref() == Some("node-1")));
    }
    assert!(
        web_events.iter().any(|e| e.kind == RolloutProgress),
        "{web_events:#?}"
    );
    let ids: Vec<u64> = all.seen.iter().map(|(_, e)| e.id).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids not rising: {ids:?}"
    );

    // Scale, then a crash and orca's restart of it.
    let _: Value = c
        .post("/api/v1/services/web/scale", &json!({ "replicas": 3 }))
        .await
        .unwrap();
    let (_, scaled) = all.until("web scaled", WITHIN, of(Scaled, "web")).await;
    assert_eq!(scaled.message, "2 to 3 replicas");
    let s = common::wait_for(&c, "web", "3 ready", |s| common::all_ready_on(s, 1, 3)).await;
    let victim = &s.instances[0];
    // The replica's PID, which this test had orca start.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim.pid.unwrap() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let same = |kind: EventKind| {
        let id = victim.id.clone();
        move |e: &api::events::Event| e.kind == kind && e.instance.as_deref() == Some(id.as_str())
    };
    let (_, exited) = all.until("the crash", WITHIN, same(ReplicaExited)).await;
    assert!(exited.message.contains("code 137"), "{}", exited.message);
    all.until("the restart", WITHIN, same(ReplicaRestarted))
        .await;

    let _: Value = c.delete("/api/v1/services/web").await.unwrap();
    let (_, stopped) = all.until("web stopped", WITHIN, of(Stopped, "web")).await;

    // The filtered stream saw web's events and none of other's.
    web_only
        .until("web stopped", WITHIN, |e| e.id == stopped.id)
        .await;
    assert!(web_only
        .seen
        .iter()
        .all(|(_, e)| e.service.as_deref() == Some("web")));
    assert!(all
        .seen
        .iter()
        .any(|(_, e)| e.service.as_deref() == Some("other")));

    // Resuming after the deploy event, by query and by Last-Event-ID: the
    // same events as the live stream, from the next one on.
    let live: Vec<u64> = all
        .seen
        .iter()
        .map(|(_, e)| e.id)
        .filter(|id| *id > deployed.id)
        .collect();
    for (query, header) in [
        (format!("since={}", deployed.id), None),
        (String::new(), Some(deployed.id)),
    ] {
        let mut again = EventStream::open(server.port, VIEWER, &query, header).await;
        again
            .until("the stop again", WITHIN, |e| e.id == stopped.id)
            .await;
        let replayed: Vec<u64> = again.seen.iter().map(|(_, e)| e.id).collect();
        assert_eq!(replayed[..], live[..replayed.len()], "{query} {header:?}");
    }

    // No token: 401 JSON, as everywhere.
    let (status, body) = common::http::get(server.port, "orca", "/api/v1/events").await;
    assert_eq!(status, 401, "{body}");

    // The CLI follows the same stream; with --output json, one event per line.
    let mut child = std::process::Command::new(common::orca_bin())
        .args([
            "events",
            "--service",
            "web",
            "--output",
            "json",
            "--since",
            &deployed.id.to_string(),
        ])
        .env("ORCA_API", format!("http://127.0.0.1:{}", server.port))
        .env("ORCA_TOKEN", ADMIN)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        let mut kinds = Vec::new();
        for line in std::io::BufReader::new(stdout).lines() {
            let event: api::events::Event = serde_json::from_str(&line.unwrap()).unwrap();
            kinds.push(event.kind);
            if event.kind == Stopped {
                break;
            }
        }
        kinds
    });
    let kinds = tokio::time::timeout(WITHIN, lines).await.unwrap().unwrap();
    // The CLI this test started, by its PID.
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        kinds.contains(&Scaled) && kinds.contains(&ReplicaRestarted),
        "{kinds:?}"
    );
}
