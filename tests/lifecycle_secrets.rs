//! Secrets: encrypted at rest, resolved into the process environment,
//! absent from every answer and from orca's log, not restarting anything
//! when changed, picked up by a redeploy.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::server::{OrcaServer, ADMIN, DEPLOYER};
use serde_json::{json, Value};

const VALUE: &str = "s3cr3t-value-7f1c";
const NEW_VALUE: &str = "r0tated-value-9a2e";

fn environ(pid: u32) -> String {
    String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/environ")).unwrap())
        .replace('\0', "\n")
}

fn all_files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            {
                return true;
            }
        }
    }
    false
}

async fn running_pid(c: &api::client::ApiClient, version: u64) -> u32 {
    let s = common::wait_for(c, "app", &format!("v{version} running"), |s| {
        s.version == version
            && s.instances.len() == 1
            && s.instances[0].state == api::status::InstanceState::Running
            && s.instances[0].version == version
    })
    .await;
    s.instances[0].pid.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_resolved_and_never_shown() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "secrets").await;
    let c = server.admin();
    let spec = json!({ "services": [{ "name": "app", "image": env.image("logger:latest"),
        "env": { "PASS": "${secrets.DB_PASS}", "PLAIN": "x" }, "stop_grace_secs": 1 }] });

    let e = c
        .post::<_, Value>("/api/v1/deploy", &spec)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown secret \"DB_PASS\""), "{e}");

    // Only admins manage secrets.
    let deployer = server.client(Some(DEPLOYER));
    let e = deployer
        .put::<_, Value>("/api/v1/secrets/DB_PASS", &json!({ "value": VALUE }))
        .await
        .unwrap_err();
    assert!(
        matches!(e, api::client::ClientError::Api { status: 403, .. }),
        "{e:?}"
    );
    let r: Value = c
        .put("/api/v1/secrets/DB_PASS", &json!({ "value": VALUE }))
        .await
        .unwrap();
    assert_eq!(r["stored"], true);
    assert!(!r.to_string().contains(VALUE));
    let list: Value = c.get("/api/v1/secrets").await.unwrap();
    assert_eq!(list["secrets"], json!(["DB_PASS"]));
    let e = c
        .put::<_, Value>("/api/v1/secrets/BAD-NAME", &json!({ "value": "x" }))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid secret name"), "{e}");

    // Resolved into the process environment.
    c.post::<_, Value>("/api/v1/deploy", &spec).await.unwrap();
    let pid = running_pid(&c, 1).await;
    let env_text = environ(pid);
    assert!(env_text.contains(&format!("PASS={VALUE}")), "{env_text}");

    // Nowhere else: answers, versions, orca's log, the store's files.
    let status = c.get_text("/api/v1/status").await.unwrap();
    let versions = c.get_text("/api/v1/services/app/versions").await.unwrap();
    let metrics = c.get_text("/metrics").await.unwrap();
    for text in [&status, &versions, &metrics, &server.log()] {
        assert!(!text.contains(VALUE), "the value leaked: {text}");
    }
    assert!(status.contains("${secrets.DB_PASS}") || !status.contains("PASS"));
    let data = server.dir.path().join("data");
    // The search finds the secret's record (its key is stored in the
    // clear), but not its value.
    assert!(
        all_files_contain(&data.join("db"), b"default/DB_PASS"),
        "the secret's record is not in the sled files searched"
    );
    assert!(
        !all_files_contain(&data.join("db"), VALUE.as_bytes()),
        "plaintext in the sled files"
    );
    let mode = std::fs::metadata(data.join("secrets.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    // Replica logs (which may print a secret) are the owner's alone.
    let mode_of = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode_of(&data.join("logs")), 0o700);
    let logs: Vec<_> = std::fs::read_dir(data.join("logs"))
        .unwrap()
        .flatten()
        .collect();
    assert!(!logs.is_empty());
    for f in logs {
        assert_eq!(mode_of(&f.path()), 0o600, "{}", f.path().display());
    }

    // Changing it restarts nothing; redeploying the same spec picks it up.
    c.put::<_, Value>("/api/v1/secrets/DB_PASS", &json!({ "value": NEW_VALUE }))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(running_pid(&c, 1).await, pid);
    let r: Value = c.post("/api/v1/deploy", &spec).await.unwrap();
    assert_eq!(r["deployed"], json!(["app"]), "{r}");
    let new_pid = running_pid(&c, 2).await;
    assert_ne!(new_pid, pid);
    assert!(environ(new_pid).contains(&format!("PASS={NEW_VALUE}")));
    // An identical redeploy now is a no-op.
    let r: Value = c.post("/api/v1/deploy", &spec).await.unwrap();
    assert_eq!(r["unchanged"], json!(["app"]), "{r}");

    // The CLI imports a .env file.
    let dotenv = server.dir.path().join("prod.env");
    std::fs::write(&dotenv, "# comment\nAPI_KEY=abc123\nexport TOKEN=\"t k\"\n").unwrap();
    common::run(
        std::process::Command::new(common::orca_bin())
            .args(["secrets", "import", "-f", dotenv.to_str().unwrap()])
            .env("ORCA_API", format!("http://{}", server.addr()))
            .env("ORCA_TOKEN", ADMIN),
    );
    let list: Value = c.get("/api/v1/secrets").await.unwrap();
    assert_eq!(list["secrets"], json!(["API_KEY", "DB_PASS", "TOKEN"]));
    c.delete::<Value>("/api/v1/secrets/TOKEN").await.unwrap();
    assert!(c.delete::<Value>("/api/v1/secrets/TOKEN").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_belong_to_a_project_and_its_scoped_deployers() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "secret-scope").await;
    let admin = server.admin();
    for (project, value) in [("shop", VALUE), ("bank", NEW_VALUE)] {
        admin
            .put::<_, Value>(
                "/api/v1/secrets/DB_PASS",
                &json!({ "value": value, "project": project }),
            )
            .await
            .unwrap();
    }
    let list: Value = admin.get("/api/v1/secrets?project=shop").await.unwrap();
    assert_eq!(list["secrets"], json!(["DB_PASS"]));
    let list: Value = admin.get("/api/v1/secrets").await.unwrap();
    assert_eq!(list["secrets"], json!([]), "the default project has none");
    let t: Value = admin
        .post(
            "/api/v1/tokens",
            &json!({ "name": "shop-ci", "role": "deployer", "project": "shop" }),
        )
        .await
        .unwrap();
    let scoped = server.client(Some(t["token"].as_str().unwrap()));
    let unscoped = server.client(Some(DEPLOYER));
    let app = |project: &str| {
        json!({ "services": [{ "name": format!("app-{project}"), "project": project,
            "image": env.image("logger:latest"), "env": { "PASS": "${secrets.DB_PASS}" },
            "stop_grace_secs": 1 }] })
    };
    let status_of = |e: api::client::ClientError| match e {
        api::client::ClientError::Api { status, message } => (status, message),
        other => panic!("{other:?}"),
    };

    // A deployer for every project references no secret.
    let (status, message) = status_of(
        unscoped
            .post::<_, Value>("/api/v1/deploy", &app("shop"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "{message}");
    assert!(message.contains("scoped to project shop"), "{message}");
    // A deployer scoped to shop deploys nothing into bank.
    let (status, message) = status_of(
        scoped
            .post::<_, Value>("/api/v1/deploy", &app("bank"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403, "{message}");
    // ... and gets shop's value in shop (the control), as admins get
    // bank's in bank: each project's own secret.
    scoped
        .post::<_, Value>("/api/v1/deploy", &app("shop"))
        .await
        .unwrap();
    admin
        .post::<_, Value>("/api/v1/deploy", &app("bank"))
        .await
        .unwrap();
    for (project, value) in [("shop", VALUE), ("bank", NEW_VALUE)] {
        let s = common::wait_for(&admin, &format!("app-{project}"), "running", |s| {
            s.instances.first().is_some_and(|i| i.pid.is_some())
        })
        .await;
        let env_text = environ(s.instances[0].pid.unwrap());
        assert!(
            env_text.contains(&format!("PASS={value}")),
            "{project}: {env_text}"
        );
    }
    // A project without the secret cannot name it, whoever deploys.
    let (status, message) = status_of(
        admin
            .post::<_, Value>("/api/v1/deploy", &app("other"))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 400, "{message}");
    assert!(
        message.contains("project other has no such secret"),
        "{message}"
    );
    // The scoped token changes no service of another project.
    let (status, _) = status_of(
        scoped
            .post::<_, Value>("/api/v1/services/app-bank/scale", &json!({ "replicas": 2 }))
            .await
            .unwrap_err(),
    );
    assert_eq!(status, 403);
}
