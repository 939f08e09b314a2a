//! Bad input to volumes, files and devices over real HTTP: each field's
//! mistakes get a clear 400 (or 403 where privilege is missing, 404 for
//! what does not exist), and nothing is created for a request that fails;
//! the same request made right is accepted (the control).

#![allow(clippy::unwrap_used)]

mod common;

use api::client::ClientError;
use common::server::{OrcaServer, DEPLOYER};
use serde_json::{json, Value};

fn err_of(e: ClientError) -> (u16, String) {
    match e {
        ClientError::Api { status, message } => (status, message),
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_volumes_files_and_devices_are_refused_plainly() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "volinput").await;
    let admin = server.admin();
    let deployer = server.client(Some(DEPLOYER));
    let image = env.image("stateful:v1");
    let with = |field: &str, value: Value| {
        let mut s = json!({ "name": "db", "image": image, "stop_grace_secs": 1 });
        s[field] = value;
        json!({ "services": [s] })
    };
    let cases: Vec<(&str, Value, u16, &str)> = vec![
        ("volumes", json!(["Bad_Name:/data"]), 400, "DNS label"),
        ("volumes", json!(["data:relative"]), 400, "absolute"),
        ("volumes", json!(["data:/a/../etc"]), 400, "'..'"),
        ("volumes", json!(["data:/proc/self"]), 400, "/proc"),
        ("volumes", json!(["data:/sys"]), 400, "/sys"),
        ("volumes", json!(["a:/data", "b:/data"]), 400, "two entries"),
        (
            "volumes",
            json!([{ "source": "a", "target": "/a", "owner": 1 }]),
            400,
            "unknown field",
        ),
        (
            "volumes",
            json!([{ "type": "tmpfs", "target": "/t", "size": "lots" }]),
            400,
            "volumes",
        ),
        ("volumes", json!(["/srv/x:/x"]), 403, "bind mount"),
        (
            "files",
            json!([{ "target": "/a" }]),
            400,
            "content or a secret",
        ),
        (
            "files",
            json!([{ "target": "/a", "secret": "../K" }]),
            400,
            "must match",
        ),
        (
            "files",
            json!([{ "target": "/a", "secret": "NOPE" }]),
            400,
            "unknown secret",
        ),
        (
            "files",
            json!([{ "target": "/a", "content": "x", "mode": "8" }]),
            400,
            "octal",
        ),
        ("devices", json!(["dev/ttyUSB0"]), 400, "absolute path"),
        (
            "devices",
            json!(["/dev/../etc/passwd"]),
            400,
            "absolute path",
        ),
        ("devices", json!(["/dev/ttyUSB0"]), 403, "admin"),
    ];
    for (field, value, status, says) in cases {
        let client = if status == 403 { &deployer } else { &admin };
        let (got, message) = err_of(
            client
                .post::<_, Value>("/api/v1/deploy", &with(field, value.clone()))
                .await
                .unwrap_err(),
        );
        assert_eq!(got, status, "{field} {value}: {message}");
        assert!(message.contains(says), "{field} {value}: {message}");
    }
    // Nothing was created.
    let s: Value = admin.get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"], json!([]));
    let v: Value = admin.get("/api/v1/volumes").await.unwrap();
    assert_eq!(v["volumes"], json!([]));
    assert!(!server
        .dir
        .path()
        .join("data/volumes")
        .join("default")
        .exists());

    // The volume routes.
    for (path, status) in [
        ("/api/v1/volumes?project=A_B", 400),
        ("/api/v1/volumes?color=red", 400),
        ("/api/v1/volumes/default/ghost/backup", 404),
    ] {
        let (got, message) = err_of(admin.get::<Value>(path).await.unwrap_err());
        assert_eq!(got, status, "{path}: {message}");
    }
    let (got, _) = err_of(
        admin
            .delete::<Value>("/api/v1/volumes/default/Bad_Name")
            .await
            .unwrap_err(),
    );
    assert_eq!(got, 400);
    let (got, message) = err_of(
        admin
            .post::<_, Value>(
                "/api/v1/volumes/default/ghost/move",
                &json!({ "node": "n9" }),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(got, 404, "{message}");
    let (got, message) = err_of(
        admin
            .post::<_, Value>(
                "/api/v1/volumes/default/ghost/move",
                &json!({ "nod": "n9" }),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(got, 400, "{message}");

    // The control: the same spec, made right, is deployed.
    let good = with(
        "volumes",
        json!(["data:/data", { "type": "tmpfs", "target": "/t", "size": "1Mi" }]),
    );
    let r: Value = deployer.post("/api/v1/deploy", &good).await.unwrap();
    assert_eq!(r["deployed"], json!(["db"]), "{r}");
    let _: Value = admin.delete("/api/v1/services/db").await.unwrap();
}
