//! Jobs, dependencies and schedules on a real node: a job that completes
//! is not restarted and shows each replica's exit code; a failed one under
//! `never` stays failed, one under `on-failure` is retried until it
//! passes; `orca run` starts a run (409 while one goes); a dependent waits,
//! saying for what, and starts only once its dependencies hold; a failed
//! dependency leaves it pending; cycles and unknown names are refused; a
//! schedule every minute runs twice, skips a run while one still goes, and
//! after a kill -9 across a due time runs that one once.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::client::ApiClient;
use common::server::OrcaServer;
use serde_json::{json, Value};

async fn service(c: &ApiClient, name: &str) -> Value {
    let s: Value = c.get("/api/v1/status").await.unwrap();
    s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("{name} not in status: {s}"))
}

/// Waits until `name`'s status passes `ok`, up to `secs`.
async fn until(c: &ApiClient, name: &str, secs: u64, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let s = service(c, name).await;
        if ok(&s) {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} never got there: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_of(r: Result<Value, api::client::ClientError>) -> (u16, String) {
    match r {
        Err(api::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn sh(script: &str) -> Value {
    json!(["sh", "-c", script])
}

async fn deploy(c: &ApiClient, services: Value) -> Value {
    c.post("/api/v1/deploy", &json!({ "services": services }))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_complete_fail_retry_and_run_again() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "jobs").await;
    let c = server.admin();
    let image = env.image("web:v1");
    let r = deploy(
        &c,
        json!([
            { "name": "once", "image": image, "replicas": 2, "restart": "never",
              "command": sh("echo done; exit 0") },
            { "name": "fails", "image": image, "restart": "never", "command": sh("exit 3") },
            // Fails the first time, passes the second (the container's own
            // filesystem keeps the marker across the restart).
            { "name": "retry", "image": image, "restart": "on-failure",
              "command": sh("if [ -f /ran-once ]; then exit 0; fi; touch /ran-once; exit 1") },
            { "name": "web", "image": image },
        ]),
    )
    .await;
    assert_eq!(r["errors"], json!([]), "{r}");

    let once = until(&c, "once", 60, |s| s["status"] == "completed").await;
    assert_eq!(once["job"]["exit_codes"], json!([0, 0]), "{once:#}");
    assert_eq!(once["job"]["last_exit_code"], 0);
    assert_eq!(once["job"]["run"], 1);
    assert_eq!(once["rollout"]["phase"], "complete", "{once:#}");
    for i in once["instances"].as_array().unwrap() {
        assert_eq!(i["state"], "exited", "{once:#}");
        assert_eq!(i["exit_code"], 0);
        assert_eq!(i["run"], 1);
    }
    let fails = until(&c, "fails", 60, |s| s["status"] == "failed").await;
    assert_eq!(fails["job"]["last_exit_code"], 3, "{fails:#}");
    assert_eq!(
        fails["instances"][0]["restarts"], 0,
        "never is never restarted"
    );
    let retry = until(&c, "retry", 60, |s| s["status"] == "completed").await;
    assert_eq!(retry["instances"][0]["restarts"], 1, "{retry:#}");
    assert_eq!(retry["job"]["exit_codes"], json!([0]));

    // Nothing is restarted once over: the same containers, still exited.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let again = service(&c, "once").await;
    assert_eq!(again["status"], "completed");
    assert_eq!(
        again["instances"], once["instances"],
        "the job was touched again"
    );
    let fails_again = service(&c, "fails").await;
    assert_eq!(fails_again["instances"][0]["restarts"], 0);

    // orca run: a new run with new replicas.
    let (code, out, err) = server
        .cli(
            common::server::ADMIN,
            &["run", "once", "--wait", "--timeout", "60"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("run 2 ended: exit codes [0, 0]"), "{out}");
    let once2 = service(&c, "once").await;
    assert_eq!(once2["job"]["run"], 2);
    assert_eq!(once2["job"]["trigger"], "orca run (admin)", "{once2:#}");
    assert!(once2["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["run"] == 2));
    let (code, out, err) = server
        .cli(common::server::ADMIN, &["run", "fails", "--wait"])
        .await;
    assert_ne!(code, 0, "a failed run fails the command: {out}{err}");
    assert!(err.contains("run 2 failed"), "{err}");

    // A run still going: 409; a service that is no job: 400.
    let r = deploy(
        &c,
        json!([{ "name": "sleepy", "image": image, "restart": "never", "stop_grace_secs": 1,
                 "command": sh("sleep 4") }]),
    )
    .await;
    assert_eq!(r["errors"], json!([]), "{r}");
    until(&c, "sleepy", 30, |s| s["status"] == "running").await;
    let (status, msg) = error_of(c.post("/api/v1/services/sleepy/run", &json!({})).await);
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("run 1 of sleepy is still going"), "{msg}");
    let (status, msg) = error_of(c.post("/api/v1/services/web/run", &json!({})).await);
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("web is not a job"), "{msg}");
    until(&c, "sleepy", 30, |s| s["status"] == "completed").await;
    let r: Value = c
        .post("/api/v1/services/sleepy/run", &json!({}))
        .await
        .unwrap();
    assert_eq!(r["run"], 2, "after the run ended, a new one starts: {r}");

    // A new version of an unscheduled job runs it again.
    let r = deploy(
        &c,
        json!([{ "name": "once", "image": image, "replicas": 2, "restart": "never",
                 "command": sh("echo v2; exit 0") }]),
    )
    .await;
    assert_eq!(r["deployed"], json!(["once"]), "{r}");
    let v2 = until(&c, "once", 60, |s| {
        s["job"]["run"] == 3 && s["status"] == "completed"
    })
    .await;
    assert!(v2["instances"]
        .as_array()
        .unwrap()
        .iter()
        .all(|i| i["version"] == 2 && i["run"] == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dependencies_wait_in_order_and_say_why() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "deps").await;
    let c = server.admin();
    let image = env.image("web:v1");
    // Refused before anything is deployed: a cycle, an unknown name, a
    // completed condition on a service that never ends.
    let (status, errors) = error_of(
        c.post(
            "/api/v1/deploy",
            &json!({ "services": [
                { "name": "a", "image": image, "depends_on": ["b"] },
                { "name": "b", "image": image, "depends_on": ["a"] },
                { "name": "c", "image": image, "depends_on": ["nothere"] },
                { "name": "d", "image": image, "depends_on": { "b": "completed" } },
            ]}),
        )
        .await,
    );
    assert_eq!(status, 400, "{errors}");
    assert!(errors.contains("cycle: a -> b -> a"), "{errors}");
    assert!(
        errors.contains("c: depends_on nothere: no such service"),
        "{errors}"
    );
    assert!(
        errors.contains("d: depends_on b: completed needs a job"),
        "{errors}"
    );
    let s: Value = c.get("/api/v1/status").await.unwrap();
    assert_eq!(s["services"], json!([]), "nothing deployed: {s}");

    // db becomes ready after 2 s; migrate takes 3 s; app waits for both.
    // web:v1's httpd serves /healthz.
    let r = deploy(
        &c,
        json!([
            { "name": "app", "image": image, "stop_grace_secs": 1,
              "depends_on": { "db": "healthy", "migrate": "completed" } },
            { "name": "migrate", "image": image, "restart": "on-failure",
              "depends_on": { "db": "healthy" }, "command": sh("sleep 3; exit 0") },
            { "name": "db", "image": image, "port": 8080, "stop_grace_secs": 1,
              "readiness": { "path": "/healthz", "interval_secs": 1, "initial_delay_secs": 2 } },
            { "name": "broken", "image": image, "restart": "never", "command": sh("exit 1") },
            { "name": "after-broken", "image": image, "depends_on": { "broken": "completed" } },
        ]),
    )
    .await;
    assert_eq!(r["errors"], json!([]), "{r}");
    let mut saw_waiting = false;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let app = service(&c, "app").await;
        let migrate = service(&c, "migrate").await;
        let db = service(&c, "db").await;
        let app_started = !app["instances"].as_array().unwrap().is_empty();
        let migrate_started = !migrate["instances"].as_array().unwrap().is_empty();
        if app_started {
            assert_eq!(
                migrate["status"], "completed",
                "app started before migrate ended: {migrate:#}"
            );
        }
        if migrate_started {
            let ready = db["instances"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["healthy"] == true);
            assert!(
                ready || db["status"] == "running",
                "migrate started before db was healthy: {db:#}"
            );
        }
        if !app_started {
            let msg = app["message"].as_str().unwrap_or_default();
            assert_eq!(app["status"], "pending", "{app:#}");
            saw_waiting |= msg.contains("waiting for db to be healthy")
                || msg.contains("waiting for migrate to be completed");
        }
        if app["status"] == "running" {
            break;
        }
        assert!(Instant::now() < deadline, "app never ran: {app:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(saw_waiting, "the waiting message was never seen");

    // A dependency that failed leaves its dependent pending, and says so;
    // no replica of it was ever started.
    until(&c, "broken", 30, |s| s["status"] == "failed").await;
    let after = until(&c, "after-broken", 10, |s| {
        s["message"]
            .as_str()
            .is_some_and(|m| m.contains("waiting for broken to be completed: its run 1 failed"))
    })
    .await;
    assert_eq!(after["status"], "pending", "{after:#}");
    assert_eq!(after["instances"], json!([]));
    // Fixed by a run that passes: the dependent starts.
    let r = deploy(
        &c,
        json!([{ "name": "broken", "image": image, "restart": "never", "command": sh("exit 0") }]),
    )
    .await;
    assert_eq!(r["deployed"], json!(["broken"]), "{r}");
    until(&c, "after-broken", 60, |s| s["status"] == "running").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_run_skip_and_catch_up_after_a_restart() {
    let Some(env) = common::env() else { return };
    let mut server = OrcaServer::start(&env, "cron").await;
    let c = server.admin();
    let image = env.image("web:v1");
    // Start just after a minute turns, so each due time is well apart
    // from the test's own steps.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tokio::time::sleep(Duration::from_secs((62 - secs % 60) % 60)).await;
    let r = deploy(
        &c,
        json!([
            { "name": "tick", "image": image, "schedule": "* * * * *", "restart": "never",
              "command": sh("echo tick; exit 0") },
            // Runs 70 s: the next due time comes while it still runs.
            { "name": "slow", "image": image, "schedule": "* * * * *", "timezone": "Europe/Berlin",
              "stop_grace_secs": 1, "command": sh("sleep 70") },
        ]),
    )
    .await;
    assert_eq!(r["errors"], json!([]), "{r}");
    let tick = service(&c, "tick").await;
    assert_eq!(
        tick["status"], "pending",
        "a schedule waits for its time: {tick:#}"
    );
    assert_eq!(tick["job"]["run"], 0);
    assert!(tick["job"]["next_run"].as_str().is_some(), "{tick:#}");

    let tick = until(&c, "tick", 75, |s| {
        s["job"]["run"] == 1 && s["status"] == "completed"
    })
    .await;
    let trigger = tick["job"]["trigger"].as_str().unwrap();
    assert!(trigger.starts_with("its schedule"), "{trigger}");
    until(&c, "tick", 75, |s| {
        s["job"]["run"] == 2 && s["status"] == "completed"
    })
    .await;
    // slow's first run still went when the second was due: skipped.
    let slow = until(&c, "slow", 20, |s| s["job"]["skipped"] == 1).await;
    assert_eq!(slow["job"]["run"], 1, "{slow:#}");
    assert_eq!(slow["status"], "running");

    // kill -9 across the next due time: on its return the missed run runs,
    // once.
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    tokio::time::sleep(Duration::from_secs((57 - secs % 60 + 60) % 60)).await;
    server.kill9();
    tokio::time::sleep(Duration::from_secs(8)).await;
    server.spawn().await;
    let c = server.admin();
    let tick = until(&c, "tick", 20, |s| s["job"]["run"] == 3).await;
    assert!(tick["job"]["trigger"]
        .as_str()
        .unwrap()
        .starts_with("its schedule"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tick = service(&c, "tick").await;
    assert_eq!(
        tick["job"]["run"], 3,
        "the missed run ran more than once: {tick:#}"
    );
}
