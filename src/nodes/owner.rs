//! The registry's owner task: applies one message at a time to the table,
//! saves what must survive a restart, answers, and publishes the result.
//! Each change is decided by a plain function over the table and `now`
//! ([`apply`], [`tick`]); the loop only saves, answers and publishes.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use tokio::sync::{mpsc, watch};

use super::{Hello, Msg, Node, NodeError, NodeState, Table, Timing};
use crate::agent::{Instance, NodeAgent};
use crate::store::{NodeRecord, Repo};

/// What a change needs saved.
#[derive(Debug, PartialEq)]
pub(super) enum Save {
    Nothing,
    Put(Box<NodeRecord>),
    Delete(String),
}

/// The table at start: stored nodes disconnected since `now`, and the
/// server's own node ready.
pub(super) fn initial(
    stored: Vec<NodeRecord>,
    local: Option<(Arc<dyn NodeAgent>, Hello)>,
    now: Instant,
) -> Result<Table, NodeError> {
    let mut table = Table::default();
    for record in stored {
        table
            .nodes
            .insert(record.id.clone(), Node::disconnected(record, now));
    }
    if let Some((agent, hello)) = local {
        let id = hello.node_id.clone();
        let mut record = table
            .nodes
            .remove(&id)
            .map(|n| n.record)
            .unwrap_or_default();
        record.id = id.clone();
        record.cert_sha256 = None;
        record.subnet_index = Some(0);
        refresh(&mut record, &hello);
        table.nodes.insert(
            id.clone(),
            Node {
                record,
                state: NodeState::Ready,
                since: now,
                last_heartbeat: Some(SystemTime::now()),
                agent: Some(agent),
                session: 1,
                local: true,
                containerd_up: true,
            },
        );
        table.local = Some(id);
    }
    Ok(table)
}

fn refresh(record: &mut NodeRecord, hello: &Hello) {
    record.address = hello.address.clone();
    record.labels = hello.labels.clone();
    record.cpu = hello.capacity.cpu;
    record.memory_bytes = hello.capacity.memory_bytes;
    record.version = hello.version.clone();
    record.https = hello.https;
    record.access = hello.access.clone();
}

