//! The rollout status shows, through the control plane over a fake node:
//! complete, reverted, and a scale as a rollout of the version that serves.

use std::time::Duration;

use api::ApiRequest;
use serde_json::json;

use super::{call, deploy_req, eventually, eventually_within, plane};
use crate::control::ControlPlane;

fn rollout_of(cp: &ControlPlane) -> Option<api::status::Rollout> {
    cp.status(None).services[0].rollout.clone()
}

#[tokio::test]
async fn status_rollout_follows_each_version_through_complete_and_revert() {
    use api::status::RolloutPhase;
    let (cp, agent) = plane().await;
    let (_, body) = call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v1", "replicas": 2 }])),
    )
    .await
    .unwrap();
    assert_eq!(body["versions"], json!({ "web": 1 }));
    let r = rollout_of(&cp).unwrap();
    assert_eq!((r.version, r.phase), (1, RolloutPhase::Progressing));
    // Without a readiness check, a replica is ready once it ran 2 s.
    eventually_within("v1 complete", Duration::from_secs(15), || {
        rollout_of(&cp).is_some_and(|r| r.phase == RolloutPhase::Complete && r.updated == 2)
    })
    .await;

    // v2 crashes: the rollout is reverted and status names version 2.
    let (_, body) = call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v2", "replicas": 2 }])),
    )
    .await
    .unwrap();
    assert_eq!(body["versions"], json!({ "web": 2 }));
    eventually("a v2 replica", || {
        agent.instances().iter().any(|i| i.version == 2)
    })
    .await;
    let r = rollout_of(&cp).unwrap();
    assert_eq!((r.version, r.phase), (2, RolloutPhase::Progressing));
    let new = agent
        .instances()
        .into_iter()
        .find(|i| i.version == 2)
        .unwrap();
    agent.crash(&new.id, 3, false).await;
    eventually("reverted", || {
        rollout_of(&cp).is_some_and(|r| r.phase == RolloutPhase::Reverted)
    })
    .await;
    let r = rollout_of(&cp).unwrap();
    assert_eq!(r.version, 2);
    assert!(r.message.contains("reverted to version 1"), "{}", r.message);
    assert_eq!(cp.status(None).services[0].version, 1);

    // The next change (a scale) is a rollout of the version that serves.
    call(
        &cp,
        ApiRequest::Scale {
            name: "web".into(),
            replicas: 3,
        },
    )
    .await
    .unwrap();
    let r = rollout_of(&cp).unwrap();
    assert_eq!(
        (r.version, r.phase, r.total),
        (1, RolloutPhase::Progressing, 3)
    );
    eventually_within("scaled and complete", Duration::from_secs(15), || {
        rollout_of(&cp).is_some_and(|r| r.phase == RolloutPhase::Complete && r.updated == 3)
    })
    .await;

    call(&cp, ApiRequest::StopService { name: "web".into() })
        .await
        .unwrap();
    assert!(
        rollout_of(&cp).is_none(),
        "a stopped service has no rollout"
    );
}
