//! Replicas on a node that cannot be reached, over fake nodes: shown as
//! `unknown` with what was last known, never counted as running, and the
//! surplus when the node returns is the replicas that came back.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use api::status::InstanceState;
use serde_json::json;

use super::eventually_within;
use super::nodes::{deploy, fast, Cluster, LONG};
use crate::agent::fake::FakeAgent;
use crate::agent::ProcessState;

fn running_ids(c: &Cluster, node: usize) -> BTreeSet<String> {
    c.nodes[node]
        .instances()
        .into_iter()
        .filter(|i| i.service == "web" && i.state == ProcessState::Running)
        .map(|i| i.id)
        .collect()
}

#[tokio::test]
async fn replicas_on_a_lost_node_are_unknown_and_the_returning_ones_go() {
    let c = Cluster::start(vec![FakeAgent::named("n1"), FakeAgent::named("n2")], fast()).await;
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 6 }])).await;
    eventually_within("2/2/2", LONG, || c.count("web") == [2, 2, 2]).await;
    let on_n2 = running_ids(&c, 2);
    c.cut("n2").await;
    // Until the replacements run, and after: never more than 6 counted.
    let start = Instant::now();
    loop {
        let s = &c.cp.status(None).services[0];
        assert!(
            s.running_replicas <= 6,
            "{} running of 6",
            s.running_replicas
        );
        let unknown: Vec<_> = s
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Unknown)
            .collect();
        let done = c.count("web")[..2].iter().sum::<usize>() == 6 && s.running_replicas == 6;
        if done {
            assert_eq!(unknown.len(), 2, "{:?}", s.instances);
            for i in unknown {
                assert!(on_n2.contains(&i.id));
                assert_eq!(i.last_state, Some(InstanceState::Running));
                assert!(i.last_seen.is_some(), "when n2 was last heard from");
            }
            assert!(
                s.message
                    .as_deref()
                    .is_some_and(|m| m.contains("2 replicas unknown")),
                "{:?}",
                s.message
            );
            let metrics = c.cp.inner().metrics.render(&c.cp).await;
            assert!(
                metrics.contains(
                    "orca_instances{project=\"default\",service=\"web\",status=\"unknown\"} 2"
                ),
                "{metrics}"
            );
            break;
        }
        assert!(start.elapsed() < LONG, "not replaced: {:?}", c.count("web"));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let serving: BTreeSet<String> = running_ids(&c, 0)
        .union(&running_ids(&c, 1))
        .cloned()
        .collect();
    assert_eq!(serving.len(), 6);
    // n2 comes back with its 2 replicas: those are the surplus.
    c.mend(2).await;
    let back = Instant::now();
    eventually_within("n2's replicas stopped", Duration::from_secs(10), || {
        c.count("web") == [3, 3, 0]
    })
    .await;
    assert!(back.elapsed() < Duration::from_secs(10));
    let after: BTreeSet<String> = running_ids(&c, 0)
        .union(&running_ids(&c, 1))
        .cloned()
        .collect();
    assert_eq!(after, serving, "the replicas that served meanwhile stay");
    let s = &c.cp.status(None).services[0];
    assert_eq!(s.running_replicas, 6);
    assert!(s
        .instances
        .iter()
        .all(|i| i.state == InstanceState::Running));
    let metrics = c.cp.inner().metrics.render(&c.cp).await;
    assert!(!metrics.contains("status=\"unknown\""), "{metrics}");
}

#[tokio::test]
async fn a_settled_version_does_not_fail_its_deadline_while_a_node_is_away() {
    use api::status::RolloutPhase;
    let c = Cluster::start(vec![FakeAgent::named("n1")], fast()).await;
    deploy(
        &c,
        json!([{ "name": "db", "image": "x", "replicas": 1,
            "placement": { "node": "n1", "reschedule_after_secs": 0 },
            "deploy": { "progress_deadline_secs": 1 } }]),
    )
    .await;
    eventually_within("complete", LONG, || {
        c.cp.status(None).services[0]
            .rollout
            .as_ref()
            .is_some_and(|r| r.phase == RolloutPhase::Complete)
    })
    .await;
    c.cut("n1").await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let s = &c.cp.status(None).services[0];
    assert_eq!(s.instances[0].state, InstanceState::Unknown);
    assert_eq!(s.running_replicas, 0);
    assert_eq!(s.status, api::status::ServiceState::Degraded, "not pending");
    let r = s.rollout.as_ref().unwrap();
    assert_ne!(r.phase, RolloutPhase::Failed, "{}", r.message);
    assert_eq!(r.updated, 0);
}
