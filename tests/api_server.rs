//! The REST API over real HTTP against `orca server` on real containerd:
//! the service lifecycle with limits in the cgroup, logs, healing, crash
//! loops, OOM kills, and surviving its own kill -9.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::client::ApiClient;
use api::status::{ServiceStatus, StatusResponse};
use common::server::OrcaServer;
use serde_json::{json, Value};

async fn service(client: &ApiClient, name: &str) -> Option<ServiceStatus> {
    let s: StatusResponse = client.get("/api/v1/status").await.unwrap();
    s.services.into_iter().find(|s| s.name == name)
}

/// GET http://ip:port/path, retrying for a few seconds; the body.
async fn http_get(ip: &str, port: u16, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n");
    for _ in 0..100 {
        let (status, body) = common::http::exchange((ip, port), request.as_bytes()).await;
        if status != 0 {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer from {ip}:{port}{path}");
}

fn state(s: &ServiceStatus) -> String {
    serde_json::to_value(s.status)
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

async fn deploy(client: &ApiClient, services: Value) -> Value {
    client
        .post("/api/v1/deploy", &json!({ "services": services }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_lifecycle_on_containerd() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "life").await;
    let c = server.admin();
    let web = env.image("web:v1");
    let body = deploy(
        &c,
        json!([{ "name": "web", "project": "shop", "image": web, "replicas": 2,
                 "resources": { "memory": "64Mi", "cpu": 0.5 }, "stop_grace_secs": 1 },
               { "name": "logger", "project": "shop", "image": env.image("logger:latest"), "stop_grace_secs": 1 },
               { "name": "other", "project": "misc", "image": web, "stop_grace_secs": 1 }]),
    )
    .await;
    assert_eq!(
        body["deployed"],
        json!(["web", "logger", "other"]),
        "{body}"
    );
    let s = common::wait_for(&c, "web", "2 running", |s| {
        s.running_replicas == 2 && state(s) == "running"
    })
    .await;
    assert_eq!(s.version, 1);

    // Each replica has its own address on the node's bridge and serves there.
    let subnet = server.subnet.clone();
    let prefix = subnet.trim_end_matches("0/24");
    for i in &s.instances {
        let ip = i.ip.clone().expect("an address");
        assert!(ip.starts_with(prefix), "{ip} not in {subnet}");
        let body = http_get(&ip, 8080, "/").await;
        assert_eq!(body.trim(), "web v1");
    }

    // Limits, read back from each replica's cgroup.
    let cgroups = cri::cgroup::Cgroups::default();
    for i in &s.instances {
        let path = cri::spec::cgroup_path(&server.namespace, &i.id);
        assert_eq!(cgroups.memory_limit(&path).unwrap(), Some(64 << 20));
        assert_eq!(cgroups.cpu_quota(&path).unwrap(), (Some(50_000), 100_000));
        assert_eq!(i.node, "node-1");
    }
    // containerd agrees, by the contract's labels.
    let cri = server.cri().await;
    let listed = cri
        .list_containers(&[cri::labels::filter(cri::labels::SERVICE, "web")])
        .await
        .unwrap();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|c| c.labels[cri::labels::PROJECT] == "shop"
                && c.labels[cri::labels::VERSION] == "1")
    );

    // Scale up and down.
    let r: Value = c
        .post("/api/v1/services/web/scale", &json!({ "replicas": 3 }))
        .await
        .unwrap();
    assert_eq!(r["replicas"], 3);
    common::wait_for(&c, "web", "3 running", |s| s.running_replicas == 3).await;
    c.post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();
    common::wait_for(&c, "web", "1 replica", |s| {
        s.running_replicas == 1 && s.instances.len() == 1
    })
    .await;

    // Logs: plain text, prefixed when there are several replicas.
    let logs = c
        .get_text("/api/v1/services/web/logs?tail=10")
        .await
        .unwrap();
    assert!(logs.contains("web v1 listening on 8080"), "{logs}");
    c.post::<_, Value>("/api/v1/services/web/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
    common::wait_for(&c, "web", "2 running", |s| s.running_replicas == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = c
        .get_text("/api/v1/services/web/logs?tail=10")
        .await
        .unwrap();
    assert!(logs.lines().all(|l| l.starts_with("[web.")), "{logs}");
    // Both replicas' lines, each under its own prefix.
    let prefixes: std::collections::HashSet<&str> = logs
        .lines()
        .filter_map(|l| l.split_once(']').map(|(p, _)| p))
        .collect();
    assert_eq!(prefixes.len(), 2, "{logs}");

    // Follow: chunks keep coming until the client goes.
    common::wait_for(&c, "logger", "running", |s| s.running_replicas == 1).await;
    let mut got = String::new();
    let follow = c.stream("/api/v1/services/logger/logs?follow=true&tail=1", |chunk| {
        got.push_str(&String::from_utf8_lossy(chunk));
        std::ops::ControlFlow::Continue(())
    });
    let _ = tokio::time::timeout(Duration::from_millis(1500), follow).await;
    let lines: Vec<&str> = got.lines().filter(|l| l.starts_with("line ")).collect();
    assert!(lines.len() >= 4, "follow gave {got:?}");

    // Stop one service, then a project, then everything.
    c.delete::<Value>("/api/v1/services/web").await.unwrap();
    let s = common::wait_for(&c, "web", "stopped, no replicas", |s| {
        s.instances.is_empty()
    })
    .await;
    assert_eq!(state(&s), "stopped");
    assert!(cri
        .list_containers(&[cri::labels::filter(cri::labels::SERVICE, "web")])
        .await
        .unwrap()
        .is_empty());
    let r: Value = c.delete("/api/v1/projects/shop").await.unwrap();
    assert_eq!(r["stopped"], json!(["logger", "web"]));
    common::wait_for(&c, "logger", "stopped", |s| s.instances.is_empty()).await;
    assert_eq!(service(&c, "other").await.unwrap().running_replicas, 1);
    let r: Value = c.post("/api/v1/stop", &json!({})).await.unwrap();
    assert_eq!(r["stopped"].as_array().unwrap().len(), 3);
    common::wait_for(&c, "other", "stopped", |s| s.instances.is_empty()).await;
    assert!(cri.list_containers(&[]).await.unwrap().is_empty());
    // Log files go with their replicas.
    let logs_dir = server.dir.path().join("data/logs");
    assert_eq!(std::fs::read_dir(&logs_dir).unwrap().count(), 0);

    // Cluster info for this node.
    let info: Value = c.get("/api/v1/cluster/info").await.unwrap();
    let node = &info["nodes"][0];
    assert_eq!(node["id"], "node-1");
    assert_eq!(node["labels"]["zone"], "test");
    assert_eq!(node["drained"], false);
    assert!(node["resources"]["memory_bytes"].as_u64().unwrap() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_restart_adopts_the_same_tasks() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "adopt").await;
    let c = server.admin();
    deploy(&c, json!([{ "name": "web", "image": env.image("web:v1"), "replicas": 2, "stop_grace_secs": 1 }])).await;
    // A replica just started counts where it runs at once; its address
    // shows from the next listing, a moment later.
    let before = common::wait_for(&c, "web", "2 running with addresses", |s| {
        s.running_replicas == 2 && s.instances.iter().all(|i| i.ip.is_some())
    })
    .await;
    let pids: Vec<_> = before
        .instances
        .iter()
        .map(|i| (i.id.clone(), i.pid))
        .collect();
    let ips: Vec<_> = before.instances.iter().map(|i| i.ip.clone()).collect();

    server.kill9();
    // The replicas keep running without orca.
    for (_, pid) in &pids {
        assert!(std::path::Path::new(&format!("/proc/{}", pid.unwrap())).exists());
    }
    let started = Instant::now();
    server.spawn().await;
    let after = common::wait_for(&c, "web", "2 running after restart", |s| {
        s.running_replicas == 2
    })
    .await;
    eprintln!("restart to both replicas adopted: {:?}", started.elapsed());
    let again: Vec<_> = after
        .instances
        .iter()
        .map(|i| (i.id.clone(), i.pid))
        .collect();
    assert_eq!(again, pids, "replicas were recreated instead of adopted");
    let ips_after: Vec<_> = after.instances.iter().map(|i| i.ip.clone()).collect();
    assert_eq!(ips_after, ips, "addresses changed across the restart");
    for ip in ips.iter().flatten() {
        assert_eq!(http_get(ip, 8080, "/").await.trim(), "web v1");
    }
    // And it keeps them: nothing restarts over the next moments.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = service(&c, "web").await.unwrap();
    assert_eq!(
        later
            .instances
            .iter()
            .map(|i| (i.id.clone(), i.pid))
            .collect::<Vec<_>>(),
        pids
    );
    assert!(server.log().contains("orca server ready"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_killed_from_outside_is_replaced() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "heal").await;
    let c = server.admin();
    deploy(
        &c,
        json!([{ "name": "web", "image": env.image("web:v1"), "stop_grace_secs": 1 }]),
    )
    .await;
    let s = common::wait_for(&c, "web", "running", |s| s.running_replicas == 1).await;
    let pid = s.instances[0].pid.unwrap();
    // The replica's PID, which this test had orca start.
    let killed = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // The new process shows as soon as containerd says it started; the
    // restart count as soon as orca's restart call returns, a moment later.
    let s = common::wait_for(&c, "web", "running again, counted", |s| {
        s.running_replicas == 1
            && s.instances[0].pid.is_some_and(|p| p != pid)
            && s.instances[0].restarts == 1
    })
    .await;
    assert_eq!(s.instances[0].last_exit.as_ref().unwrap().code, 137);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_loop_backs_off_and_degrades() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "crash").await;
    let c = server.admin();
    deploy(
        &c,
        json!([{ "name": "crasher", "image": env.image("crasher:latest") }]),
    )
    .await;
    // Exits 2 s after each start. The first crash is restarted at once,
    // the second after 1 s, the third after 2 s: the restarts come 2 s,
    // 3 s and 4 s apart. Watch the count go up, from the first start.
    let mut started: Option<Instant> = None;
    let mut restarts: Vec<Instant> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let s = loop {
        let status: api::status::StatusResponse = c.get("/api/v1/status").await.unwrap();
        let s = status.services.into_iter().next().unwrap();
        if let Some(i) = s.instances.first() {
            if started.is_none() && i.state == api::status::InstanceState::Running {
                started = Some(Instant::now());
            }
            if started.is_some() && i.restarts as usize > restarts.len() {
                restarts.push(Instant::now());
            }
            if restarts.len() >= 3 {
                break s;
            }
        }
        assert!(Instant::now() < deadline, "no third restart: {s:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let started = started.unwrap();
    let gaps = [
        restarts[0] - started,
        restarts[1] - restarts[0],
        restarts[2] - restarts[1],
    ];
    // Polling every 50 ms sees each edge late by at most a poll.
    assert!(
        gaps[0] < Duration::from_millis(2700),
        "the first crash waited: {gaps:?}"
    );
    assert!(
        gaps[1] >= Duration::from_millis(2800),
        "no 1 s backoff: {gaps:?}"
    );
    assert!(
        gaps[2] >= Duration::from_millis(3800),
        "no 2 s backoff: {gaps:?}"
    );
    let i = &s.instances[0];
    assert_eq!(i.last_exit.as_ref().unwrap().code, 3);
    assert!(!i.last_exit.as_ref().unwrap().oom_killed);
    assert!(
        ["degraded", "failed"].contains(&state(&s).as_str()),
        "{s:#?}"
    );
    let metrics = c.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("orca_container_restarts_total{service=\"crasher\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_hog_shows_oom_killed() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "oom").await;
    let c = server.admin();
    let mut events =
        common::events::EventStream::open(server.port, common::server::VIEWER, "service=hog", None)
            .await;
    deploy(&c, json!([{ "name": "hog", "image": env.image("hog:latest"), "resources": { "memory": "32Mi" } }])).await;
    let s = common::wait_for(&c, "hog", "an OOM kill", |s| {
        s.instances
            .first()
            .and_then(|i| i.last_exit.as_ref())
            .is_some_and(|e| e.oom_killed)
    })
    .await;
    assert_eq!(s.instances[0].last_exit.as_ref().unwrap().code, 137);
    let metrics = c.get_text("/metrics").await.unwrap();
    assert!(
        metrics.contains("orca_oom_kills_total{service=\"hog\"}"),
        "{metrics}"
    );
    // And on the event stream.
    let (_, oom) = events
        .until("an OOM kill", Duration::from_secs(30), |e| {
            e.kind == api::events::EventKind::ReplicaOomKilled
        })
        .await;
    assert_eq!(oom.instance.as_deref(), Some(s.instances[0].id.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_on_one_service() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "race").await;
    let c = server.admin();
    let image = env.image("logger:latest");
    deploy(
        &c,
        json!([{ "name": "busy", "image": image, "replicas": 1, "stop_grace_secs": 1 }]),
    )
    .await;
    let calls: Vec<_> = (0..200u64)
        .map(|i| {
            let c = c.clone();
            let image = image.clone();
            tokio::spawn(async move {
                let replicas = (i % 4) as i64;
                let r: Value = match i % 3 {
                    0 => c.post("/api/v1/services/busy/scale", &json!({ "replicas": replicas })).await.unwrap(),
                    1 => c.delete("/api/v1/services/busy").await.unwrap(),
                    _ => c
                        .post(
                            "/api/v1/deploy",
                            &json!({ "services": [{ "name": "busy", "image": image, "replicas": replicas, "stop_grace_secs": 1 }] }),
                        )
                        .await
                        .unwrap(),
                };
                let generation = r["generation"].as_u64().or_else(|| r["generations"]["busy"].as_u64()).unwrap();
                let expect = if i % 3 == 1 { None } else { Some(replicas as u32) };
                (generation, expect)
            })
        })
        .collect();
    let mut acks = Vec::new();
    for call in calls {
        acks.push(call.await.unwrap());
    }
    // The latest acknowledged change is the one with the highest generation.
    let (_, last) = acks.iter().max_by_key(|(g, _)| *g).cloned().unwrap();
    let s = service(&c, "busy").await.unwrap();
    match last {
        None => assert_eq!(state(&s), "stopped"),
        Some(n) => assert_eq!(s.replicas, n),
    }
    let want = last.unwrap_or(0) as usize;
    let s = common::wait_for(&c, "busy", "convergence", |s| {
        s.running_replicas as usize == want && s.instances.len() == want
    })
    .await;
    // containerd agrees (the worker may still be finishing a plan made for
    // an earlier request; it converges to the last one).
    let cri = server.cri().await;
    common::eventually(
        &format!("containerd to run {want} of busy"),
        Duration::from_secs(30),
        async || {
            let running = cri
                .list_containers(&[cri::labels::filter(cri::labels::SERVICE, "busy")])
                .await
                .unwrap()
                .into_iter()
                .filter(|c| c.task.as_ref().is_some_and(|t| t.state.is_alive()))
                .count();
            let now = service(&c, "busy").await.unwrap();
            if running == want
                && now.running_replicas as usize == want
                && now.instances.len() == want
            {
                Ok(())
            } else {
                Err(format!("containerd runs {running}: {s:#?}"))
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_not_the_containers() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "term").await;
    let c = server.admin();
    deploy(
        &c,
        json!([{ "name": "web", "image": env.image("web:v1"), "stop_grace_secs": 1 }]),
    )
    .await;
    let s = common::wait_for(&c, "web", "running", |s| s.running_replicas == 1).await;
    let pid = s.instances[0].pid.unwrap();
    assert_eq!(server.terminate(), Some(0), "log:\n{}", server.log());
    assert!(server.log().contains("stopped (containers keep running)"));
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the replica died with the server"
    );
    server.spawn().await;
    let s = common::wait_for(&c, "web", "adopted", |s| s.running_replicas == 1).await;
    assert_eq!(s.instances[0].pid, Some(pid));
}
