//! No lost writes and no split brain, on three servers over a three-member
//! etcd with two agents, in the lab. Each round a client sends deploys
//! with a unique value to every server in turn (from an agent's
//! namespace, so it survives every fault), while the test does one of:
//! kill -9 the leader, cut the leader off from etcd (not from its agents),
//! or kill -9 and restart an etcd member. At the end of each round every
//! acknowledged deploy is in the service's history, in the order it was
//! acknowledged, and the record is at least the last one. Over the whole
//! run, no two servers led at once (their logs tell when each term began
//! and ended; a killed server's term ends at its kill), and each agent
//! followed the terms in ascending order.
//!
//! 10 rounds; 200 with `ORCA_SOAK=1`.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use common::cluster::ha::post_at;
use common::cluster::{LabCluster, KAWEB};
use serde_json::Value;

const TIMINGS: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 300";
const AGENTS: [usize; 2] = [3, 4];

/// The JSON in an HTTP body (chunked or not).
fn json_in(body: &str) -> Value {
    match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => serde_json::from_str(&body[a..=b]).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

/// Deploys of `service` with SEQ = 0, 1, ... to each server in turn, one
/// every 150 ms, until `stop`: the versions acknowledged, in order.
fn writer(
    c: &LabCluster,
    service: String,
    image: String,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    let netns = std::path::PathBuf::from(format!("/run/netns/{}", c.lab.nodes[AGENTS[0]].netns));
    let servers: Vec<_> = (0..3).map(|i| c.lab.nodes[i].address).collect();
    std::thread::spawn(move || {
        common::cluster::load::enter(&netns);
        let mut acked = Vec::new();
        let mut k = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let body = serde_json::json!({ "services": [{ "name": service, "image": image,
                "replicas": 0, "env": { "SEQ": k.to_string() } }] })
            .to_string();
            let (status, answer) = post_at(servers[k as usize % 3], "/api/v1/deploy", &body);
            if status == 200 {
                let v = json_in(&answer)["versions"][&service].as_u64();
                acked.push(v.unwrap_or_else(|| panic!("no version in {answer}")));
            }
            k += 1;
            std::thread::sleep(Duration::from_millis(150));
        }
        acked
    })
}

/// A term as a server's log tells it: (server, term, began, ended).
type Term = (usize, u64, SystemTime, Option<SystemTime>);

fn stamp(line: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339(line.split_whitespace().next()?).ok()
}

/// The terms server `i` led, from its log; `kills` ends one left open.
fn terms_of(c: &LabCluster, i: usize, kills: &[SystemTime]) -> Vec<Term> {
    let mut out: Vec<Term> = Vec::new();
    for line in c.log(i).lines() {
        let Some(at) = stamp(line) else { continue };
        if line.contains("leading the control plane") {
            let term = line
                .split("term=")
                .nth(1)
                .and_then(|t| t.split_whitespace().next())
                .and_then(|t| t.parse().ok())
                .unwrap();
            out.push((i, term, at, None));
        } else if line.contains("leadership lost") {
            if let Some(open) = out.last_mut().filter(|t| t.3.is_none()) {
                open.3 = Some(at);
            }
        }
    }
    // A term still open when a later one began was ended by a kill.
    let n = out.len();
    for k in 0..n {
        if out[k].3.is_none() {
            let next = out.get(k + 1).map(|t| t.2);
            out[k].3 = kills
                .iter()
                .copied()
                .filter(|t| *t > out[k].2 && next.is_none_or(|n| *t < n))
                .min();
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_faults_and_one_server_leads_at_a_time() {
    let Some(env) = common::env() else { return };
    let rounds = if std::env::var("ORCA_SOAK").is_ok_and(|v| v == "1") {
        200
    } else {
        10
    };
    let mut c = LabCluster::start_ha(&env, 3, 5, TIMINGS).await;
    let image = c.image(KAWEB);
    let mut kills = Vec::new();
    let mut total_acked = 0;
    for round in 0..rounds {
        let leader = c.until_leader(c.api_node, None).await;
        let other = (0..3).find(|&i| i != leader).unwrap();
        c.api_node = other;
        let service = format!("h{round}");
        let stop = Arc::new(AtomicBool::new(false));
        let writes = writer(&c, service.clone(), image.clone(), stop.clone());
        tokio::time::sleep(Duration::from_millis(800)).await;
        match round % 3 {
            0 => {
                kills.push(SystemTime::now());
                c.kill_server_at(leader);
                c.until_leader(other, Some(leader)).await;
                c.spawn_server_at(leader);
            }
            1 => {
                c.cut_from_etcd(leader, true);
                c.until_leader(other, Some(leader)).await;
                c.cut_from_etcd(leader, false);
            }
            _ => {
                let member = (round / 3) % 3;
                c.kill_etcd_member(member);
                tokio::time::sleep(Duration::from_secs(2)).await;
                c.restart_etcd_member(member);
                c.until_etcd_healthy(member).await;
            }
        }
        // Writes go on through the new leader for a while.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.store(true, Ordering::Relaxed);
        let acked = writes.join().unwrap();
        assert!(
            acked.len() >= 5,
            "round {round}: only {} writes acknowledged",
            acked.len()
        );
        assert!(
            acked.windows(2).all(|w| w[0] < w[1]),
            "round {round}: versions acknowledged out of order: {acked:?}"
        );
        let leader = c.until_leader(c.api_node, None).await;
        c.api_node = leader;
        let (status, body) = c.get_on(leader, &format!("/api/v1/services/{service}/versions"));
        assert_eq!(status, 200, "{body}");
        let listed: Vec<u64> = {
            let v: Value = serde_json::from_str(&body).unwrap();
            let list = v
                .as_array()
                .cloned()
                .or_else(|| v["versions"].as_array().cloned())
                .unwrap();
            list.iter().filter_map(|x| x["version"].as_u64()).collect()
        };
        for v in &acked {
            assert!(
                listed.contains(v),
                "round {round}: acknowledged version {v} lost: {listed:?}"
            );
        }
        let now = c.service(&service)["version"].as_u64().unwrap();
        assert!(
            now >= *acked.last().unwrap(),
            "round {round}: at {now}, acked {acked:?}"
        );
        total_acked += acked.len();
    }

    // No two servers led at once.
    let mut terms: Vec<Term> = (0..3).flat_map(|i| terms_of(&c, i, &kills)).collect();
    terms.sort_by_key(|t| t.2);
    for w in terms.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        let ended =
            a.3.unwrap_or_else(|| panic!("term {} of n{} never ended but {} began", a.1, a.0, b.1));
        assert!(
            ended <= b.2,
            "n{} led term {} until {ended:?}, after n{} began term {} at {:?}",
            a.0,
            a.1,
            b.0,
            b.1,
            b.2
        );
        assert!(a.1 < b.1, "terms out of order: {terms:?}");
    }
    for &i in &AGENTS {
        let followed = c.terms_followed(i);
        assert!(
            followed.windows(2).all(|w| w[0] < w[1]),
            "n{i}: {followed:?}"
        );
    }
    eprintln!(
        "{rounds} rounds, {total_acked} acknowledged writes, {} terms; agents followed {:?} terms",
        terms.len(),
        AGENTS
            .iter()
            .map(|&i| c.terms_followed(i).len())
            .collect::<Vec<_>>()
    );
}
