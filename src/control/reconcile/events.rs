//! Following the nodes: each connected node's event stream (crashes and
//! starts into the state), a watch on the node registry that wakes every
//! worker when a node comes, goes, drains or changes size, and a slow
//! janitor that finds orphans on every node.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::agent::{service_of, AgentEvent, NodeAgent, NodeEvent};
use crate::control::state::Exit;
use crate::control::worker::{wake, wake_all, watched};
use crate::control::{Inner, RESYNC};
use crate::nodes::Table;
use api::events::EventKind;

/// The event of a readiness change.
pub(crate) fn readiness_kind(ready: bool) -> EventKind {
    if ready {
        EventKind::ReplicaReady
    } else {
        EventKind::ReplicaUnready
    }
}

pub(crate) fn readiness_message(id: &str, ready: bool) -> String {
    if ready {
        format!("{id} is ready")
    } else {
        format!("{id} failed its readiness check")
    }
}

/// Subscribes to the server's own node's events (its containerd must
/// answer), starts the watch and the janitor, and returns the services
/// that the nodes run now.
pub(crate) async fn start(inner: Arc<Inner>) -> anyhow::Result<BTreeSet<String>> {
    let table = inner.nodes.snapshot();
    let mut following = HashMap::new();
    if let Some(agent) = table.local_agent() {
        let events = agent.events().await?;
        let node = table.local.clone().unwrap_or_default();
        following.insert(node.clone(), 1);
        inner.spawn(follow(
            inner.clone(),
            node,
            agent.clone(),
            Some(events),
            true,
        ));
    }
    let mut known = BTreeSet::new();
    for node in table.nodes.values() {
        let listed = match node.ready_agent() {
            Some(agent) => agent.list().await?,
            None => node.record.inventory.clone(),
        };
        known.extend(listed.into_iter().map(|i| i.service));
    }
    inner.spawn(watch_nodes(inner.clone(), following));
    inner.clone().spawn(janitor(inner));
    Ok(known)
}

/// What about a node makes workers look again.
fn shape(table: &Table) -> Vec<(String, bool, bool, u64, String, u64)> {
    table
        .nodes
        .values()
        .map(|n| {
            (
                n.id().to_string(),
                n.ready(),
                n.record.drained,
                n.session,
                format!("{:?}{}", n.record.labels, n.record.cpu),
                n.record.memory_bytes,
            )
        })
        .collect()
}

/// The nodes as the feed tells of them.
fn views(table: &Table) -> Vec<crate::feed::NodeView> {
    table
        .nodes
        .values()
        .map(|n| crate::feed::NodeView {
            id: n.id().to_string(),
            ready: n.ready(),
            drained: n.record.drained,
            address: n.record.address.clone(),
            session: n.session,
        })
        .collect()
}

/// Follows each new connection's events, and wakes every worker when the
/// shape of the cluster changes.
async fn watch_nodes(inner: Arc<Inner>, mut following: HashMap<String, u64>) {
    let mut changes = inner.nodes.changes();
    let mut last = shape(&changes.borrow_and_update());
    let mut seen = views(&changes.borrow());
    while changes.changed().await.is_ok() {
        let table = changes.borrow_and_update().clone();
        let now_seen = views(&table);
        inner.tell(crate::feed::node_notes(&seen, &now_seen));
        seen = now_seen;
        for node in table.nodes.values().filter(|n| !n.local) {
            let Some(agent) = node.ready_agent() else {
                continue;
            };
            if following.get(node.id()) != Some(&node.session) {
                following.insert(node.id().to_string(), node.session);
                // A new connection: its node checks nothing yet.
                inner.state.forget_checks(node.id()).await;
                inner.spawn(follow(
                    inner.clone(),
                    node.id().to_string(),
                    agent.clone(),
                    None,
                    false,
                ));
            }
        }
        following.retain(|id, _| table.nodes.contains_key(id));
        let now = shape(&table);
        if now != last {
            last = now;
            wake_all(&inner);
        }
    }
}

