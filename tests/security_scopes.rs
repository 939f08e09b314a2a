//! The second security review's rules on a real server: a token scoped to
//! one project reads and changes only that project (status, events, logs,
//! versions, exec, webhooks), secret references are plain names of the
//! service's own project, and privileged spec fields are the admin's.
//! Every refusal has its positive control: the same request by a token
//! that may make it succeeds.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use api::client::{ApiClient, ClientError};
use common::server::{OrcaServer, DEPLOYER, VIEWER};
use serde_json::{json, Value};

fn status_of<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Deploys one service (as `client`) and waits until its replica runs.
async fn deploy_running(client: &ApiClient, spec: Value) {
    let name = spec["name"].as_str().unwrap().to_string();
    client
        .post::<_, Value>("/api/v1/deploy", &json!({ "services": [spec] }))
        .await
        .unwrap();
    common::wait_for(client, &name, "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_token_reads_and_changes_only_its_project() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "scopes").await;
    let admin = server.admin();
    let logger = env.image("logger:latest");
    for project in ["shop", "bank"] {
        let spec = json!({ "name": format!("app-{project}"), "project": project, "image": logger, "stop_grace_secs": 1 });
        deploy_running(&admin, spec).await;
    }
    let (shop_viewer, shop_token) = server.scoped_token("shop-view", "viewer", "shop").await;
    let (shop_ci, _) = server.scoped_token("shop-ci", "deployer", "shop").await;
    let viewer = server.client(Some(VIEWER));

    // Reads of another project's service: 403; of its own, and by an
    // unscoped viewer: 200.
    for path in ["logs?tail=5", "versions"] {
        let (status, message) = status_of(
            shop_viewer
                .get::<Value>(&format!("/api/v1/services/app-bank/{path}"))
                .await,
        );
        assert_eq!(status, 403, "{path}: {message}");
        assert!(message.contains("scoped to project shop"), "{message}");
        if path == "versions" {
            shop_viewer
                .get::<Value>(&format!("/api/v1/services/app-shop/{path}"))
                .await
                .unwrap();
            viewer
                .get::<Value>(&format!("/api/v1/services/app-bank/{path}"))
                .await
                .unwrap();
        } else {
            shop_viewer
                .get_text(&format!("/api/v1/services/app-shop/{path}"))
                .await
                .unwrap();
            viewer
                .get_text(&format!("/api/v1/services/app-bank/{path}"))
                .await
                .unwrap();
        }
    }
    // Changes: exec, scale, promote, rollback, stop of bank's: 403.
    let exec = json!({ "command": ["true"] });
    for (path, body) in [
        ("exec", &exec),
        ("scale", &json!({ "replicas": 2 })),
        ("promote", &json!({})),
        ("rollback", &json!({})),
        ("run", &json!({})),
    ] {
        let (status, message) = status_of(
            shop_ci
                .post::<_, Value>(&format!("/api/v1/services/app-bank/{path}"), body)
                .await,
        );
        assert_eq!(status, 403, "{path}: {message}");
    }
    let (status, _) = status_of(shop_ci.delete::<Value>("/api/v1/services/app-bank").await);
    assert_eq!(status, 403);
    let out: Value = shop_ci
        .post("/api/v1/services/app-shop/exec", &exec)
        .await
        .unwrap();
    assert_eq!(out["exit_code"], 0, "{out}");
    // Positive control for run: shop's own job starts a run by shop's token.
    let job = json!({ "name": "job-shop", "project": "shop", "image": logger, "command": ["true"], "restart": "never" });
    shop_ci
        .post::<_, Value>("/api/v1/deploy", &json!({ "services": [job] }))
        .await
        .unwrap();
    common::wait_for(&admin, "job-shop", "completed", |s| {
        s.status == api::status::ServiceState::Completed
    })
    .await;
    let run: Value = shop_ci
        .post("/api/v1/services/job-shop/run", &json!({}))
        .await
        .unwrap();
    assert_eq!(run["run"], 2, "{run}");

    // Status lists only shop's services; asking for bank's is a 403.
    let status: Value = shop_viewer.get("/api/v1/status").await.unwrap();
    let names: Vec<&str> = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["app-shop", "job-shop"], "{status}");
    let (code, _) = status_of(
        shop_viewer
            .get::<Value>("/api/v1/status?project=bank")
            .await,
    );
    assert_eq!(code, 403);
    let all: Value = viewer.get("/api/v1/status").await.unwrap();
    assert_eq!(all["services"].as_array().unwrap().len(), 3, "{all}");

    // Events: only shop's, however they are asked for.
    let (code, _) = status_of(
        shop_viewer
            .stream("/api/v1/events?project=bank", |_| {
                std::ops::ControlFlow::Break(())
            })
            .await,
    );
    assert_eq!(code, 403);
    let mut events = common::events::EventStream::open(server.port, &shop_token, "", None).await;
    admin
        .post::<_, Value>("/api/v1/services/app-bank/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
    admin
        .post::<_, Value>("/api/v1/services/app-shop/scale", &json!({ "replicas": 2 }))
        .await
        .unwrap();
    events
        .until("shop scaled", Duration::from_secs(30), |e| {
            e.kind == api::events::EventKind::Scaled && e.service.as_deref() == Some("app-shop")
        })
        .await;
    assert!(
        events
            .seen
            .iter()
            .all(|(_, e)| e.project.as_deref() == Some("shop")),
        "{:#?}",
        events.seen
    );

    // Webhooks: bank's is neither listed nor deleted by shop's token; one
    // is registered only for a service of shop.
    let hook = |service: &str| json!({ "repo": "o/r", "service": service, "branch": "main", "secret": "a-long-secret" });
    let bank_hook: Value = admin
        .post("/api/v1/webhooks", &hook("app-bank"))
        .await
        .unwrap();
    let bank_id = bank_hook["id"].as_str().unwrap();
    let (code, _) = status_of(
        shop_ci
            .post::<_, Value>("/api/v1/webhooks", &hook("app-bank"))
            .await,
    );
    assert_eq!(code, 403);
    let (code, _) = status_of(
        shop_ci
            .post::<_, Value>("/api/v1/webhooks", &hook("nothing"))
            .await,
    );
    assert_eq!(code, 404);
    let shop_hook: Value = shop_ci
        .post("/api/v1/webhooks", &hook("app-shop"))
        .await
        .unwrap();
    let listed: Value = shop_viewer.get("/api/v1/webhooks").await.unwrap();
    let ids: Vec<&str> = listed["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [shop_hook["id"].as_str().unwrap()], "{listed}");
    let (code, _) = status_of(
        shop_ci
            .delete::<Value>(&format!("/api/v1/webhooks/{bank_id}"))
            .await,
    );
    assert_eq!(code, 403);
    let listed: Value = viewer.get("/api/v1/webhooks").await.unwrap();
    assert_eq!(listed["webhooks"].as_array().unwrap().len(), 2, "{listed}");
    admin
        .delete::<Value>(&format!("/api/v1/webhooks/{bank_id}"))
        .await
        .unwrap();

    // A scoped token makes no other token.
    let (scoped_admin, _) = server.scoped_token("shop-admin", "admin", "shop").await;
    let (code, _) = status_of(
        scoped_admin
            .post::<_, Value>(
                "/api/v1/tokens",
                &json!({ "name": "root", "role": "admin" }),
            )
            .await,
    );
    assert_eq!(code, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_named_plainly_and_privilege_is_the_admins() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "privilege").await;
    let admin = server.admin();
    admin
        .put::<_, Value>(
            "/api/v1/secrets/BANKKEY",
            &json!({ "value": "bank-only-value", "project": "bank" }),
        )
        .await
        .unwrap();
    admin
        .put::<_, Value>(
            "/api/v1/secrets/OWNKEY",
            &json!({ "value": "default-value" }),
        )
        .await
        .unwrap();
    let (default_ci, _) = server
        .scoped_token("default-ci", "deployer", "default")
        .await;
    let logger = env.image("logger:latest");
    let with_env = |value: &str| json!({ "services": [{ "name": "reader", "image": logger, "env": { "P": value }, "stop_grace_secs": 1 }] });
    for (name, says) in [
        ("${secrets.bank/BANKKEY}", "bank/BANKKEY"),
        ("${secrets.../bank/BANKKEY}", "must match"),
        ("${secrets.BANKKEY}", "project default has no such secret"),
    ] {
        let (code, message) = status_of(
            default_ci
                .post::<_, Value>("/api/v1/deploy", &with_env(name))
                .await,
        );
        assert_eq!(code, 400, "{name}: {message}");
        assert!(message.contains(says), "{name}: {message}");
    }
    // Positive control: its own project's secret, by its plain name.
    default_ci
        .post::<_, Value>("/api/v1/deploy", &with_env("${secrets.OWNKEY}"))
        .await
        .unwrap();

    // Privileged fields: a deployer gets a 403 naming the field; the same
    // spec by an admin is accepted and runs.
    let deployer = server.client(Some(DEPLOYER));
    let confined = |name: &str, security: Value| json!({ "services": [{ "name": name, "image": logger, "security": security, "stop_grace_secs": 1 }] });
    for (security, field) in [
        (
            json!({ "cap_add": ["SYS_ADMIN"] }),
            "security.cap_add SYS_ADMIN",
        ),
        (json!({ "cap_add": ["ALL"] }), "security.cap_add ALL"),
        (
            json!({ "seccomp": "unconfined" }),
            "security.seccomp unconfined",
        ),
    ] {
        let (code, message) = status_of(
            deployer
                .post::<_, Value>("/api/v1/deploy", &confined("priv", security.clone()))
                .await,
        );
        assert_eq!(code, 403, "{message}");
        assert!(message.contains(field), "{message}");
        assert!(admin
            .get::<Value>("/api/v1/services/priv/versions")
            .await
            .is_err());
    }
    // NET_RAW is Docker's default set: a deployer's to add.
    deployer
        .post::<_, Value>(
            "/api/v1/deploy",
            &confined("raw", json!({ "cap_add": ["NET_RAW"] })),
        )
        .await
        .unwrap();
    deploy_running(
        &admin,
        json!({ "name": "priv", "image": logger, "security": { "cap_add": ["SYS_ADMIN"], "seccomp": "unconfined" }, "stop_grace_secs": 1 }),
    )
    .await;

    // A published port below 1024 is the node's own (ssh on 22): a
    // deployer's deploy is a 403 naming it and leaves nothing behind; a
    // port from 1024 up is the deployer's, and the low one the admin's.
    let web = env.image("kaweb:v1");
    let published = |name: &str, port: u16| json!({ "services": [{ "name": name, "image": web, "port": 8080, "ports": [format!("{port}:8080")], "stop_grace_secs": 1 }] });
    let low = common::free_port_below(1024);
    let (code, message) = status_of(
        deployer
            .post::<_, Value>("/api/v1/deploy", &published("low", low))
            .await,
    );
    assert_eq!(code, 403, "{message}");
    assert!(
        message.contains(&format!("ports {low}/tcp (below 1024)")),
        "{message}"
    );
    assert!(admin
        .get::<Value>("/api/v1/services/low/versions")
        .await
        .is_err());
    deployer
        .post::<_, Value>("/api/v1/deploy", &published("high", common::free_port()))
        .await
        .unwrap();
    admin
        .post::<_, Value>("/api/v1/deploy", &published("low", low))
        .await
        .unwrap();
    common::eventually(
        "the admin's low port answers",
        Duration::from_secs(60),
        async || match common::http::get(low, "x", "/host").await {
            (200, body) if !body.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}
