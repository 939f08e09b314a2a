//! Crashed replicas restarted in place: the first at once, then with
//! backoff, as status shows.

use std::time::Duration;

use serde_json::json;

use super::{call, deploy_req, eventually, plane, running};

#[tokio::test]
async fn crashes_restart_with_backoff_and_show_in_status() {
    let (cp, agent) = plane().await;
    call(
        &cp,
        deploy_req(json!([{ "name": "api", "image": "app:v1" }])),
    )
    .await
    .unwrap();
    eventually("a replica", || running(&agent, "api") == 1).await;
    let id = agent.instances()[0].id.clone();

    agent.crash(&id, 137, true).await;
    // The first crash: restarted at once, in place.
    eventually("first restart", || {
        cp.status(None).services[0].instances[0].restarts == 1
    })
    .await;
    assert_eq!(running(&agent, "api"), 1);
    assert_eq!(agent.instances()[0].id, id, "restarted in place");
    let s = &cp.status(None).services[0];
    assert_eq!(s.instances[0].last_exit.as_ref().unwrap().code, 137);
    assert!(s.instances[0].last_exit.as_ref().unwrap().oom_killed);

    // A second crash: backoff from here (1 s), and crash-looping, so not
    // `running` even while it runs.
    agent.crash(&id, 3, false).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(running(&agent, "api"), 0, "restarted before its backoff");
    let s = &cp.status(None).services[0];
    assert_eq!(s.instances[0].state, api::status::InstanceState::Backoff);
    assert_eq!(serde_json::to_value(s.status).unwrap(), "failed");
    eventually("second restart", || running(&agent, "api") == 1).await;
    let s = &cp.status(None).services[0];
    assert_eq!(serde_json::to_value(s.status).unwrap(), "degraded");
    assert_eq!(s.instances[0].restarts, 2);
    let restarts = agent
        .calls()
        .iter()
        .filter(|c| c.starts_with("restart"))
        .count();
    assert_eq!(restarts, 2);
}
