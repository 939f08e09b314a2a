//! Containers on a real containerd and runc: limits in the cgroup, env,
//! logs through the orca log shim, stop with a grace period, OOM kills,
//! events, exec, usage, and nothing left behind after removal.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cri::cgroup::Cgroups;
use cri::container::LogTarget;
use cri::events::CriEvent;
use cri::logs::{self, Stream};
use cri::spec::cgroup_path;
use cri::{ContainerConfig, Cri, MemoryLimit, NetworkMode};

fn shim_log(dir: &std::path::Path, id: &str) -> LogTarget {
    LogTarget::Shim {
        binary: common::orca_bin(),
        file: dir.join(format!("{id}.log")),
    }
}

fn labels(service: &str) -> HashMap<String, String> {
    HashMap::from([
        (cri::labels::SERVICE.to_string(), service.to_string()),
        (cri::labels::PROJECT.to_string(), "test".to_string()),
        (cri::labels::VERSION.to_string(), "1".to_string()),
        (cri::labels::INSTANCE.to_string(), format!("{service}-1")),
    ])
}

async fn run(cri: &Cri, image: &str, config: ContainerConfig, log: &LogTarget) -> u32 {
    let image = cri.pull(image).await.expect("pull");
    cri.create_container(&image, &config).await.expect("create");
    cri.start_task(&config.id, log).await.expect("start")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_runs_with_limits_env_and_serves() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("web");
    let cri = common::connect(&env, &ns).await;
    let logs = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let config = ContainerConfig {
        id: "web-1".into(),
        env: vec![
            ("PORT".into(), port.to_string()),
            ("GREETING".into(), "hello from orca".into()),
        ],
        resources: cri::Resources {
            memory: Some(MemoryLimit::parse("64Mi").unwrap()),
            cpu: Some(cri::CpuLimit::new(0.5).unwrap()),
            pids: None,
        },
        network: NetworkMode::Host,
        labels: labels("web"),
        ..Default::default()
    };
    let pid = run(
        &cri,
        &env.image("web:v1"),
        config,
        &shim_log(logs.path(), "web-1"),
    )
    .await;
    assert!(pid > 1);

    let body = common::http_get(port, "/", Duration::from_secs(5))
        .await
        .expect("web answers");
    assert_eq!(body.trim(), "web v1");
    let health = common::http_get(port, "/healthz", Duration::from_secs(1)).await;
    assert_eq!(health.as_deref().map(str::trim), Some("ok"));

    // The limits runc applied, read back from the task's cgroup.
    let cgroups = Cgroups::default();
    let path = cgroup_path(&ns, "web-1");
    assert_eq!(cgroups.memory_limit(&path).unwrap(), Some(64 * 1024 * 1024));
    assert_eq!(cgroups.cpu_quota(&path).unwrap(), (Some(50_000), 100_000));

    // The process sees the merged environment.
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let vars: Vec<String> = environ
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect();
    for want in [
        "GREETING=hello from orca",
        &format!("PORT={port}"),
        "VERSION=v1",
        "PATH=/bin",
        "HOSTNAME=web-1",
    ] {
        assert!(
            vars.iter().any(|v| v == want),
            "{want} missing from {vars:?}"
        );
    }

    // Listing by label finds it, with its running task.
    let found = cri
        .list_containers(&[cri::labels::filter(cri::labels::SERVICE, "web")])
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].task.as_ref().map(|t| t.pid), Some(pid));
    assert!(found[0].task.as_ref().unwrap().state.is_alive());
    assert!(cri
        .list_containers(&[cri::labels::filter(cri::labels::SERVICE, "other")])
        .await
        .unwrap()
        .is_empty());

    // Usage from Tasks.Metrics.
    let usage = cri.usage("web-1").await.expect("metrics");
    assert!(usage.memory_bytes > 0);
    assert_eq!(usage.memory_limit_bytes, 64 * 1024 * 1024);
    assert!(usage.pids >= 1);

    // busybox httpd as PID 1 ignores SIGTERM: killed after the grace period.
    let started = Instant::now();
    let status = cri
        .stop("web-1", Duration::from_millis(800))
        .await
        .expect("stop");
    assert_eq!(status.code, 137);
    assert!(!status.oom_killed);
    assert!(started.elapsed() >= Duration::from_millis(800));

    // The shim logged the start line and the requests, streams apart.
    let lines = logs::tail(&logs.path().join("web-1.log"), 100).unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.stream == Stream::Stdout && l.text.starts_with("web v1 listening")),
        "{lines:?}"
    );
    assert!(lines.iter().all(|l| !l.time.is_empty()));

    cri.remove_container("web-1").await.expect("remove");
    assert_nothing_left(&cri, &ns, "web-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_keep_landing_after_the_client_is_gone() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("logs");
    let logs_dir = tempfile::tempdir().unwrap();
    let log = shim_log(logs_dir.path(), "logger-1");
    let file = log.file().unwrap().clone();
    {
        let cri = common::connect(&env, &ns).await;
        let config = ContainerConfig {
            id: "logger-1".into(),
            labels: labels("logger"),
            ..Default::default()
        };
        run(&cri, &env.image("logger:latest"), config, &log).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        // The client (and its connection) goes away here.
    }
    let count = || logs::tail(&file, 100_000).unwrap().len();
    let before = count();
    assert!(before >= 2, "only {before} lines after 700 ms");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let after = count();
    assert!(
        after >= before + 5,
        "{before} lines, then {after}: logging stopped without a client"
    );

    let lines = logs::tail(&file, 100_000).unwrap();
    assert!(lines
        .iter()
        .any(|l| l.stream == Stream::Stdout && l.text == "line 1"));
    assert!(
        lines
            .iter()
            .any(|l| l.stream == Stream::Stderr && l.text == "err 5"),
        "{lines:?}"
    );

    // Following sees new lines as they come.
    let mut follow = logs::follow(&file, Duration::from_millis(50));
    let next = tokio::time::timeout(Duration::from_secs(2), follow.recv())
        .await
        .expect("a new line")
        .unwrap();
    assert!(
        next.text.starts_with("line ") || next.text.starts_with("err "),
        "{next:?}"
    );

    let cri = common::connect(&env, &ns).await;
    // The logger traps SIGTERM and exits 0 well within the grace period.
    let status = cri.stop("logger-1", Duration::from_secs(5)).await.unwrap();
    assert_eq!(status.code, 0);
    cri.remove_container("logger-1").await.unwrap();
    logs::remove_logs(&file);
    assert!(!file.exists());
    assert_nothing_left(&cri, &ns, "logger-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hog_is_oom_killed_and_reported() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("oom");
    let cri = common::connect(&env, &ns).await;
    let mut events = cri.subscribe().await.expect("subscribe");
    let config = ContainerConfig {
        id: "hog-1".into(),
        resources: cri::Resources {
            memory: Some(MemoryLimit::parse("32Mi").unwrap()),
            cpu: None,
            pids: None,
        },
        labels: labels("hog"),
        ..Default::default()
    };
    run(&cri, &env.image("hog:latest"), config, &LogTarget::Discard).await;
    let status = tokio::time::timeout(Duration::from_secs(30), cri.wait("hog-1"))
        .await
        .expect("hog dies")
        .unwrap();
    assert!(status.oom_killed, "{status:?}");
    assert_eq!(status.code, 137);

    let mut saw_oom = false;
    let mut saw_exit = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(saw_oom && saw_exit) && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(1), events.next()).await {
            Ok(Some(CriEvent::TaskOom { container_id })) if container_id == "hog-1" => {
                saw_oom = true
            }
            Ok(Some(CriEvent::TaskExit {
                container_id,
                exit_status,
                ..
            })) if container_id == "hog-1" => {
                assert_eq!(exit_status, 137);
                saw_exit = true;
            }
            _ => {}
        }
    }
    assert!(saw_oom, "no TaskOOM event");
    assert!(saw_exit, "no TaskExit event");
    cri.remove_container("hog-1").await.unwrap();
    assert_nothing_left(&cri, &ns, "hog-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_deliver_the_crashers_exit() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("events");
    let cri = common::connect(&env, &ns).await;
    let mut events = cri.subscribe().await.expect("subscribe");
    let config = ContainerConfig {
        id: "crasher-1".into(),
        labels: labels("crasher"),
        ..Default::default()
    };
    let pid = run(
        &cri,
        &env.image("crasher:latest"),
        config,
        &LogTarget::Discard,
    )
    .await;
    let mut started = false;
    let exit = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("an event in time")
        {
            Some(CriEvent::TaskStart {
                container_id,
                pid: p,
            }) if container_id == "crasher-1" => {
                assert_eq!(p, pid);
                started = true;
            }
            Some(CriEvent::TaskExit {
                container_id,
                exec_id,
                exit_status,
                exited_at,
                ..
            }) if container_id == "crasher-1" => {
                assert!(exec_id.is_empty());
                assert!(exited_at.is_some());
                break exit_status;
            }
            Some(_) => {}
            None => panic!("event stream ended"),
        }
    };
    assert!(started);
    assert_eq!(exit, 3);
    let status = cri.wait("crasher-1").await.unwrap();
    assert_eq!((status.code, status.oom_killed), (3, false));
    cri.remove_container("crasher-1").await.unwrap();
    assert_nothing_left(&cri, &ns, "crasher-1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_returns_output_and_code() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("exec");
    let cri = common::connect(&env, &ns).await;
    let config = ContainerConfig {
        id: "box-1".into(),
        command: Some(vec!["sleep".into(), "300".into()]),
        env: vec![("MARK".into(), "x1".into())],
        labels: labels("box"),
        ..Default::default()
    };
    run(&cri, &env.image("web:v1"), config, &LogTarget::Discard).await;
    let args: Vec<String> = ["sh", "-c", "echo out $MARK; echo err >&2; pwd; exit 7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = cri
        .exec("box-1", &args, Duration::from_secs(10))
        .await
        .expect("exec");
    assert_eq!(out.code, 7);
    assert_eq!(out.stdout, "out x1\n/www\n");
    assert_eq!(out.stderr, "err\n");

    let missing = cri
        .exec(
            "box-1",
            &["/no/such/binary".to_string()],
            Duration::from_secs(10),
        )
        .await
        .expect("a program that cannot start is an outcome, not a failure");
    assert_eq!(missing.code, 127, "{missing:?}");
    assert!(missing.stderr.contains("/no/such/binary"), "{missing:?}");

    let hostname = cri
        .exec("box-1", &["hostname".to_string()], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(hostname.stdout.trim(), "box-1");
    cri.remove_container("box-1").await.unwrap();
    assert_nothing_left(&cri, &ns, "box-1").await;

    // A user by name, looked up in the image's own /etc/passwd and /etc/group.
    let config = ContainerConfig {
        id: "box-2".into(),
        command: Some(vec!["sleep".into(), "300".into()]),
        user: Some("nobody".into()),
        ..Default::default()
    };
    run(&cri, &env.image("web:v1"), config, &LogTarget::Discard).await;
    let id = cri
        .exec("box-2", &["id".to_string()], Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(id.stdout.trim(), "uid=65534(nobody) gid=65534(nogroup)");
    cri.remove_container("box-2").await.unwrap();
    assert_nothing_left(&cri, &ns, "box-2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_container_settings_fail_cleanly() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("badcfg");
    let cri = common::connect(&env, &ns).await;
    let image = cri.pull(&env.image("web:v1")).await.unwrap();
    for id in ["../etc", "a/b", ""] {
        let err = cri
            .create_container(
                &image,
                &ContainerConfig {
                    id: id.into(),
                    ..Default::default()
                },
            )
            .await
            .unwrap_err();
        assert!(err.to_string().starts_with("invalid container id"), "{err}");
    }
    let err = cri
        .create_container(
            &image,
            &ContainerConfig {
                id: "u1".into(),
                user: Some("nginx".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("user"), "{err}");
    // Nothing was created for the failures.
    assert!(cri.list_containers(&[]).await.unwrap().is_empty());

    // A command that does not exist fails at start, and leaves no task behind.
    let config = ContainerConfig {
        id: "nocmd".into(),
        command: Some(vec!["/nope".into()]),
        ..Default::default()
    };
    cri.create_container(&image, &config).await.unwrap();
    let err = cri
        .start_task("nocmd", &LogTarget::Discard)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nocmd"), "{err}");
    assert!(cri.task("nocmd").await.unwrap().is_none());
    // The same id can start again once fixed: no bundle leaked.
    cri.remove_container("nocmd").await.unwrap();
    assert_nothing_left(&cri, &ns, "nocmd").await;

    // Creating an id twice is a clear conflict.
    let ok = ContainerConfig {
        id: "twice".into(),
        ..Default::default()
    };
    cri.create_container(&image, &ok).await.unwrap();
    let err = cri.create_container(&image, &ok).await.unwrap_err();
    assert_eq!(err.to_string(), "container already exists: twice");
    cri.remove_container("twice").await.unwrap();
    assert_nothing_left(&cri, &ns, "twice").await;
}

/// No container, task, snapshot or cgroup directory of `id` remains.
async fn assert_nothing_left(cri: &Cri, ns: &str, id: &str) {
    assert!(cri.container(id).await.unwrap_err().is_not_found());
    assert!(cri.task(id).await.unwrap().is_none());
    assert!(
        !cri.list_containers(&[])
            .await
            .unwrap()
            .iter()
            .any(|c| c.id == id),
        "container {id} still listed"
    );
    assert!(
        !Cgroups::default().exists(&cgroup_path(ns, id)),
        "cgroup of {id} left behind"
    );
    assert!(
        !cri.snapshot_exists(id).await.unwrap(),
        "snapshot {id} left behind"
    );
}
