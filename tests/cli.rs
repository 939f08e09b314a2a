//! The `orca` CLI against a real server: deploy from service.toml with its
//! progress lines, tables and JSON, logs, scale, and exit code 1 with the
//! API's message on failure.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::server::{OrcaServer, ADMIN, VIEWER};
use serde_json::Value;

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
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying version 1"), "{out}");
    assert!(out.contains("web: version 1 complete, 2/2 ready"), "{out}");
    assert!(
        !out.contains('\r') && !out.contains('\x1b'),
        "control characters in piped output: {out:?}"
    );

    let (code, out, _) = server.cli(VIEWER, &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.starts_with("NAME"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("web") && l.contains("shop") && l.contains("2/2")),
        "{out}"
    );
    let (code, out, _) = server
        .cli(VIEWER, &["status", "--output", "json", "--project", "shop"])
        .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"][0]["running_replicas"], 2);

    let (code, out, _) = server.cli(VIEWER, &["logs", "web", "--tail", "5"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web v1 listening"), "{out}");

    // A reader that is gone ends a command quietly, as SIGPIPE would:
    // exit 141, nothing on stderr, no panic. `logs -f` stops too.
    for args in [
        &["status", "--output", "json"][..],
        &["status"][..],
        &["logs", "web", "-f"][..],
    ] {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        drop(reader);
        let out = Command::new(common::orca_bin())
            .args(args)
            .env("ORCA_API", format!("http://{}", server.addr()))
            .env("ORCA_TOKEN", VIEWER)
            .stdout(std::process::Stdio::from(writer))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
        assert!(err.is_empty(), "{args:?} said: {err}");
    }

    // Redeploying the same files changes nothing.
    let (code, out, _) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web: unchanged"), "{out}");

    let (code, out, _) = server.cli(ADMIN, &["scale", "web", "1"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("web scaled to 1: all ready"), "{out}");
    let (code, out, _) = server.cli(VIEWER, &["nodes"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("node-1"), "{out}");

    // Failures: exit code 1 and the API's message on stderr.
    let (code, _, err) = server.cli(ADMIN, &["scale", "ghost", "1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("service not found: ghost"), "{err}");
    let (code, _, err) = server.cli(VIEWER, &["stop", "web"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("needs deployer"), "{err}");
    let (code, _, err) = server.cli(ADMIN, &["promote", "web"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("no canary"), "{err}");

    let (code, out, _) = server.cli(ADMIN, &["stop", "--all"]).await;
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
    let app_dir = app.path().to_str().unwrap().to_string();
    let (code, _, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 1);
    assert!(err.contains("image not found"), "{err}");
}