/// The parts of an inventory worth saving: which replicas, not their PIDs.
fn same_replicas(a: &[Instance], b: &[Instance]) -> bool {
    let key = |i: &Instance| (i.id.clone(), i.version, i.slot);
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

/// Answers to hand back once the change is saved.
pub(super) enum Reply {
    None,
    Unit(
        tokio::sync::oneshot::Sender<Result<(), NodeError>>,
        Result<(), NodeError>,
    ),
    Session(
        tokio::sync::oneshot::Sender<Result<u64, NodeError>>,
        Result<u64, NodeError>,
    ),
    Index(
        tokio::sync::oneshot::Sender<Result<u32, NodeError>>,
        Result<u32, NodeError>,
    ),
    /// A node removed, with the agent connected at that moment: told to
    /// go once the removal is saved, before the owner takes another
    /// message (so no reconnect slips in between).
    Removed(
        tokio::sync::oneshot::Sender<Result<NodeRecord, NodeError>>,
        Box<Result<NodeRecord, NodeError>>,
        Option<Arc<dyn NodeAgent>>,
    ),
}

/// Applies one message. Returns what to save and the answer.
pub(super) fn apply(table: &mut Table, msg: Msg, now: Instant) -> (Save, Reply) {
    match msg {
        Msg::Enroll {
            id,
            cert_sha256,
            subnets,
            reply,
        } => {
            let result = enroll(table, &id, &cert_sha256, subnets, now);
            let save = match &result {
                Ok(_) => Save::Put(Box::new(table.nodes[&id].record.clone())),
                Err(_) => Save::Nothing,
            };
            (save, Reply::Index(reply, result))
        }
        Msg::Connect {
            hello,
            agent,
            cert_sha256,
            reply,
        } => {
            let result = connect(table, &hello, agent, cert_sha256.as_deref(), now);
            let save = match &result {
                Ok(_) => Save::Put(Box::new(table.nodes[&hello.node_id].record.clone())),
                Err(_) => Save::Nothing,
            };
            (save, Reply::Session(reply, result))
        }
        Msg::Heartbeat {
            id,
            session,
            inventory,
        } => (heartbeat(table, &id, session, inventory, now), Reply::None),
        Msg::Started { instance } => (started(table, instance), Reply::None),
        Msg::Gone { id, session } => {
            gone(table, &id, session, now);
            (Save::Nothing, Reply::None)
        }
        Msg::Drain {
            id,
            drained,
            deadline,
            reply,
        } => match table.nodes.get_mut(&id) {
            Some(node) => {
                node.record.drained = drained;
                node.record.drain_deadline = if drained { deadline } else { None };
                (
                    Save::Put(Box::new(node.record.clone())),
                    Reply::Unit(reply, Ok(())),
                )
            }
            None => (
                Save::Nothing,
                Reply::Unit(reply, Err(NodeError::NotFound(id))),
            ),
        },
        Msg::Remove { id, reply } => {
            let (save, result, agent) = remove(table, id);
            (save, Reply::Removed(reply, Box::new(result), agent))
        }
    }
}

/// A heartbeat of `session`: the node is ready again if it was silent, and
/// its inventory (None: containerd is down there) is kept; saved when the
/// replicas themselves changed.
fn heartbeat(
    table: &mut Table,
    id: &str,
    session: u64,
    inventory: Option<Vec<Instance>>,
    now: Instant,
) -> Save {
    let Some(node) = table.nodes.get_mut(id).filter(|n| n.session == session) else {
        return Save::Nothing;
    };
    node.last_heartbeat = Some(SystemTime::now());
    if node.state != NodeState::Ready && node.agent.is_some() {
        node.state = NodeState::Ready;
        node.since = now;
    }
    node.containerd_up = inventory.is_some();
    let Some(inventory) = inventory else {
        return Save::Nothing;
    };
    let changed = !same_replicas(&node.record.inventory, &inventory);
    node.record.inventory = inventory;
    if changed {
        Save::Put(Box::new(node.record.clone()))
    } else {
        Save::Nothing
    }
}

/// A replica the server started on a remote node, kept until the node's
/// next heartbeat says the same.
fn started(table: &mut Table, instance: Instance) -> Save {
    let Some(node) = table.nodes.get_mut(&instance.node).filter(|n| !n.local) else {
        return Save::Nothing;
    };
    if node.record.inventory.iter().any(|i| i.id == instance.id) {
        return Save::Nothing;
    }
    node.record.inventory.push(instance);
    Save::Put(Box::new(node.record.clone()))
}

/// The connection of `session` ended (a newer one changes nothing here).
fn gone(table: &mut Table, id: &str, session: u64, now: Instant) {
    let Some(node) = table
        .nodes
        .get_mut(id)
        .filter(|n| n.session == session && !n.local)
    else {
        return;
    };
    node.agent = None;
    if node.state != NodeState::Disconnected {
        node.state = NodeState::Disconnected;
        node.since = now;
    }
}

/// Removes node `id` from the table: what to save, the answer, and the
/// agent connected now (to be told to go).
fn remove(
    table: &mut Table,
    id: String,
) -> (
    Save,
    Result<NodeRecord, NodeError>,
    Option<Arc<dyn NodeAgent>>,
) {
    if table.local.as_deref() == Some(id.as_str()) {
        let e = NodeError::Conflict(format!(
            "node {id} is the server's own node; set [node] workloads = false to run none there"
        ));
        return (Save::Nothing, Err(e), None);
    }
    match table.nodes.remove(&id) {
        Some(node) => (Save::Delete(id), Ok(node.record), node.agent),
        None => (Save::Nothing, Err(NodeError::NotFound(id)), None),
    }
}

/// The lowest node /24 no node holds (the server's own holds 0).
fn free_subnet(table: &Table, subnets: u32) -> Option<u32> {
    let taken: std::collections::HashSet<u32> = table
        .nodes
        .values()
        .filter_map(|n| n.record.subnet_index)
        .collect();
    (1..subnets).find(|i| !taken.contains(i))
}

fn enroll(
    table: &mut Table,
    id: &str,
    cert_sha256: &str,
    subnets: u32,
    now: Instant,
) -> Result<u32, NodeError> {
    if let Some(node) = table.nodes.get(id) {
        if node.local {
            return Err(NodeError::Conflict(format!(
                "node id {id} is the server's own node; give the agent another [node] id"
            )));
        }
        if node.record.cert_sha256.as_deref() != Some(cert_sha256) {
            return Err(NodeError::Conflict(format!(
                "node id {id} is held by another certificate; remove that node \
                 (DELETE /api/v1/cluster/nodes/{id}) or give this agent another [node] id"
            )));
        }
        if let Some(index) = node.record.subnet_index {
            return Ok(index);
        }
    }
    let index = free_subnet(table, subnets).ok_or_else(|| {
        NodeError::Refused(format!(
            "no /24 of the cluster subnet is left for another node ({subnets} in all): \
             remove a node or give [network] subnet a shorter prefix"
        ))
    })?;
    let record = NodeRecord {
        id: id.to_string(),
        cert_sha256: Some(cert_sha256.to_string()),
        subnet_index: Some(index),
        ..NodeRecord::default()
    };
    table
        .nodes
        .insert(id.to_string(), Node::disconnected(record, now));
    Ok(index)
}

fn connect(
    table: &mut Table,
    hello: &Hello,
    agent: Arc<dyn NodeAgent>,
    cert_sha256: Option<&str>,
    now: Instant,
) -> Result<u64, NodeError> {
    let id = &hello.node_id;
    let Some(node) = table.nodes.get_mut(id) else {
        return Err(NodeError::NotMember(format!(
            "node {id} is not in the cluster (removed, or never joined): join it again with a new token"
        )));
    };
    if node.local {
        return Err(NodeError::Conflict(format!(
            "node id {id} is the server's own node"
        )));
    }
    if node.record.cert_sha256.as_deref() != cert_sha256 {
        return Err(NodeError::Refused(format!(
            "node {id} presented a certificate that is not the one issued to it"
        )));
    }
    refresh(&mut node.record, hello);
    node.session += 1;
    node.agent = Some(agent);
    node.state = NodeState::Ready;
    node.since = now;
    node.last_heartbeat = Some(SystemTime::now());
    Ok(node.session)
}

/// Marks nodes silent past the grace period disconnected; true if any changed.
pub(super) fn tick(table: &mut Table, timing: &Timing, now_wall: SystemTime, now: Instant) -> bool {
    let mut changed = false;
    for node in table.nodes.values_mut() {
        if node.local || node.state != NodeState::Ready {
            continue;
        }
        let silent = node
            .last_heartbeat
            .and_then(|t| now_wall.duration_since(t).ok())
            .is_some_and(|d| d >= timing.heartbeat_grace);
        if silent {
            node.state = NodeState::Disconnected;
            node.since = now;
            changed = true;
        }
    }
    changed
}

/// See the module doc.
pub(super) async fn run(
    mut table: Table,
    repo: Repo,
    timing: Timing,
    mut rx: mpsc::Receiver<Msg>,
    publish: watch::Sender<Arc<Table>>,
) {
    let mut ticker = tokio::time::interval(timing.tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                // The node it changes, as it was: put back if the change
                // cannot be saved, so that memory and disk agree.
                let id = msg.node_id().to_string();
                let before = table.nodes.get(&id).cloned();
                let (save, reply) = apply(&mut table, msg, Instant::now());
                let saved = persist(&repo, save).await;
                if saved.is_err() {
                    match before {
                        Some(node) => table.nodes.insert(id, node),
                        None => table.nodes.remove(&id),
                    };
                }
                answer(reply, saved);
                publish.send_replace(Arc::new(table.clone()));
            }
            _ = ticker.tick() => {
                if tick(&mut table, &timing, SystemTime::now(), Instant::now()) {
                    publish.send_replace(Arc::new(table.clone()));
                }
            }
        }
    }
}

