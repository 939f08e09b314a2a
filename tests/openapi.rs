//! The OpenAPI document, live: served without a token, naming every route
//! of the seed API; then schemathesis (from PyPI, installed by
//! `tests/env.sh`) fuzzes a live server from that document with an admin
//! token, bounded in examples and time. The bar: no server error (5xx) and
//! no answer outside its documented status, content type, headers or schema.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::server::OrcaServer;
use serde_json::Value;

/// The schemathesis program: `ORCA_TEST_SCHEMATHESIS`, else one on PATH.
fn schemathesis() -> Option<String> {
    let program = std::env::var("ORCA_TEST_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let works = Command::new(&program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if works {
        return Some(program);
    }
    assert!(
        !common::in_ci(),
        "schemathesis is missing under CI (tests/env.sh installs it)"
    );
    eprintln!("SKIPPING the OpenAPI fuzz: no schemathesis (source tests/env.sh)");
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_keeps_to_its_openapi_document_under_fuzzing() {
    let Some(env) = common::env() else { return };
    let Some(program) = schemathesis() else {
        return;
    };
    let server = OrcaServer::start(&env, "openapi").await;

    // Served with no token, and naming the seed API's routes.
    let doc: Value = server
        .client(None)
        .get("/api/v1/openapi.json")
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for (method, path) in [
        ("get", "/api/v1/health"),
        ("get", "/metrics"),
        ("post", "/api/v1/deploy"),
        ("get", "/api/v1/status"),
        ("post", "/api/v1/services/{name}/scale"),
        ("delete", "/api/v1/services/{name}"),
        ("delete", "/api/v1/projects/{project}"),
        ("post", "/api/v1/stop"),
        ("get", "/api/v1/services/{name}/logs"),
        ("post", "/api/v1/services/{name}/promote"),
        ("post", "/api/v1/services/{name}/rollback"),
        ("get", "/api/v1/cluster/info"),
        ("post", "/api/v1/cluster/nodes/{id}/drain"),
        ("post", "/api/v1/cluster/nodes/{id}/undrain"),
        ("post", "/api/v1/webhooks/github"),
        ("get", "/api/v1/webhooks"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }

    // Something to read and change: a running service, a canary, a token.
    let admin = server.admin();
    common::deploy_all_ready(
        &admin,
        serde_json::json!([{ "name": "web", "image": env.image("web:v1"), "port": 8080,
            "replicas": 2, "stop_grace_secs": 1 }]),
    )
    .await;

    let url = format!("http://127.0.0.1:{}", server.port);
    let report = server.dir.path().join("schemathesis");
    let workdir = server.dir.path().to_path_buf();
    let run = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(["run", &format!("{url}/api/v1/openapi.json")])
            .args(["--url", &url])
            .args([
                "--header",
                &format!("Authorization: Bearer {}", common::server::ADMIN),
            ])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
            ])
            // Streams that never end, and the WebSocket.
            .args(["--exclude-operation-id", "events"])
            .args(["--exclude-operation-id", "exec_attach"])
            // `follow=true` streams a replica's log until the client goes,
            // by design: a fuzzer waits for its end and times out.
            // tests/api_server.rs and tests/api_input.rs cover logs.
            .args(["--exclude-operation-id", "logs"])
            // Freezes the store for good, by design (`orca store migrate`):
            // every change after it is a 503. tests/store_migrate.rs
            // covers it.
            .args(["--exclude-operation-id", "store_freeze"])
            .args(["--max-examples", "30", "--max-time", "240"])
            .args(["--request-timeout", "20", "--seed", "7", "--workers", "2"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--suppress-health-check", "all"])
            .args(["--report", "junit", "--report-dir"])
            .arg(&report)
            .env("NO_COLOR", "1")
            // Its cache goes to the server's temp dir, not the repository.
            .current_dir(&workdir)
            .output()
            .unwrap()
    });
    let out = tokio::time::timeout(Duration::from_secs(420), run)
        .await
        .expect("schemathesis ran past 7 minutes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n-- server log --\n{}",
        server.log()
    );
    // It did test: each documented operation but the two left out.
    assert!(text.contains("passed"), "{text}");
    // And the server is still whole.
    let health: Value = admin.get("/api/v1/health").await.unwrap();
    assert_eq!(health["status"], "ok");
}
