//! The control plane over several fake nodes: spread, placement, resource
//! fit, a node lost and back, drain and removal. The scheduler and the
//! reconciliation of a returning node's replicas, on fakes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::ApiRequest;
use serde_json::json;

use super::{call, deploy_req, eventually_within, running};
use crate::agent::fake::FakeAgent;
use crate::agent::NodeAgent;
use crate::control::{ControlPlane, Settings};
use crate::metrics::Metrics;
use crate::nodes::Hello;
use crate::store::{MemStore, Repo};

pub(super) struct Cluster {
    pub(super) cp: ControlPlane,
    pub(super) nodes: Vec<Arc<FakeAgent>>,
    /// Nodes whose heartbeats stop (their link is down).
    silent: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

fn hello(agent: &FakeAgent, labels: &[(&str, &str)]) -> Hello {
    Hello {
        node_id: agent.node_id().to_string(),
        address: format!("10.9.0.{}", agent.node_id().len()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        capacity: agent.capacity(),
        version: "test".into(),
        overlay: None,
        https: false,
        access: Default::default(),
    }
}

impl Cluster {
    /// The server's node "n0" and `agents` more, the last of them labelled
    /// zone=edge.
    pub(super) async fn start(agents: Vec<FakeAgent>, settings: Settings) -> Cluster {
        Self::start_with(true, agents, settings).await
    }

    /// The server's "n0" and agents "n1" and "n2" (zone=edge), default settings.
    async fn three() -> Cluster {
        Self::start(
            vec![FakeAgent::named("n1"), FakeAgent::named("n2")],
            Settings::default(),
        )
        .await
    }

    /// With `workloads` false, "n0" is there (to keep indexes) but is not
    /// the server's node: it never joins.
    async fn start_with(workloads: bool, agents: Vec<FakeAgent>, settings: Settings) -> Cluster {
        let local = Arc::new(FakeAgent::named("n0"));
        let cp = ControlPlane::new(
            Repo::new(Arc::new(MemStore::default())),
            workloads.then(|| local.clone() as Arc<dyn NodeAgent>),
            settings,
            Metrics::new().unwrap(),
            None,
            None,
        )
        .unwrap();
        cp.start().await.unwrap();
        let mut nodes = vec![local];
        let count = agents.len();
        for (i, agent) in agents.into_iter().enumerate() {
            let agent = Arc::new(agent);
            let labels: &[(&str, &str)] = if i + 1 == count {
                &[("zone", "edge")]
            } else {
                &[]
            };
            connect(&cp, &agent, labels).await;
            nodes.push(agent);
        }
        let silent = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        tokio::spawn(heartbeats(cp.clone(), nodes.clone(), silent.clone()));
        Cluster { cp, nodes, silent }
    }

    /// Cuts a node's link: no heartbeat, and its connection ends.
    pub(super) async fn cut(&self, id: &str) {
        self.silent.lock().unwrap().insert(id.to_string());
        let session = self.cp.nodes().snapshot().get(id).unwrap().session;
        self.cp.nodes().gone(id, session).await;
    }

    /// The link is back: the node connects again.
    pub(super) async fn mend(&self, index: usize) {
        let agent = &self.nodes[index];
        connect(&self.cp, agent, &[]).await;
        self.silent.lock().unwrap().remove(agent.node_id());
    }

    pub(super) fn count(&self, service: &str) -> Vec<usize> {
        self.nodes.iter().map(|n| running(n, service)).collect()
    }

    pub(super) fn total(&self, service: &str) -> usize {
        self.count(service).iter().sum()
    }
}

async fn connect(cp: &ControlPlane, agent: &Arc<FakeAgent>, labels: &[(&str, &str)]) -> u64 {
    let id = agent.node_id().to_string();
    cp.nodes().enroll(&id, "cert", 256).await.unwrap();
    cp.nodes()
        .connect(hello(agent, labels), agent.clone(), Some("cert".into()))
        .await
        .unwrap()
}

/// What each connected agent's stream does: a heartbeat every 100 ms,
/// with what the node runs.
async fn heartbeats(
    cp: ControlPlane,
    agents: Vec<Arc<FakeAgent>>,
    silent: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
) {
    loop {
        let table = cp.nodes().snapshot();
        for agent in &agents {
            let Some(node) = table.get(agent.node_id()).filter(|n| !n.local) else {
                continue;
            };
            if !silent.lock().unwrap().contains(node.id()) {
                let inventory = Some(agent.instances());
                cp.nodes()
                    .heartbeat(node.id(), node.session, inventory)
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Deploys `services` (a JSON array), which must be acknowledged.
pub(super) async fn deploy(c: &Cluster, services: serde_json::Value) {
    call(&c.cp, deploy_req(services)).await.unwrap();
}

pub(super) fn fast() -> Settings {
    Settings {
        heartbeat_grace: Duration::from_millis(300),
        reschedule_after: Duration::from_millis(600),
        ..Settings::default()
    }
}

pub(super) const LONG: Duration = Duration::from_secs(20);

#[tokio::test]
async fn six_replicas_spread_two_per_node() {
    let c = Cluster::three().await;
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 6 }])).await;
    eventually_within("2/2/2", LONG, || c.count("web") == [2, 2, 2]).await;
    let status = c.cp.status(None);
    let mut nodes: Vec<_> = status.services[0]
        .instances
        .iter()
        .map(|i| i.node.clone())
        .collect();
    nodes.sort();
    assert_eq!(nodes, ["n0", "n0", "n1", "n1", "n2", "n2"]);
    let info = c.cp.cluster_info();
    assert_eq!(info.nodes.len(), 3);
    assert!(info
        .nodes
        .iter()
        .all(|n| n.state == "ready" && n.instances == 2));
}

#[tokio::test]
async fn placement_by_label_and_by_node_and_what_does_not_fit() {
    let c = Cluster::three().await;
    deploy(&c, json!([
            { "name": "edge", "image": "x", "replicas": 2, "placement": { "labels": { "zone": "edge" } } },
            { "name": "pinned", "image": "x", "replicas": 2, "placement": { "node": "n1" } },
            { "name": "nowhere", "image": "x", "replicas": 2, "placement": { "labels": { "zone": "moon" } } },
        ])).await;
    eventually_within("placed", LONG, || {
        c.count("edge") == [0, 0, 2] && c.count("pinned") == [0, 2, 0]
    })
    .await;
    eventually_within("pending with a message", LONG, || {
        let s = c.cp.status(None);
        let n = s.services.iter().find(|s| s.name == "nowhere").unwrap();
        n.message.as_deref() == Some("2 replicas unplaced: 3 nodes without the labels")
    })
    .await;
    let s = c.cp.status(None);
    let n = s.services.iter().find(|s| s.name == "nowhere").unwrap();
    assert_eq!(serde_json::to_value(n.status).unwrap(), "pending");
    assert_eq!(c.total("nowhere"), 0);
}

#[tokio::test]
async fn resource_fit_leaves_one_replica_unplaced() {
    let gi = 1u64 << 30;
    let local = FakeAgent::sized("n1", 1.0, gi);
    let c = Cluster::start(vec![local], Settings::default()).await;
    // n0 has 8 GiB, n1 1 GiB: 2 GiB replicas fit 4 on n0 and none on n1.
    deploy(
        &c,
        json!([{ "name": "big", "image": "x", "replicas": 5,
            "resources": { "memory": "2Gi" } }]),
    )
    .await;
    eventually_within("4 placed, 1 not", LONG, || {
        let s = c.cp.status(None);
        c.count("big") == [4, 0]
            && s.services[0].message.as_deref()
                == Some("1 replica unplaced: 2 nodes lack 2Gi of memory to reserve")
    })
    .await;
    assert_eq!(
        serde_json::to_value(c.cp.status(None).services[0].status).unwrap(),
        "degraded"
    );
    let info = c.cp.cluster_info();
    let n0 = info.nodes.iter().find(|n| n.id == "n0").unwrap();
    assert_eq!(n0.reserved.memory_bytes, 8 * gi);
    assert_eq!(n0.allocated, n0.reserved);
}

#[tokio::test]
async fn a_lost_node_is_replaced_and_its_return_settles_at_the_count() {
    let c = Cluster::start(vec![FakeAgent::named("n1"), FakeAgent::named("n2")], fast()).await;
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 3 }])).await;
    eventually_within("1/1/1", LONG, || c.count("web") == [1, 1, 1]).await;
    // n2's link goes down: its replica keeps running there.
    c.cut("n2").await;
    eventually_within("replaced elsewhere", LONG, || {
        let counts = c.count("web");
        counts[0] + counts[1] == 3 && counts[2] == 1
    })
    .await;
    let info = c.cp.cluster_info();
    let lost = info.nodes.iter().find(|n| n.id == "n2").unwrap();
    assert_eq!(lost.state, "disconnected");
    // It comes back with its replica: the surplus goes, 3 in all.
    c.mend(2).await;
    eventually_within("the surplus stopped", LONG, || c.total("web") == 3).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.total("web"), 3, "{:?}", c.count("web"));
}