/// Saves off the runtime's threads (the store syncs to disk).
async fn persist(repo: &Repo, save: Save) -> Result<(), NodeError> {
    if save == Save::Nothing {
        return Ok(());
    }
    let repo = repo.clone();
    tokio::task::spawn_blocking(move || match save {
        Save::Nothing => Ok(()),
        Save::Put(record) => repo.put_node(&record),
        Save::Delete(id) => repo.delete_node(&id),
    })
    .await
    .map_err(|e| NodeError::Store(e.to_string()))?
    .map_err(|e| match e {
        crate::store::StoreError::Full { .. } => NodeError::Full(e.to_string()),
        e => NodeError::Store(e.to_string()),
    })
}

fn answer(reply: Reply, saved: Result<(), NodeError>) {
    match reply {
        Reply::None => {}
        Reply::Unit(tx, r) => {
            let _ = tx.send(r.and(saved));
        }
        Reply::Session(tx, r) => {
            let _ = tx.send(saved.and(r));
        }
        Reply::Index(tx, r) => {
            let _ = tx.send(saved.and(r));
        }
        Reply::Removed(tx, r, agent) => {
            if saved.is_ok() {
                if let Some(agent) = agent {
                    // Its connection ends now: the certificate is no
                    // longer known, and it learns it was removed.
                    agent.disconnect();
                }
            }
            let _ = tx.send(saved.and(*r));
        }
    }
}
