//! Giving every connected node what it serves (see [`crate::control::publish`]) and
//! its peers: one pusher task per node connection, each giving its node
//! the latest of both in order, so that a slow or silent node holds up no
//! other and an older list never lands after a newer one. What
//! each node has been given is kept by generation, so that a replica
//! leaving rotation can wait until every node has stopped routing to it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::NodeAgent;
use crate::control::publish::View;
use crate::control::Inner;
use crate::nodes::Table;

/// How long a pusher waits before trying a node again after a failure.
const RETRY: Duration = Duration::from_secs(1);

/// Per node: the connection (session) and the generation it was given.
pub(crate) type Delivered = HashMap<String, (u64, u64)>;

/// Keeps one pusher per ready node connection, until the node table ends.
pub(crate) async fn push_to_nodes(inner: Arc<Inner>) {
    let mut nodes = inner.nodes.changes();
    let mut pushers: HashMap<String, (u64, tokio::task::JoinHandle<()>)> = HashMap::new();
    loop {
        let table = nodes.borrow_and_update().clone();
        pushers.retain(|id, (session, task)| {
            let keep = table
                .get(id)
                .is_some_and(|n| n.ready() && n.session == *session);
            if !keep {
                task.abort();
            }
            keep
        });
        for node in table.nodes.values() {
            let Some(agent) = node.ready_agent() else {
                continue;
            };
            if pushers.contains_key(node.id()) {
                continue;
            }
            let task = inner.spawn(push_node(
                inner.clone(),
                node.id().to_string(),
                node.session,
                agent.clone(),
                node.local,
            ));
            pushers.insert(node.id().to_string(), (node.session, task));
        }
        if nodes.changed().await.is_err() {
            break;
        }
    }
    for (_, (_, task)) in pushers {
        task.abort();
    }
}

/// Gives one node connection, in order, every new view (the server's own
/// node its isolation, its DNS and ingress being updated in place; every
/// other node all three) and its peers whenever the nodes change.
async fn push_node(
    inner: Arc<Inner>,
    id: String,
    session: u64,
    agent: Arc<dyn NodeAgent>,
    local: bool,
) {
    let mut views = inner.published.subscribe();
    let mut nodes = inner.nodes.changes();
    let mut given_peers: Option<Vec<network::Peer>> = None;
    let mut given_view: Option<u64> = None;
    loop {
        let table = nodes.borrow_and_update().clone();
        let peers: Vec<network::Peer> = peers_of(&table, &inner.settings.subnet)
            .into_iter()
            .filter(|p| p.node != id)
            .collect();
        if given_peers.as_ref() != Some(&peers) {
            match agent.set_peers(&peers).await {
                Ok(()) => given_peers = Some(peers),
                Err(e) => tracing::warn!(node = id, error = %e, "cannot set the node's peers"),
            }
        }
        let view: View = views.borrow_and_update().clone();
        if given_view != Some(view.generation) {
            match give(&*agent, &view, local).await {
                Ok(()) => {
                    given_view = Some(view.generation);
                    inner.delivered.send_modify(|d| {
                        d.insert(id.clone(), (session, view.generation));
                    });
                }
                Err(e) => {
                    tracing::warn!(node = id, error = %e, "cannot give the node its isolation, names and routes")
                }
            }
        }
        let behind = given_view != Some(view.generation) || given_peers.is_none();
        if behind {
            // Tried again with what is current then.
            tokio::time::sleep(RETRY).await;
            continue;
        }
        tokio::select! {
            changed = views.changed() => if changed.is_err() { return },
            changed = nodes.changed() => if changed.is_err() { return },
        }
    }
}

/// Gives a node one view: its isolation and, unless it is the server's
/// own, the DNS names and ingress routes it serves.
async fn give(
    agent: &dyn NodeAgent,
    view: &View,
    local: bool,
) -> Result<(), crate::agent::AgentError> {
    let p = &view.published;
    agent
        .set_network(&p.isolation.projects, &p.isolation.internal, &p.ports)
        .await?;
    if !local {
        let tables = crate::cluster::wire::Tables {
            names: p.names.clone(),
            routes: p.routes.clone(),
            certs: p.certs.clone(),
            challenges: p.challenges.clone(),
        };
        agent.serve(&tables).await?;
    }
    Ok(())
}

/// Every node with a /24 and an address, as a peer of the others.
fn peers_of(table: &Table, subnet: &str) -> Vec<network::Peer> {
    let Ok(cluster) = network::Ipv4Net::parse(subnet) else {
        return Vec::new();
    };
    table
        .nodes
        .values()
        .filter_map(|n| {
            let index = n.record.subnet_index?;
            let host = n
                .record
                .address
                .rsplit_once(':')
                .map_or(n.record.address.as_str(), |(h, _)| h);
            // No route or FDB entry can point at 0.0.0.0 or loopback.
            let address: std::net::Ipv4Addr = host
                .parse()
                .ok()
                .filter(|a: &std::net::Ipv4Addr| !a.is_unspecified() && !a.is_loopback())?;
            let subnet = cluster.node_slice(index).ok()?.to_string();
            Some(network::Peer {
                node: n.id().to_string(),
                address,
                subnet,
            })
        })
        .collect()
}

/// Waits until every ready node has been given view `generation` or a
/// later one, at most `timeout`: false if some node was not given it.
pub(crate) async fn delivered(inner: &Inner, generation: u64, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    let mut given = inner.delivered.subscribe();
    loop {
        let all = {
            let table = inner.nodes.snapshot();
            let d = given.borrow_and_update();
            table.nodes.values().filter(|n| n.ready()).all(|n| {
                d.get(n.id())
                    .is_some_and(|(s, g)| *s == n.session && *g >= generation)
            })
        };
        if all {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        // Nodes that leave wake nobody here: look again now and then.
        let _ = tokio::time::timeout(left.min(Duration::from_millis(100)), given.changed()).await;
    }
}
