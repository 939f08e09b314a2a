//! `POST /api/v1/services/{name}/exec` and `orca exec` on a real server:
//! the command runs in a real replica (its hostname is the replica's id),
//! output and exit code come back, a missing program answers 127 with the
//! runtime's message, a timeout kills it, output past 1 MiB is cut and
//! said so, and unknown services, instances and other projects' tokens are
//! refused. Replicas on other nodes: `tests/cluster.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::client::ClientError;
use api::status::ExecResponse;
use common::server::{OrcaServer, ADMIN, DEPLOYER, VIEWER};
use serde_json::{json, Value};

async fn exec(server: &OrcaServer, body: Value) -> Result<ExecResponse, ClientError> {
    server
        .client(Some(DEPLOYER))
        .post("/api/v1/services/web/exec", &body)
        .await
}

/// A replica's hostname: `web.1.3fa2c0` runs as `web-1`.
fn hostname_of(id: &str) -> String {
    let mut parts = id.split('.');
    format!("{}-{}", parts.next().unwrap(), parts.next().unwrap())
}

fn status_of(r: Result<ExecResponse, ClientError>) -> u16 {
    match r {
        Err(ClientError::Api { status, .. }) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_a_replica_and_answers_its_output_and_exit_code() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "exec").await;
    let status = common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "web", "project": "shop", "image": env.image("web:v1"), "replicas": 2, "port": 8080, "stop_grace_secs": 1 }]),
    )
    .await;
    let ids: Vec<String> = status.services[0]
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();

    // Each replica by id: its hostname (`<service>-<slot>`) proves where it ran.
    for id in &ids {
        let out = exec(&server, json!({ "command": ["hostname"], "instance": id }))
            .await
            .unwrap();
        assert_eq!(out.instance, *id);
        assert_eq!(
            (out.stdout.trim(), out.exit_code),
            (hostname_of(id).as_str(), 0)
        );
    }
    // No instance: a ready one.
    let out = exec(
        &server,
        json!({ "command": ["sh", "-c", "echo out; echo err >&2; exit 3"] }),
    )
    .await
    .unwrap();
    assert!(ids.contains(&out.instance), "{out:?}");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );

    // A program that does not exist: 127 and the runtime's words, not a 500.
    let out = exec(&server, json!({ "command": ["no-such-program"] }))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127, "{out:?}");
    assert!(out.stderr.contains("no-such-program"), "{out:?}");

    // The timeout kills it.
    let started = Instant::now();
    let out = exec(
        &server,
        json!({ "command": ["sleep", "30"], "timeout_secs": 1 }),
    )
    .await
    .unwrap();
    assert!(out.timed_out && out.exit_code == 137, "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Output past 1 MiB is cut, and the answer says so; the command still
    // ends on its own (it is not cut off by a closed pipe).
    let out = exec(
        &server,
        json!({ "command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2"] }),
    )
    .await
    .unwrap();
    assert!(out.truncated, "not marked cut");
    assert_eq!(out.stdout.len(), 1024 * 1024);
    assert_eq!((out.exit_code, out.stderr.as_str()), (0, "done\n"));

    // Refusals: unknown service and instance 404, bad input 400, a viewer
    // 403, a deployer of another project 403.
    let c = server.client(Some(DEPLOYER));
    let r = c
        .post::<Value, ExecResponse>("/api/v1/services/nope/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 404);
    let r = exec(
        &server,
        json!({ "command": ["ls"], "instance": "web.9.abcdef" }),
    )
    .await;
    assert_eq!(status_of(r), 404);
    for bad in [
        json!({ "command": [] }),
        json!({ "command": ["ls"], "timeout_secs": 0 }),
        json!({ "command": ["ls"], "instance": "../etc" }),
        json!({ "command": ["ls"], "shell": true }),
    ] {
        assert_eq!(status_of(exec(&server, bad.clone()).await), 400, "{bad}");
    }
    let r = server
        .client(Some(VIEWER))
        .post::<Value, ExecResponse>("/api/v1/services/web/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 403);
    let other: Value = server
        .admin()
        .post(
            "/api/v1/tokens",
            &json!({ "name": "blog-ci", "role": "deployer", "project": "blog" }),
        )
        .await
        .unwrap();
    let r = server
        .client(other["token"].as_str())
        .post::<Value, ExecResponse>("/api/v1/services/web/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 403);

    // The CLI: output on stdout and stderr, the command's exit code as its own.
    let (code, out, err) = server
        .cli(
            ADMIN,
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo to-out; echo to-err >&2; exit 4",
            ],
        )
        .await;
    assert_eq!((code, out.as_str()), (4, "to-out\n"), "{err}");
    assert!(err.contains("to-err"), "{err}");
    let (code, out, _) = server
        .cli(
            ADMIN,
            &["exec", "web", "--instance", &ids[1], "--", "hostname"],
        )
        .await;
    assert_eq!((code, out.trim()), (0, hostname_of(&ids[1]).as_str()));
    let (code, _, err) = server.cli(ADMIN, &["exec", "nope", "--", "ls"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("service not found"), "{err}");
}
