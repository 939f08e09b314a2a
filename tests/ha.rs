//! A control plane of three servers on a three-member etcd, with two
//! agents, in the lab (every node its own namespace and containerd, etcd's
//! members and the servers on the LAN). One leader at a time; when it is
//! killed, or cut off from etcd while its agents still reach it, another
//! leads within the lease, reads answer throughout on the others, the
//! agents follow the new leader in ascending terms, replicas keep their
//! processes, and a deploy after the failover rolls out.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::ha::LEADER_TTL_SECS;
use common::cluster::{LabCluster, KAWEB};
use serde_json::{json, Value};

/// Agents are nodes 3 and 4; a node gone for long is not rescheduled
/// during the test.
const TIMINGS: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 300";
const AGENTS: [usize; 2] = [3, 4];

fn web(c: &LabCluster, replicas: u32, version: &str) -> Value {
    json!([{ "name": "web", "image": c.image(KAWEB), "replicas": replicas,
             "env": { "VERSION": version } }])
}

/// The PIDs of web's replicas on each agent, sorted.
fn pids(c: &LabCluster) -> Vec<Vec<u32>> {
    AGENTS
        .iter()
        .map(|&i| {
            let mut p = c.pids_on(i, "web");
            p.sort();
            p
        })
        .collect()
}

async fn until_running(c: &LabCluster, n: u64) {
    common::eventually("web running", Duration::from_secs(90), async || {
        let s = c.service("web");
        if s["running_replicas"] == n && s["status"] == "running" {
            Ok(())
        } else {
            Err(format!("{s:#}"))
        }
    })
    .await
}

/// Waits until each agent followed more terms than `than` says (its
/// streams moved to a new leader) and both are ready there.
async fn until_agents_moved(c: &LabCluster, than: &[usize]) {
    common::eventually(
        "the agents on the new leader",
        Duration::from_secs(30),
        async || {
            let terms: Vec<Vec<u64>> = AGENTS.iter().map(|&i| c.terms_followed(i)).collect();
            let moved = terms.iter().zip(than).all(|(now, then)| now.len() > *then);
            let ready = c.nodes().iter().filter(|n| n["state"] == "ready").count();
            if moved && ready == 2 {
                Ok(())
            } else {
                Err(format!("{terms:?} {:?}", c.nodes()))
            }
        },
    )
    .await
}