#[tokio::test]
async fn reschedule_after_zero_keeps_replicas_on_a_disconnected_node() {
    let c = Cluster::start(vec![FakeAgent::named("n1")], fast()).await;
    deploy(
        &c,
        json!([{ "name": "db", "image": "x", "replicas": 1,
            "placement": { "node": "n1", "reschedule_after_secs": 0 } }]),
    )
    .await;
    eventually_within("on n1", LONG, || c.count("db") == [0, 1]).await;
    c.cut("n1").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(c.count("db"), [0, 1], "never moved");
}

#[tokio::test]
async fn drain_moves_replicas_with_the_count_held_then_undrain() {
    let c = Cluster::three().await;
    deploy(
        &c,
        json!([
            { "name": "api", "image": "x", "replicas": 3 },
            { "name": "web", "image": "x", "replicas": 3 },
        ]),
    )
    .await;
    eventually_within("spread", LONG, || {
        c.count("api") == [1, 1, 1] && c.count("web") == [1, 1, 1]
    })
    .await;
    // Let every replica count as ready.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, _) = call(
        &c.cp,
        ApiRequest::Drain {
            node: "n1".into(),
            deadline_secs: None,
            move_volumes: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let info = c.cp.cluster_info();
    let n1 = info.nodes.iter().find(|n| n.id == "n1").unwrap();
    assert!(n1.drained);
    assert_eq!(n1.drain.as_ref().unwrap().remaining, 2);
    // Every service keeps its count all along.
    let start = std::time::Instant::now();
    loop {
        assert!(
            c.total("api") >= 3 && c.total("web") >= 3,
            "{:?} {:?}",
            c.count("api"),
            c.count("web")
        );
        if c.count("api")[1] == 0
            && c.count("web")[1] == 0
            && c.total("api") == 3
            && c.total("web") == 3
        {
            break;
        }
        assert!(start.elapsed() < LONG, "drain did not finish");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let info = c.cp.cluster_info();
    assert!(info
        .nodes
        .iter()
        .find(|n| n.id == "n1")
        .unwrap()
        .drain
        .is_none());
    call(&c.cp, ApiRequest::Undrain { node: "n1".into() })
        .await
        .unwrap();
    // Nothing moves back by itself; a scale-up may use n1 again.
    call(
        &c.cp,
        ApiRequest::Scale {
            name: "web".into(),
            replicas: 6,
        },
    )
    .await
    .unwrap();
    eventually_within("n1 used again", LONG, || c.count("web")[1] > 0).await;
    assert_eq!(c.count("api")[1], 0);
}

#[tokio::test]
async fn a_drain_deadline_stops_what_could_not_move() {
    let c = Cluster::start(vec![FakeAgent::named("n1")], Settings::default()).await;
    deploy(
        &c,
        json!([{ "name": "db", "image": "x", "replicas": 1,
            "placement": { "node": "n1" } }]),
    )
    .await;
    eventually_within("on n1", LONG, || c.count("db") == [0, 1]).await;
    call(
        &c.cp,
        ApiRequest::Drain {
            node: "n1".into(),
            deadline_secs: Some(2),
            move_volumes: false,
        },
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(c.count("db"), [0, 1], "waits for the deadline");
    eventually_within("stopped at the deadline", LONG, || c.total("db") == 0).await;
}

#[tokio::test]
async fn removing_a_node_places_its_replicas_elsewhere() {
    let c = Cluster::start(vec![FakeAgent::named("n1")], Settings::default()).await;
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 2 }])).await;
    eventually_within("1/1", LONG, || c.count("web") == [1, 1]).await;
    let (status, body) = call(&c.cp, ApiRequest::RemoveNode { node: "n1".into() })
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    eventually_within("both on n0", LONG, || c.count("web")[0] == 2).await;
    assert!(c.cp.cluster_info().nodes.iter().all(|n| n.id != "n1"));
    let e = call(&c.cp, ApiRequest::RemoveNode { node: "n1".into() })
        .await
        .unwrap_err();
    assert_eq!(e.status, 404);
    let e = call(&c.cp, ApiRequest::RemoveNode { node: "n0".into() })
        .await
        .unwrap_err();
    assert_eq!(e.status, 409);
}

