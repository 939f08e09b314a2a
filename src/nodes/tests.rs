//! The registry's transitions, on a fake agent and the in-memory store.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use super::owner::{apply, initial, tick, Save};
use super::*;
use crate::agent::fake::FakeAgent;
use crate::store::MemStore;

fn hello(id: &str) -> Hello {
    Hello {
        node_id: id.into(),
        address: "10.0.0.2".into(),
        labels: BTreeMap::new(),
        capacity: Capacity {
            cpu: 2.0,
            memory_bytes: 1 << 30,
        },
        version: "test".into(),
        overlay: None,
        https: false,
        access: Default::default(),
    }
}

fn instance(id: &str, node: &str) -> Instance {
    Instance {
        id: id.into(),
        node: node.into(),
        service: "web".into(),
        project: "default".into(),
        version: 1,
        slot: 0,
        pid: Some(7),
        state: crate::agent::ProcessState::Running,
        ip: None,
        run: 0,
        restart: Default::default(),
    }
}

fn local() -> Option<(Arc<dyn NodeAgent>, Hello)> {
    Some((Arc::new(FakeAgent::named("server")), hello("server")))
}

#[tokio::test]
async fn join_connect_and_refusals() {
    let repo = Repo::new(Arc::new(MemStore::default()));
    let nodes = Nodes::start(repo.clone(), local(), Timing::default()).unwrap();
    let agent: Arc<dyn NodeAgent> = Arc::new(FakeAgent::named("w1"));
    // Never enrolled: refused, nothing registered.
    let e = nodes
        .connect(hello("w1"), agent.clone(), Some("aa".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::NotMember(_)), "{e}");
    assert!(nodes.snapshot().get("w1").is_none());

    assert_eq!(
        nodes.enroll("w1", "aa", 256).await.unwrap(),
        1,
        "the first /24 after the server's"
    );
    // Another certificate for the same id: refused.
    let e = nodes.enroll("w1", "bb", 256).await.unwrap_err();
    assert!(e.to_string().contains("held by another certificate"), "{e}");
    let e = nodes.enroll("server", "cc", 256).await.unwrap_err();
    assert!(e.to_string().contains("server's own node"), "{e}");
    let e = nodes
        .connect(hello("w1"), agent.clone(), Some("bb".into()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not the one issued"), "{e}");

    let session = nodes
        .connect(hello("w1"), agent.clone(), Some("aa".into()))
        .await
        .unwrap();
    let table = nodes.snapshot();
    assert!(table.get("w1").unwrap().ready());
    assert_eq!(table.get("w1").unwrap().record.address, "10.0.0.2");
    assert!(repo.node("w1").unwrap().is_some());

    // A newer connection wins; the old one's end changes nothing.
    let second = nodes
        .connect(hello("w1"), agent.clone(), Some("aa".into()))
        .await
        .unwrap();
    assert!(second > session);
    nodes.gone("w1", session).await;
    nodes.set_drained("w1", false, None).await.unwrap();
    assert!(nodes.snapshot().get("w1").unwrap().ready());
    nodes.gone("w1", second).await;
    nodes.set_drained("w1", false, None).await.unwrap();
    assert_eq!(
        nodes.snapshot().get("w1").unwrap().state,
        NodeState::Disconnected
    );

    // Removal forgets the node and its certificate.
    nodes.remove("w1").await.unwrap();
    assert!(repo.node("w1").unwrap().is_none());
    let e = nodes
        .connect(hello("w1"), agent, Some("aa".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, NodeError::NotMember(_)));
    assert!(matches!(
        nodes.remove("server").await,
        Err(NodeError::Conflict(_))
    ));
}

#[test]
fn silence_past_the_grace_disconnects_and_a_heartbeat_reconnects() {
    let now = Instant::now();
    let mut table = initial(Vec::new(), local(), now).unwrap();
    let (tx, _rx) = tokio::sync::oneshot::channel();
    apply(
        &mut table,
        Msg::Enroll {
            id: "w1".into(),
            cert_sha256: "aa".into(),
            subnets: 256,
            reply: tx,
        },
        now,
    );
    let (tx, _rx) = tokio::sync::oneshot::channel();
    apply(
        &mut table,
        Msg::Connect {
            hello: hello("w1"),
            agent: Arc::new(FakeAgent::named("w1")),
            cert_sha256: Some("aa".into()),
            reply: tx,
        },
        now,
    );
    let timing = Timing {
        heartbeat_grace: Duration::from_secs(10),
        ..Timing::default()
    };
    let wall = SystemTime::now();
    assert!(!tick(
        &mut table,
        &timing,
        wall + Duration::from_secs(9),
        now
    ));
    assert!(tick(
        &mut table,
        &timing,
        wall + Duration::from_secs(11),
        now
    ));
    let w1 = table.get("w1").unwrap();
    assert_eq!(w1.state, NodeState::Disconnected);
    // The server's own node is never silent.
    assert!(table.get("server").unwrap().ready());
    let session = w1.session;
    let inventory = vec![instance("web.0.abc", "w1")];
    let (save, _) = apply(
        &mut table,
        Msg::Heartbeat {
            id: "w1".into(),
            session,
            inventory: Some(inventory.clone()),
        },
        now,
    );
    assert!(matches!(save, Save::Put(_)), "a new inventory is saved");
    assert!(table.get("w1").unwrap().ready());
    // The same replicas again (a new PID) are not saved again.
    let mut again = inventory;
    again[0].pid = Some(8);
    let (save, _) = apply(
        &mut table,
        Msg::Heartbeat {
            id: "w1".into(),
            session,
            inventory: Some(again),
        },
        now,
    );
    assert_eq!(save, Save::Nothing);
}

#[test]
fn stored_nodes_start_disconnected_with_their_replicas() {
    let record = NodeRecord {
        id: "w2".into(),
        cert_sha256: Some("aa".into()),
        drained: true,
        ..NodeRecord::default()
    };
    let table = initial(vec![record], local(), Instant::now()).unwrap();
    let w2 = table.get("w2").unwrap();
    assert_eq!(w2.state, NodeState::Disconnected);
    assert!(w2.record.drained);
    assert_eq!(table.local.as_deref(), Some("server"));
}

#[tokio::test]
async fn a_replica_started_on_a_node_is_kept_before_its_next_heartbeat() {
    let repo = Repo::new(Arc::new(MemStore::default()));
    let nodes = Nodes::start(repo.clone(), local(), Timing::default()).unwrap();
    nodes.enroll("w1", "aa", 256).await.unwrap();
    let instance = instance("web.0.abc", "w1");
    nodes.started(instance.clone()).await;
    nodes.started(instance.clone()).await;
    // A reply orders after the messages before it.
    nodes.set_drained("w1", false, None).await.unwrap();
    let stored = repo.node("w1").unwrap().unwrap();
    assert_eq!(
        stored.inventory,
        vec![instance.clone()],
        "kept once, on disk"
    );
    // The server's own node keeps nothing: it lists its containerd.
    nodes
        .started(Instance {
            node: "server".into(),
            ..instance
        })
        .await;
    nodes.set_drained("server", false, None).await.unwrap();
    assert!(repo.node("server").unwrap().unwrap().inventory.is_empty());
}

#[tokio::test]
async fn each_node_keeps_a_subnet_of_its_own() {
    let repo = Repo::new(Arc::new(MemStore::default()));
    let nodes = Nodes::start(repo.clone(), local(), Timing::default()).unwrap();
    assert_eq!(nodes.enroll("w1", "a1", 4).await.unwrap(), 1);
    assert_eq!(nodes.enroll("w2", "a2", 4).await.unwrap(), 2);
    // The same node again: the same /24.
    assert_eq!(nodes.enroll("w1", "a1", 4).await.unwrap(), 1);
    assert_eq!(nodes.enroll("w3", "a3", 4).await.unwrap(), 3);
    let e = nodes.enroll("w4", "a4", 4).await.unwrap_err();
    assert!(
        e.to_string()
            .contains("no /24 of the cluster subnet is left"),
        "{e}"
    );
    // A removed node's /24 goes to the next one; kept across a restart.
    nodes.remove("w2").await.unwrap();
    assert_eq!(nodes.enroll("w4", "a4", 4).await.unwrap(), 2);
    drop(nodes);
    let again = Nodes::start(repo, local(), Timing::default()).unwrap();
    assert_eq!(
        again.snapshot().get("w4").unwrap().record.subnet_index,
        Some(2)
    );
    assert_eq!(
        again.snapshot().get("server").unwrap().record.subnet_index,
        Some(0)
    );
}

/// A node removed while its agent reconnects: whichever connection the
/// registry holds when the removal is applied is told to go, in the same
/// change, and a connection after it is refused.
#[tokio::test]
async fn removal_tells_the_agent_connected_at_that_moment() {
    use std::sync::atomic::Ordering;
    let repo = Repo::new(Arc::new(MemStore::default()));
    let nodes = Nodes::start(repo, local(), Timing::default()).unwrap();
    nodes.enroll("w1", "aa", 256).await.unwrap();
    let first = Arc::new(FakeAgent::named("w1"));
    let second = Arc::new(FakeAgent::named("w1"));
    let session = nodes
        .connect(hello("w1"), first.clone(), Some("aa".into()))
        .await
        .unwrap();
    // The first connection drops and a second one comes in, as a
    // reconnect would, right before the removal.
    nodes.gone("w1", session).await;
    nodes
        .connect(hello("w1"), second.clone(), Some("aa".into()))
        .await
        .unwrap();
    nodes.remove("w1").await.unwrap();
    assert_eq!(
        second.disconnects.load(Ordering::SeqCst),
        1,
        "the live stream is told"
    );
    assert_eq!(first.disconnects.load(Ordering::SeqCst), 0);
    let third: Arc<dyn NodeAgent> = Arc::new(FakeAgent::named("w1"));
    assert!(matches!(
        nodes.connect(hello("w1"), third, Some("aa".into())).await,
        Err(NodeError::NotMember(_))
    ));
}

/// A removal that cannot be saved leaves the node and its stream alone.
#[tokio::test]
async fn a_removal_not_saved_disconnects_nothing() {
    use std::sync::atomic::Ordering;
    let store = Arc::new(MemStore::default());
    let nodes = Nodes::start(Repo::new(store.clone()), local(), Timing::default()).unwrap();
    nodes.enroll("w1", "aa", 256).await.unwrap();
    let agent = Arc::new(FakeAgent::named("w1"));
    nodes
        .connect(hello("w1"), agent.clone(), Some("aa".into()))
        .await
        .unwrap();
    store.fail_writes(true);
    assert!(nodes.remove("w1").await.is_err());
    assert_eq!(agent.disconnects.load(Ordering::SeqCst), 0);
    assert!(nodes.snapshot().get("w1").unwrap().ready());
}

#[tokio::test]
async fn a_change_that_cannot_be_saved_is_not_kept() {
    let store = Arc::new(MemStore::default());
    let repo = Repo::new(store.clone());
    let nodes = Nodes::start(repo.clone(), local(), Timing::default()).unwrap();
    nodes.enroll("w1", "aa", 256).await.unwrap();
    store.fail_writes(true);
    let e = nodes.set_drained("w1", true, Some(1)).await.unwrap_err();
    assert!(matches!(e, NodeError::Store(_)), "{e}");
    assert!(
        !nodes.snapshot().get("w1").unwrap().record.drained,
        "not drained in memory either"
    );
    assert!(nodes.enroll("w2", "bb", 256).await.is_err());
    assert!(nodes.snapshot().get("w2").is_none());
    assert!(nodes.remove("w1").await.is_err());
    assert!(nodes.snapshot().get("w1").is_some());
    store.fail_writes(false);
    nodes.set_drained("w1", true, Some(1)).await.unwrap();
    assert!(nodes.snapshot().get("w1").unwrap().record.drained);
}
