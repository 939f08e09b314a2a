//! Nodes that fail and nodes taken out, in the lab: an agent killed, a
//! link cut, a drain, a node removed, and the server killed mid-drain.
//! Every count is read from the nodes' own containerds.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::cluster::load::Load;
use common::cluster::{LabCluster, KAWEB};
use serde_json::json;

const LONG: Duration = Duration::from_secs(90);
/// Short timings, so that the scenarios take seconds.
const FAST: &str = "heartbeat_grace_secs = 3\nreschedule_after_secs = 5";

async fn until(what: &str, f: impl Fn() -> Result<(), String>) {
    common::eventually(what, LONG, async || f()).await
}

fn total(c: &LabCluster, service: &str) -> usize {
    c.spread(service).iter().sum()
}

/// How long a surplus of a returning node's replicas may live (its
/// service stops with a 1 s grace).
const SURPLUS_BOUND: Duration = Duration::from_secs(10);

/// Samples `service`'s replicas in every containerd every 200 ms for
/// `window` while a node returns: asserts the count never passes `want` by
/// more than `surplus`, is above `want` for at most [`SURPLUS_BOUND`] in
/// one stretch, and ends (and stays, for the last 3 s) at `want`.
async fn settles_without_lasting_duplicates(
    c: &LabCluster,
    service: &str,
    want: usize,
    surplus: usize,
    window: Duration,
) {
    let started = Instant::now();
    let mut samples: Vec<(Duration, usize)> = Vec::new();
    while started.elapsed() < window {
        samples.push((started.elapsed(), total(c, service)));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let most = samples.iter().map(|(_, n)| *n).max().unwrap_or(0);
    assert!(
        most <= want + surplus,
        "{most} replicas at once: {samples:?}"
    );
    let mut longest = Duration::ZERO;
    let mut above_since: Option<Duration> = None;
    for (at, n) in &samples {
        match (above_since, *n > want) {
            (None, true) => above_since = Some(*at),
            (Some(since), false) => {
                longest = longest.max(*at - since);
                above_since = None;
            }
            _ => {}
        }
    }
    assert!(
        above_since.is_none(),
        "still above {want} at the end: {samples:?}"
    );
    assert!(
        longest <= SURPLUS_BOUND,
        "a surplus lived {longest:?}: {samples:?}"
    );
    let tail: Vec<usize> = samples
        .iter()
        .filter(|(at, _)| *at + Duration::from_secs(3) >= window)
        .map(|(_, n)| *n)
        .collect();
    assert!(
        tail.iter().all(|n| *n == want),
        "not settled at {want}: {samples:?}"
    );
    eprintln!("{service}: at most {most}, surplus for at most {longest:?}");
}

/// Polls status while node `away` is gone until `service`'s replicas are
/// replaced elsewhere (`replaced` on the containerds' spread): status
/// never counts more running replicas than `want`, and then shows the
/// away node's `on_away` replicas as `unknown`, with their last state and
/// when the node was last seen.
async fn honest_while_away(
    c: &LabCluster,
    service: &str,
    want: u64,
    away: &str,
    on_away: usize,
    replaced: impl Fn(&[usize]) -> bool,
) {
    let started = Instant::now();
    loop {
        let s = c.service(service);
        let running = s["running_replicas"].as_u64().unwrap();
        assert!(running <= want, "{running} running of {want}: {s:#}");
        let unknown: Vec<&serde_json::Value> = s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["node"] == away)
            .collect();
        if replaced(&c.spread(service)) && running == want {
            assert_eq!(unknown.len(), on_away, "{s:#}");
            for i in unknown {
                assert_eq!(i["state"], "unknown", "{i:#}");
                assert_eq!(i["last_state"], "running", "{i:#}");
                assert!(i["last_seen"].is_string(), "{i:#}");
            }
            return;
        }
        assert!(started.elapsed() < LONG, "not replaced: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The pids of `service` on nodes `nodes`, sorted.
fn pids(c: &LabCluster, service: &str, nodes: &[usize]) -> Vec<u32> {
    let mut all: Vec<u32> = nodes.iter().flat_map(|i| c.pids_on(*i, service)).collect();
    all.sort();
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_agent_or_a_cut_link_moves_work_and_the_return_settles_at_the_count() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, FAST).await;
    c.deploy(json!([
        { "name": "web", "image": c.image(KAWEB), "replicas": 6, "stop_grace_secs": 1 },
        // On n1 on purpose, never placed elsewhere: the agent alone keeps
        // it while its link is down.
        { "name": "pinned", "image": c.image(KAWEB), "replicas": 1,
          "placement": { "node": "n1", "reschedule_after_secs": 0 } },
    ]));
    c.until_spread("web", "2/2/2", |s| s == [2, 2, 2]).await;
    c.until_spread("pinned", "pinned on n1", |s| s == [0, 1, 0])
        .await;

    // kill -9 of n2's agent: its replica runs on; the node is disconnected
    // within the grace, and the replica is placed elsewhere after
    // reschedule_after.
    c.kill_agent(2);
    let killed = Instant::now();
    until("n2 disconnected", || {
        match c.node("n2").unwrap()["state"].as_str() {
            Some("disconnected") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        killed.elapsed() < Duration::from_secs(3 + 2),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(
        c.running_on(2, "web"),
        2,
        "the replicas run on without their agent"
    );
    honest_while_away(&c, "web", 6, "n2", 2, |s| s[0] + s[1] == 6 && s[2] == 2).await;
    assert!(
        killed.elapsed() >= Duration::from_secs(5),
        "not before reschedule_after: {:?}\n{}",
        killed.elapsed(),
        c.log(0)
    );
    // Back: the surplus (the replicas that came back) goes soon, and
    // every containerd together holds 6.
    let serving = pids(&c, "web", &[0, 1]);
    c.spawn_agent(2, None);
    settles_without_lasting_duplicates(&c, "web", 6, 2, Duration::from_secs(15)).await;
    assert_eq!(pids(&c, "web", &[0, 1]), serving, "those that served stay");

    // n1's link goes down. The agent keeps its replica running and
    // restarts it itself when it crashes.
    c.lab.set_link(1, false);
    let cut = Instant::now();
    until("n1 disconnected", || {
        match c.node("n1").unwrap()["state"].as_str() {
            Some("disconnected") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(
        cut.elapsed() < Duration::from_secs(3 + 3),
        "{:?}",
        cut.elapsed()
    );
    let old_pids = c.pids_on(1, "pinned");
    assert_eq!(old_pids.len(), 1, "pinned runs on n1");
    c.kill_replicas(1, "pinned");
    until("pinned restarted on n1 by its agent", || {
        let pids = c.pids_on(1, "pinned");
        if pids.len() == 1 && !old_pids.contains(&pids[0]) {
            Ok(())
        } else {
            Err(format!("{pids:?} (was {old_pids:?})"))
        }
    })
    .await;
    let on_n1 = c.running_on(1, "web");
    honest_while_away(&c, "web", 6, "n1", on_n1, |s| s[0] + s[2] == 6).await;
    let serving = pids(&c, "web", &[0, 2]);
    c.lab.set_link(1, true);
    settles_without_lasting_duplicates(&c, "web", 6, on_n1, Duration::from_secs(15)).await;
    assert_eq!(pids(&c, "web", &[0, 2]), serving, "those that served stay");

    // The event stream told of each node's loss and return.
    use api::events::EventKind::*;
    let events = c.events();
    for (kind, node) in [
        (NodeDisconnected, "n2"),
        (NodeConnected, "n2"),
        (NodeDisconnected, "n1"),
        (NodeConnected, "n1"),
    ] {
        assert!(
            LabCluster::has_node_event(&events, kind, node),
            "no {kind:?} of {node}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_every_replica_with_the_count_held_then_undrain_and_removal() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, FAST).await;
    let image = c.image(KAWEB);
    c.deploy(json!([
        { "name": "api", "image": image, "replicas": 3 },
        { "name": "web", "image": image, "replicas": 3, "port": 8080, "domain": "drain.test",
          "stop_grace_secs": 1, "readiness": { "path": "/healthz", "interval_secs": 1 } },
    ]));
    until("spread", || {
        let (a, w) = (c.spread("api"), c.spread("web"));
        if a == [1, 1, 1] && w == [1, 1, 1] {
            Ok(())
        } else {
            Err(format!("{a:?} {w:?}"))
        }
    })
    .await;
    // Every replica counts as ready after 2 s.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // The drain under continuous load through n2's ingress: not one
    // request fails while web's replica leaves n1.
    Load::until_served(&c, 2, "drain.test", LONG).await;
    let load = Load::start(&c, 2, "drain.test");

    let out = c.orca(&["drain", "n1", "--deadline", "10m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("what has not moved by"), "{said}");
    let n1 = c.node("n1").unwrap();
    assert_eq!(n1["drained"], true);
    assert!(n1["drain"]["remaining"].as_u64().unwrap() > 0, "{n1}");
    assert!(n1["drain"]["deadline"].is_string(), "{n1}");
    // The count holds all along; both services leave n1.
    let start = Instant::now();
    loop {
        let (a, w) = (c.spread("api"), c.spread("web"));
        let (ta, tw): (usize, usize) = (a.iter().sum(), w.iter().sum());
        assert!(
            ta >= 3 && tw >= 3,
            "below the count mid-drain: api {a:?} web {w:?}"
        );
        if a[1] == 0 && w[1] == 0 && ta == 3 && tw == 3 {
            break;
        }
        assert!(start.elapsed() < LONG, "drain stuck: api {a:?} web {w:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let seen = load.finish().await;
    assert!(
        seen.failures.is_empty() && seen.ok() > 0,
        "failed requests during the drain: {:?} ({} ok)",
        seen.failures,
        seen.ok()
    );
    eprintln!("drain of n1 under load through n2's ingress: {seen:?}");
    until("the drain shown done", || {
        let n1 = c.node("n1").unwrap();
        if n1["drain"].is_null() && n1["drained"] == true {
            Ok(())
        } else {
            Err(n1.to_string())
        }
    })
    .await;
    let out = c.orca(&["nodes"]);
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        table.contains("HEARTBEAT") && table.contains("n1"),
        "{table}"
    );

    // Undrain: n1 takes replicas again, nothing moves back by itself.
    assert!(c.orca(&["undrain", "n1"]).status.success());
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(c.spread("web")[1], 0);
    assert_eq!(c.node("n1").unwrap()["drained"], false);

    // Removal of n2: its replicas go to the others; its agent is refused.
    let out = c.orca(&["node", "rm", "n2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(c.node("n2").is_none());
    until("n2's replicas elsewhere", || {
        let (a, w) = (c.spread("api"), c.spread("web"));
        if a[0] + a[1] == 3 && w[0] + w[1] == 3 {
            Ok(())
        } else {
            Err(format!("{a:?} {w:?}"))
        }
    })
    .await;
    until("n2's agent refused", || {
        let log = c.log(2);
        if log.contains("the server refused this node") {
            Ok(())
        } else {
            Err(log)
        }
    })
    .await;
    // Its agent stopped what it ran there: the work runs on the others.
    until("nothing left on n2", || {
        let left = c.running_on(2, "web") + c.running_on(2, "api");
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} replicas still on n2"))
        }
    })
    .await;
    c.kill_agent(2);

    // The event stream told of each step.
    use api::events::EventKind::*;
    let events = c.events();
    for (kind, node) in [
        (NodeDrained, "n1"),
        (NodeUndrained, "n1"),
        (NodeRemoved, "n2"),
    ] {
        assert!(
            LabCluster::has_node_event(&events, kind, node),
            "no {kind:?} of {node}: {events:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_killed_mid_drain_converges_after_its_restart() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, FAST).await;
    c.deploy(json!([{ "name": "web", "image": c.image(KAWEB), "replicas": 6 }]));
    c.until_spread("web", "2/2/2", |s| s == [2, 2, 2]).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(c.orca(&["drain", "n2"]).status.success());
    // The first replacement is up: the drain is under way. The kill comes
    // at a random moment of it.
    c.until_spread("web", "the drain started", |s| {
        s.iter().sum::<usize>() > 6 || s[2] < 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(u64::from(common::rand_u32() % 1500))).await;
    c.kill_server();
    c.restart_server().await;
    // The agents come back by themselves; the drain goes on and ends.
    c.wait_ready(3).await;
    assert_eq!(c.node("n2").unwrap()["drained"], true, "drain state kept");
    c.until_spread("web", "drained, at the count", |s| {
        s[2] == 0 && s.iter().sum::<usize>() == 6
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = c.spread("web");
    assert_eq!((s[2], s.iter().sum::<usize>()), (0, 6), "{s:?}");
    let status = c.service("web");
    assert_eq!(status["running_replicas"], 6, "{status}");
    // No duplicate and nothing orphaned: each node holds one container,
    // task, network namespace and veth per replica status places there,
    // and the addresses are all different.
    let instances = status["instances"].as_array().unwrap();
    let ips: std::collections::BTreeSet<&str> =
        instances.iter().filter_map(|i| i["ip"].as_str()).collect();
    assert_eq!(ips.len(), 6, "{status}");
    for (i, node) in ["n0", "n1", "n2"].iter().enumerate() {
        let here = instances.iter().filter(|x| x["node"] == *node).count();
        until(&format!("{node} holds {here} of everything"), || {
            let held = c.holdings(i);
            if held == (here, here, here, here) {
                Ok(())
            } else {
                Err(format!("{held:?}"))
            }
        })
        .await;
    }
}
