//! What a service runs on every node: asked of each ready node at once,
//! taken from the last report of each disconnected one. Which of those
//! replicas count as lost (their node has been gone past the reschedule
//! delay) and which must move (their node is drained), decided purely.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::agent::{AgentError, Instance};
use crate::control::Inner;
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// A service's replicas across the cluster.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    pub instances: Vec<Instance>,
}

/// The local node's containerd failed: retry later.
#[derive(Debug)]
pub(crate) struct LocalDown(pub AgentError);

/// Lists `service` on every node.
pub(crate) async fn gather(inner: &Inner, service: &str) -> Result<Gathered, LocalDown> {
    let table = inner.nodes.snapshot();
    let seen = inner
        .state()
        .instances
        .get(service)
        .cloned()
        .unwrap_or_default();
    let seen = &seen;
    let asks = table.nodes.values().map(|node| async move {
        let Some(agent) = node.ready_agent() else {
            return Ok(last_known(node, service, seen));
        };
        match agent.list_service(service).await {
            Ok(list) => Ok(list),
            Err(e) if node.local => Err(LocalDown(e)),
            Err(e) => {
                // Unreachable, or its containerd failing: either way its
                // replicas are taken to run as it last said.
                tracing::debug!(node = node.id(), error = %e, "listing failed; using the last report");
                Ok(last_known(node, service, seen))
            }
        }
    });
    let mut instances = Vec::new();
    for listed in futures::future::join_all(asks).await {
        instances.extend(listed?);
    }
    Ok(Gathered { instances })
}

/// What a node that cannot be asked runs of `service`: what this server
/// last saw there (listed or started), and what the node last reported in
/// a heartbeat (kept across a server restart).
fn last_known(node: &crate::nodes::Node, service: &str, seen: &[Instance]) -> Vec<Instance> {
    let mut out: Vec<Instance> = seen
        .iter()
        .filter(|i| i.node == node.id())
        .cloned()
        .collect();
    for i in node
        .record
        .inventory
        .iter()
        .filter(|i| i.service == service)
    {
        if !out.iter().any(|o| o.id == i.id) {
            out.push(i.clone());
        }
    }
    out
}

/// How long a disconnected node keeps `record`'s replicas before they are
/// placed elsewhere (None: never).
pub(crate) fn reschedule_after(
    record: Option<&ServiceRecord>,
    cluster: Duration,
) -> Option<Duration> {
    let secs = record
        .and_then(|r| r.spec.placement.as_ref())
        .and_then(|p| p.reschedule_after_secs);
    let after = secs.map(Duration::from_secs).unwrap_or(cluster);
    (!after.is_zero()).then_some(after)
}

/// The replicas planning takes as gone: on a node disconnected for longer
/// than `after`, or on a node no longer in the cluster. Also when the
/// next such moment comes, to look again then.
pub(crate) fn lost(
    table: &Table,
    instances: &[Instance],
    after: Option<Duration>,
    now: Instant,
) -> (HashSet<String>, Option<Instant>) {
    let mut lost = HashSet::new();
    let mut next: Option<Instant> = None;
    for i in instances {
        let Some(node) = table.get(&i.node) else {
            lost.insert(i.id.clone());
            continue;
        };
        let (Some(gone_for), Some(after)) = (node.disconnected_for(now), after) else {
            continue;
        };
        if gone_for >= after {
            lost.insert(i.id.clone());
        } else {
            let at = node.since + after;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    (lost, next)
}

/// The drained node whose replicas of `service` may move now: drains move
/// one service at a time, in name order, so a service waits while one
/// before it still has replicas on that node. Returns the replicas to
/// move, and those to stop because the drain's deadline has passed.
pub(crate) fn draining(
    table: &Table,
    service: &str,
    instances: &[Instance],
    on_node: &dyn Fn(&str, &str) -> bool,
    now: SystemTime,
) -> (HashSet<String>, HashSet<String>) {
    let mut leaving = HashSet::new();
    let mut overdue = HashSet::new();
    let unix = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    for i in instances {
        let Some(node) = table.get(&i.node).filter(|n| n.record.drained) else {
            continue;
        };
        if node.record.drain_deadline.is_some_and(|d| unix >= d) {
            overdue.insert(i.id.clone());
        } else if !on_node(&i.node, service) {
            leaving.insert(i.id.clone());
        }
    }
    (leaving, overdue)
}