/// Feeds one node's events into the state. The server's own node is
/// followed for good (its containerd may restart); a remote node's stream
/// ends with its connection, and the next connection is followed anew.
async fn follow(
    inner: Arc<Inner>,
    node: String,
    agent: Arc<dyn NodeAgent>,
    first: Option<tokio::sync::mpsc::Receiver<AgentEvent>>,
    local: bool,
) {
    let mut events = match first {
        Some(rx) => rx,
        None => match agent.events().await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(node, error = %e, "cannot follow the node's events");
                return;
            }
        },
    };
    loop {
        while let Some(event) = events.recv().await {
            handle_event(
                &inner,
                NodeEvent {
                    node: node.clone(),
                    event,
                },
            )
            .await;
        }
        if !local {
            return;
        }
        // The stream ended: containerd is gone for good or restarting.
        inner.set_containerd_up(false);
        tracing::warn!(node, "node event stream ended; resubscribing");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match agent.events().await {
                Ok(rx) => {
                    events = rx;
                    inner.set_containerd_up(true);
                    wake_all(&inner);
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "resubscribe failed"),
            }
        }
    }
}

/// True if `event` is about a replica this server knows on another node
/// (a late event of a node that no longer holds it): it changes nothing.
fn stray(inner: &Inner, event: &NodeEvent) -> bool {
    let Some(id) = event.instance() else {
        return false;
    };
    let st = inner.state();
    st.instances
        .get(service_of(id))
        .and_then(|list| list.iter().find(|i| i.id == id))
        .is_some_and(|i| i.node != event.node)
}

async fn handle_event(inner: &Arc<Inner>, event: NodeEvent) {
    if stray(inner, &event) {
        tracing::debug!(node = %event.node, event = ?event.event, "event about a replica of another node; ignored");
        return;
    }
    match event.event {
        AgentEvent::Started { id, pid } => {
            inner.state.started(&id, pid).await;
            inner.tell_replica(
                EventKind::ReplicaStarted,
                &id,
                Some(&event.node),
                format!("{id} started (pid {pid})"),
            );
        }
        AgentEvent::Exited {
            id,
            code,
            oom_killed,
            at,
        } => {
            let service = service_of(&id).to_string();
            let exit = Exit {
                code,
                oom_killed,
                at,
            };
            if !inner.state.exited(&id, exit).await {
                // Removed on purpose: no crash.
                return;
            }
            if oom_killed {
                inner.metrics.oom_kills.with_label_values(&[&service]).inc();
            }
            tracing::info!(node = %event.node, instance = %id, code, oom_killed, "replica exited");
            let (kind, message) = if oom_killed {
                (
                    EventKind::ReplicaOomKilled,
                    format!("{id} was killed: out of memory (code {code})"),
                )
            } else {
                (
                    EventKind::ReplicaExited,
                    format!("{id} exited with code {code}"),
                )
            };
            inner.tell_replica(kind, &id, Some(&event.node), message);
            crate::control::publish::publish_routes(inner);
            wake(inner, &service);
        }
        AgentEvent::Health { id, ready } => {
            let changed = inner.state.readiness(&id, Some(ready), None).await;
            if changed {
                tracing::info!(instance = %id, ready, "readiness changed (checked by its node)");
                inner.tell_replica(
                    readiness_kind(ready),
                    &id,
                    Some(&event.node),
                    readiness_message(&id, ready),
                );
                crate::control::publish::publish_routes(inner);
                wake(inner, service_of(&id));
            }
        }
        AgentEvent::Resync => {
            wake_all(inner);
        }
    }
}

/// Every resync period: wake workers for replicas of services nobody
/// watches (orphans left by a crash or an older orca), so they are removed.
async fn janitor(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(RESYNC).await;
        let table = inner.nodes.snapshot();
        let watched: std::collections::HashSet<String> = watched(&inner).into_iter().collect();
        for node in table.nodes.values() {
            let Some(agent) = node.ready_agent() else {
                continue;
            };
            match agent.list().await {
                Ok(list) => {
                    if node.local {
                        inner.set_containerd_up(true);
                    }
                    for i in list.iter().filter(|i| !watched.contains(&i.service)) {
                        wake(&inner, &i.service);
                    }
                }
                Err(e) => {
                    if node.local {
                        inner.set_containerd_up(false);
                    }
                    tracing::warn!(node = node.id(), error = %e, "resync listing failed");
                }
            }
        }
    }
}
