//! `orca deploy`, `rollback`, `promote` and `scale` wait for the version
//! the server named, against a real server: a redeploy returns only once the
//! ingress answers the new version from every replica, a reverted rollout
//! exits 1 with the reason, and `--detach` returns at once.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::server::{OrcaServer, ADMIN};
use serde_json::Value;

const DOMAIN: &str = "cli-roll.test";

/// Writes `services/shop/service.toml` for `web` on `image`.
fn write_service(app: &Path, image: &str, extra: &str) {
    let dir = app.join("services/shop");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("service.toml"),
        format!(
            r#"[[service]]
name = "web"
image = "{image}"
replicas = 2
port = 8080
domain = "{DOMAIN}"
stop_grace_secs = 1
readiness = {{ path = "/healthz", interval_secs = 1 }}
{extra}
"#
        ),
    )
    .unwrap();
}

/// Asserts that 20 requests through the ingress, each on its own
/// connection (the ingress takes turns between ready replicas), all
/// succeed and give exactly the bodies `want`.
async fn assert_answers(server: &OrcaServer, want: &[&str]) {
    let mut seen = BTreeSet::new();
    for _ in 0..20 {
        let (status, body) = common::http::get(server.proxy_port, DOMAIN, "/").await;
        seen.insert(format!("{status} {body}"));
    }
    let want: BTreeSet<String> = want.iter().map(|b| format!("200 {b}")).collect();
    assert_eq!(seen, want);
}

/// Asserts the service's rollout is at `version` in `phase`; returns it.
async fn assert_rollout(server: &OrcaServer, version: u64, phase: &str) -> Value {
    let s: Value = server.admin().get("/api/v1/status").await.unwrap();
    let r = s["services"][0]["rollout"].clone();
    assert_eq!(
        (r["version"].as_u64(), r["phase"].as_str()),
        (Some(version), Some(phase)),
        "{r}"
    );
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_waits_for_its_version_and_fails_on_a_revert() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "cli-roll").await;
    let app = tempfile::tempdir().unwrap();
    let app_dir = app.path().to_str().unwrap().to_string();

    write_service(app.path(), &env.image("web:v1"), "");
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying version 1"), "{out}");
    assert!(out.contains("web: version 1 complete, 2/2 ready"), "{out}");

    // v2: returns only when every replica answering is v2.
    write_service(app.path(), &env.image("web:v2"), "");
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying version 2"), "{out}");
    assert!(out.contains("web: version 2 progressing"), "{out}");
    assert!(
        out.contains("web: version 2 complete, 2/2 ready, 0 old"),
        "{out}"
    );
    assert_answers(&server, &["web v2"]).await;
    assert_rollout(&server, 2, "complete").await;

    // A crashing image: reverted, exit 1 with the reason; v2 serves on.
    write_service(app.path(), &env.image("crasher:latest"), "");
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying version 3"), "{out}");
    assert!(
        err.contains("deploy of version 3 failed") && err.contains("reverted to version 2"),
        "{err}"
    );
    assert_rollout(&server, 3, "reverted").await;
    assert_answers(&server, &["web v2"]).await;

    // --detach: back before the rollout is done.
    write_service(
        app.path(),
        &env.image("web:v1"),
        "env = { RELEASE = \"4\" }",
    );
    let (code, out, err) = server.cli(ADMIN, &["deploy", "--detach", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: deploying version 4"), "{out}");
    assert_rollout(&server, 4, "progressing").await;
    // Scale waits for the same version, then says so in a sentence.
    let (code, out, err) = server.cli(ADMIN, &["scale", "web", "3"]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("web: version 4 complete, 3/3 ready"), "{out}");
    assert!(out.contains("web scaled to 3: all ready"), "{out}");
    assert_answers(&server, &["web v1"]).await;

    // Rollback to v2 waits, prints a sentence, and v2 then answers alone.
    let (code, out, err) = server
        .cli(ADMIN, &["rollback", "web", "--version", "2"])
        .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("web rolled back to version 2 (as version 5); every replica ready"),
        "{out}"
    );
    assert!(!out.contains('{'), "raw JSON in: {out}");
    assert_answers(&server, &["web v2"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_deploy_promote_and_rollback_wait_and_print_sentences() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "cli-canary").await;
    let app = tempfile::tempdir().unwrap();
    let app_dir = app.path().to_str().unwrap().to_string();
    write_service(app.path(), &env.image("web:v1"), "");
    let (code, _, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "{err}");

    // A canary deploy is done when its replicas are ready.
    let canary = "deploy = { strategy = \"canary\", canary_weight = 50 }";
    write_service(app.path(), &env.image("web:v2"), canary);
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("web: canary version 2 at 50%, 1/1 ready"),
        "{out}"
    );
    let r = assert_rollout(&server, 2, "canary").await;
    assert_eq!(r["weight"].as_u64(), Some(50));
    assert_answers(&server, &["web v1", "web v2"]).await;

    // Rollback during a canary removes it, and waits for that.
    let (code, out, err) = server.cli(ADMIN, &["rollback", "web"]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("web: canary version 2 removed; version 1 serves; every replica ready"),
        "{out}"
    );
    assert_answers(&server, &["web v1"]).await;

    // A new canary, promoted: waits until every replica runs it.
    write_service(
        app.path(),
        &env.image("web:v2"),
        &format!("{canary}\nenv = {{ A = \"1\" }}"),
    );
    let (code, out, err) = server.cli(ADMIN, &["deploy", &app_dir]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    let (code, out, err) = server.cli(ADMIN, &["promote", "web"]).await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    assert!(
        out.contains("web: version 3 promoted; every replica runs it, ready"),
        "{out}"
    );
    assert_answers(&server, &["web v2"]).await;
    let r = assert_rollout(&server, 3, "complete").await;
    assert_eq!(r["updated"].as_u64(), Some(2));
}