/// Every term an agent followed is newer than the one before.
fn assert_terms_ascend(c: &LabCluster) -> Vec<Vec<u64>> {
    AGENTS
        .iter()
        .map(|&i| {
            let terms = c.terms_followed(i);
            assert!(
                !terms.is_empty(),
                "node {i} followed no term:\n{}",
                c.log(i)
            );
            assert!(
                terms.windows(2).all(|w| w[0] < w[1]),
                "node {i} followed terms out of order: {terms:?}"
            );
            terms
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_leader_is_replaced_within_its_lease_and_nothing_stops() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_ha(&env, 3, 5, TIMINGS).await;
    let leader = c.until_leader(0, None).await;
    // Every server listed (the list is read every 2 s), one leader.
    common::eventually(
        "three servers listed",
        Duration::from_secs(30),
        async || {
            let info = c.info_on(leader).ok_or("no answer")?;
            let servers = info["servers"].as_array().cloned().unwrap_or_default();
            let leaders = servers.iter().filter(|s| s["leader"] == true).count();
            if servers.len() == 3 && leaders == 1 && servers.iter().all(|s| s["healthy"] == true) {
                Ok(())
            } else {
                Err(format!("{info:#}"))
            }
        },
    )
    .await;
    // Each server's own /metrics says whether it leads.
    let follower = (0..3).find(|&i| i != leader).unwrap();
    for (i, says) in [
        (leader, "\norca_leader 1\n"),
        (follower, "\norca_leader 0\n"),
    ] {
        common::eventually("orca_leader", Duration::from_secs(20), async || {
            let (status, body) = c.get_on(i, "/metrics");
            if body.contains(says) {
                Ok(())
            } else {
                Err(format!(
                    "n{i}: {status} {}",
                    body.lines()
                        .filter(|l| l.contains("leader"))
                        .collect::<Vec<_>>()
                        .join(" | ")
                ))
            }
        })
        .await;
    }

    // A deploy sent to a follower is sent on to the leader and rolls out
    // on the agents.
    c.api_node = follower;
    c.deploy(web(&c, 4, "1"));
    until_running(&c, 4).await;
    let before = pids(&c);
    assert_eq!(before.iter().map(Vec::len).sum::<usize>(), 4, "{before:?}");

    // kill -9 of the leader. The other follower answers reads throughout.
    let other = (0..3).find(|&i| i != leader && i != follower).unwrap();
    c.api_node = other;
    let killed = Instant::now();
    c.kill_server_at(leader);
    let mut reads = 0;
    let new = loop {
        let (status, body) = c.get_on(other, "/api/v1/status");
        assert_eq!(status, 200, "a read during the failover: {body}");
        reads += 1;
        match c.leader_by(other) {
            Some(l) if l != leader => break l,
            _ => {}
        }
        assert!(
            killed.elapsed() < Duration::from_secs(60),
            "no new leader: {:?}",
            c.info_on(other)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let took = killed.elapsed();
    eprintln!("new leader n{new} after {took:?} ({reads} reads answered meanwhile)");
    assert!(
        took < Duration::from_secs(LEADER_TTL_SECS + 2),
        "a new leader took {took:?}"
    );

    // The agents follow the new leader (after their jittered backoff);
    // nothing was restarted.
    c.api_node = new;
    eprintln!("nodes as the new leader starts: {:?}", c.nodes());
    until_agents_moved(&c, &[1, 1]).await;
    let terms = assert_terms_ascend(&c);
    assert!(terms.iter().all(|t| t.len() >= 2), "{terms:?}");
    assert_eq!(pids(&c), before, "replicas restarted by the failover");

    // A deploy after the failover rolls out, through either server.
    c.deploy(web(&c, 4, "2"));
    until_running(&c, 4).await;
    common::eventually(
        "version 2 everywhere",
        Duration::from_secs(90),
        async || {
            let s = c.service("web");
            let v2 = s["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|i| i["version"] == s["version"] && i["state"] == "running")
                .count();
            if s["version"].as_u64() == Some(2) && v2 == 4 && pids(&c) != before {
                Ok(())
            } else {
                Err(format!("{s:#}"))
            }
        },
    )
    .await;

    // The old leader comes back as a follower.
    c.spawn_server_at(leader);
    common::eventually("the old leader back", Duration::from_secs(30), async || {
        let info = c.info_on(leader).ok_or("no answer")?;
        let me = info["servers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == format!("n{leader}"))
            .cloned()
            .unwrap_or_default();
        if me["healthy"] == true && me["leader"] == false {
            Ok(())
        } else {
            Err(format!("{info:#}"))
        }
    })
    .await;
    assert_eq!(c.leader_by(leader), Some(new));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_leading_and_its_agents_move() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start_ha(&env, 3, 5, TIMINGS).await;
    let leader = c.until_leader(0, None).await;
    let other = (0..3).find(|&i| i != leader).unwrap();
    c.api_node = other;
    c.deploy(web(&c, 2, "1"));
    until_running(&c, 2).await;
    let before = pids(&c);
    let first_terms = assert_terms_ascend(&c);

    // Cut from etcd, not from its agents: it stops leading within its
    // lease, another leads, and the agents move to that one.
    c.cut_from_etcd(leader, true);
    let cut = Instant::now();
    let new = c.until_leader(other, Some(leader)).await;
    eprintln!("n{new} leads {:?} after the cut", cut.elapsed());
    common::eventually(
        "the old leader stopped",
        Duration::from_secs(30),
        async || {
            if c.log(leader).contains("leadership lost") {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await;
    let followed: Vec<usize> = first_terms.iter().map(Vec::len).collect();
    until_agents_moved(&c, &followed).await;
    assert_terms_ascend(&c);
    // The cut-off server takes no change: it cannot reach the store.
    let (status, body) = c.get_on(leader, "/api/v1/status");
    assert_eq!(status, 200, "a read on the cut-off server: {body}");
    c.api_node = leader;
    let (status, body) = c.deploy_answer(web(&c, 3, "cut"));
    assert_eq!(status, 503, "{body}");
    c.api_node = new;
    assert_eq!(c.service("web")["replicas"], 2);
    assert_eq!(pids(&c), before, "replicas restarted by the cut");

    // Mended: it follows, and a change through it reaches the leader.
    c.cut_from_etcd(leader, false);
    common::eventually(
        "the old leader following",
        Duration::from_secs(30),
        async || match c.leader_by(leader) {
            Some(l) if l == new => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    c.api_node = leader;
    common::eventually(
        "a change through the old leader",
        Duration::from_secs(30),
        async || match c.deploy_answer(web(&c, 3, "1")) {
            (200, _) => Ok(()),
            (status, body) => Err(format!("{status} {body}")),
        },
    )
    .await;
    c.api_node = new;
    common::eventually("3 replicas", Duration::from_secs(60), async || {
        let n: usize = pids(&c).iter().map(Vec::len).sum();
        if n == 3 {
            Ok(())
        } else {
            Err(format!("{n}"))
        }
    })
    .await;
}
