//! Images that try to make orca read what it must not while it looks up
//! their user by name: a FIFO, a device node, a link out to the host's
//! own /etc/passwd, an oversized file, a lower layer's `etc -> /etc`
//! under an upper layer's empty `etc/` with a user only the host has. Each fails with a clear reason,
//! orca stays healthy, and the control image (a plain /etc/passwd) runs as
//! the user it names.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::OrcaServer;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_account_files_fail_clearly_and_the_control_runs() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "hostile").await;
    let c = server.admin();
    let kinds = [
        ("fifo", "is not a regular file"),
        ("device", "is not a regular file"),
        // Inside the image's root the link climbs to `/` and names itself
        // again; read on the host, it would have found "daemon" and run.
        ("escape", "too many levels of symbolic links"),
        ("big", "more than the 1048576 read"),
        // The lower layer's `etc -> /etc` under the upper layer's empty
        // `etc/`: the merged view has no /etc/passwd, so `_apt`, a name
        // only the host knows (uid 42 there), is no user of the image.
        ("shadowed", "no user \"_apt\""),
    ];
    let mut services: Vec<Value> = kinds
        .iter()
        .map(|(kind, _)| json!({ "name": format!("h-{kind}"), "image": env.image(&format!("hostile:{kind}")), "stop_grace_secs": 1 }))
        .collect();
    services
        .push(json!({ "name": "h-ok", "image": env.image("hostile:ok"), "stop_grace_secs": 1 }));
    let r: Value = c
        .post("/api/v1/deploy", &json!({ "services": services }))
        .await
        .unwrap();
    assert_eq!(r["deployed"].as_array().unwrap().len(), 6, "{r}");

    for (kind, reason) in kinds {
        let s = common::wait_for(&c, &format!("h-{kind}"), "a failed start", |s| {
            s.rollout
                .as_ref()
                .is_some_and(|r| r.message.contains(reason))
        })
        .await;
        assert!(
            s.instances
                .iter()
                .all(|i| i.state != api::status::InstanceState::Running),
            "{s:#?}"
        );
    }
    // The control: a plain file, the user it names, uid 1000.
    let s = common::wait_for(&c, "h-ok", "running", |s| {
        s.instances.first().is_some_and(|i| i.pid.is_some())
    })
    .await;
    let pid = s.instances[0].pid.unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid.split_whitespace().nth(1) == Some("1000"), "{uid}");

    // orca answered throughout and still does, promptly.
    let health = tokio::time::timeout(Duration::from_secs(2), c.get::<Value>("/api/v1/health"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(health["status"], "ok", "{health}");
}
