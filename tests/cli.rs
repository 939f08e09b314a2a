//! The `orca` CLI against a real server: deploy from service.toml with its
//! progress lines, tables and JSON, logs, scale, and exit code 1 with the
//! API's message on failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::server::{OrcaServer, ADMIN, VIEWER};
use serde_json::Value;

fn orca(server: &OrcaServer, token: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(common::orca_bin())
        .args(args)
        .env("ORCA_API", format!("http://{}", server.addr()))
        .env("ORCA_TOKEN", token)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_status_logs_scale_from_the_cli() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "cli").await;
    let app = tempfile::tempdir().unwrap();
    let dir = app.path().join("services/shop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("service.toml"),
        format!(
            "[[service]]\nname = \"web\"\nimage = \"{}\"\nreplicas = 2\nstop_grace_secs = 1\nresources = {{ memory = \"64Mi\" }}\n",
            env.image("web:v1")
        ),
    )
    .unwrap();
    let app_dir = app.path().to_str().unwrap().to_string();

    // Not a terminal here: progress comes as plain lines.
    let (code, out, err) = tokio::task::spawn_blocking({
        let server_addr = server.addr();
        let app_dir = app_dir.clone();
        move || {
            let out = Command::new(common::orca_bin())
                .args(["deploy", &app_dir])
                .env("ORCA_API", format!("http://{server_addr}"))
                .env("ORCA_TOKEN", ADMIN)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying"), "{out}");
    assert!(out.contains("web: 2/2 running (running)"), "{out}");
    assert!(
        !out.contains('\r') && !out.contains('\x1b'),
        "control characters in piped output: {out:?}"
    );

    let (code, out, _) = orca(&server, VIEWER, &["status"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("web") && l.contains("shop") && l.contains("2/2")),
        "{out}"
    );
    let (code, out, _) = orca(
        &server,
        VIEWER,
        &["status", "--output", "json", "--project", "shop"],
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"][0]["running_replicas"], 2);

    let (code, out, _) = orca(&server, VIEWER, &["logs", "web", "--tail", "5"]);
    assert_eq!(code, 0);
    assert!(out.contains("web v1 listening"), "{out}");

    // Redeploying the same files changes nothing.
    let (code, out, _) = orca(&server, ADMIN, &["deploy", &app_dir]);
    assert_eq!(code, 0);
    assert!(out.contains("web: unchanged"), "{out}");

    let (code, _, _) = orca(&server, ADMIN, &["scale", "web", "1"]);
    assert_eq!(code, 0);
    let (code, out, _) = orca(&server, VIEWER, &["nodes"]);
    assert_eq!(code, 0);
    assert!(out.contains("node-1"), "{out}");

    // Failures: exit code 1 and the API's message on stderr.
    let (code, _, err) = orca(&server, ADMIN, &["scale", "ghost", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("service not found: ghost"), "{err}");
    let (code, _, err) = orca(&server, VIEWER, &["stop", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("needs deployer"), "{err}");
    let (code, _, err) = orca(&server, ADMIN, &["promote", "web"]);
    assert_eq!(code, 1);
    assert!(err.contains("no canary"), "{err}");

    let (code, out, _) = orca(&server, ADMIN, &["stop", "--all"]);
    assert_eq!(code, 0);
    assert!(out.contains("stopped: web"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_of_a_missing_image_fails_with_its_reason() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "cli-bad").await;
    let app = tempfile::tempdir().unwrap();
    let dir = app.path().join("services/shop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("service.toml"),
        format!(
            "[[service]]\nname = \"web\"\nimage = \"{}\"\n",
            env.image("nope:v9")
        ),
    )
    .unwrap();
    let server_addr = server.addr();
    let app_dir = app.path().to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(common::orca_bin())
            .args(["deploy", &app_dir])
            .env("ORCA_API", format!("http://{server_addr}"))
            .env("ORCA_TOKEN", ADMIN)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("image not found"), "{err}");
}