#[tokio::test]
async fn a_server_without_workloads_places_nothing_on_itself() {
    let c = Cluster::start_with(
        false,
        vec![FakeAgent::named("n1"), FakeAgent::named("n2")],
        Settings::default(),
    )
    .await;
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 4 }])).await;
    eventually_within("2/2 on the agents", LONG, || c.count("web") == [0, 2, 2]).await;
    assert_eq!(c.cp.cluster_info().nodes.len(), 2);
}

#[tokio::test]
async fn a_node_whose_containerd_is_down_takes_nothing_new() {
    let c = Cluster::start(vec![FakeAgent::named("n1")], Settings::default()).await;
    // n1 is connected, but its heartbeats say containerd does not answer.
    c.silent.lock().unwrap().insert("n1".into());
    let session = c.cp.nodes().snapshot().get("n1").unwrap().session;
    c.cp.nodes().heartbeat("n1", session, None).await;
    c.cp.nodes().set_drained("n0", false, None).await.unwrap();
    let info = c.cp.cluster_info();
    let n1 = info.nodes.iter().find(|n| n.id == "n1").unwrap();
    assert_eq!(
        (n1.state.as_str(), n1.containerd.as_str()),
        ("ready", "down")
    );
    deploy(&c, json!([{ "name": "web", "image": "x", "replicas": 2 }])).await;
    eventually_within("both on n0", LONG, || c.count("web") == [2, 0]).await;
}

#[tokio::test]
async fn an_event_from_another_node_about_a_replica_changes_nothing() {
    let c = Cluster::three().await;
    deploy(
        &c,
        json!([{ "name": "db", "image": "x", "replicas": 1, "placement": { "node": "n1" } }]),
    )
    .await;
    eventually_within("on n1", LONG, || c.count("db") == [0, 1, 0]).await;
    let id = c.nodes[1].instances()[0].id.clone();
    // n2 reports an exit of n1's replica: a stray, ignored.
    c.nodes[2].crash(&id, 137, false).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = c.cp.status(None);
    let i = &status.services[0].instances[0];
    assert_eq!((i.state.as_str(), i.restarts), ("running", 0), "{i:?}");
    assert!(i.last_exit.is_none());
    // The same exit from n1 itself counts.
    c.nodes[1].crash(&id, 137, false).await;
    eventually_within("restarted on n1", LONG, || {
        let s = c.cp.status(None);
        s.services[0].instances[0].restarts == 1
    })
    .await;
}
