//! One worker round's decision: from the gathered replicas, the node table
//! and the state, the plans (stable and canary) with each new replica
//! placed by the scheduler and its resources reserved, atomically with
//! respect to other workers' placements.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::execute::Placed;
use super::gather::{draining, lost, reschedule_after};
use super::plan::{plan, Action, Desired};
use super::schedule::{demand_of, unplaced_message, Candidate, Scheduler};
use super::state::State;
use super::Inner;
use crate::agent::{Capacity, Instance};
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// What to do now.
pub(super) struct Decided {
    pub record: Option<ServiceRecord>,
    pub stable: Vec<Placed>,
    /// The canary's own actions, when the service has a canary.
    pub canary: Option<Vec<Placed>>,
    /// Replicas of an older version (or on a drained node) still serve.
    pub rolling: bool,
    /// When to look again even if nothing wakes the worker.
    pub wake_at: Option<Instant>,
}

fn desired_of(record: Option<&ServiceRecord>) -> Option<Desired> {
    let r = record?;
    Some(Desired {
        version: r.version,
        replicas: r.desired_replicas(),
        max_unavailable: r
            .spec
            .deploy
            .as_ref()
            .and_then(|d| d.max_unavailable)
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
    })
}

/// The nodes as the scheduler sees them for `service`: what every
/// replica and every start in flight reserves, and how many replicas of
/// the service each node already runs (not counting those that must go).
fn candidates(table: &Table, st: &State, service: &str, going: &HashSet<String>) -> Vec<Candidate> {
    let mut allocated: HashMap<&str, Capacity> = HashMap::new();
    let mut of_service: HashMap<&str, u32> = HashMap::new();
    fn add<'a>(map: &mut HashMap<&'a str, Capacity>, node: &'a str, c: Capacity) {
        let a = map.entry(node).or_default();
        a.cpu += c.cpu;
        a.memory_bytes += c.memory_bytes;
    }
    for (name, list) in &st.instances {
        let reservation = st
            .records
            .get(name)
            .map(|r| demand_of(&r.spec).reservation())
            .unwrap_or_default();
        for i in list {
            add(&mut allocated, i.node.as_str(), reservation);
            if name == service && !going.contains(&i.id) {
                *of_service.entry(i.node.as_str()).or_default() += 1;
            }
        }
    }
    for (node, c) in st.placing.values() {
        add(&mut allocated, node.as_str(), *c);
    }
    table
        .nodes
        .values()
        .map(|n| Candidate {
            id: n.id().to_string(),
            labels: n.record.labels.clone(),
            ready: n.ready(),
            drained: n.record.drained,
            capacity: n.capacity(),
            allocated: allocated.get(n.id()).copied().unwrap_or_default(),
            of_service: of_service.get(n.id()).copied().unwrap_or(0),
        })
        .collect()
}

/// True if a service named before `service` still has replicas on `node`
/// (drains move one service at a time).
fn earlier_on(st: &State, node: &str, service: &str) -> bool {
    st.instances
        .iter()
        .any(|(name, list)| name.as_str() < service && list.iter().any(|i| i.node == node))
}

/// When the nearest drain deadline of these replicas' nodes passes.
fn next_deadline(table: &Table, instances: &[Instance], now: Instant) -> Option<Instant> {
    let unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    instances
        .iter()
        .filter_map(|i| table.get(&i.node)?.record.drain_deadline)
        .filter(|d| *d > unix)
        .map(|d| now + Duration::from_secs(d - unix))
        .min()
}

/// See the module doc.
pub(super) fn decide(
    inner: &Inner,
    service: &str,
    instances: &[Instance],
    now: Instant,
) -> Decided {
    let table = inner.nodes.snapshot();
    // One lock for planning and reserving, so that two workers never
    // place on the same free room.
    let mut st = inner.state_unseen_mut();
    let record = st.records.get(service).cloned();
    let after = reschedule_after(record.as_ref(), inner.settings.reschedule_after);
    let (lost, lost_at) = lost(&table, instances, after, now);
    let (leaving, overdue) = draining(
        &table,
        service,
        instances,
        &|node, service| earlier_on(&st, node, service),
        SystemTime::now(),
    );
    let unreachable: HashSet<&str> = instances
        .iter()
        .filter(|i| table.get(&i.node).is_none_or(|n| !n.ready()))
        .map(|i| i.id.as_str())
        .collect();
    let going: HashSet<String> = lost
        .iter()
        .chain(&leaving)
        .chain(&overdue)
        .cloned()
        .collect();
    let mut scheduler = Scheduler::new(candidates(&table, &st, service, &going));

    let desired = desired_of(record.as_ref());
    let start_at = st.services.get(service).and_then(|s| s.next_start);
    let far = now + Duration::from_secs(3600);
    let replicas = &st.replicas;
    // A node that cannot be reached restarts its own replicas.
    let restart_at = |id: &str| {
        if unreachable.contains(id) {
            Some(far)
        } else {
            replicas.get(id).and_then(|r| r.next_start)
        }
    };
    let has_check = record
        .as_ref()
        .is_some_and(|r| super::health::readiness(&r.spec).is_some());
    let ready = |i: &Instance| st.ready(has_check, &i.id, now);
    let is_leaving = |i: &Instance| leaving.contains(&i.id);
    // A canary's replicas are planned on their own, beside the stable ones.
    let canary = record.as_ref().and_then(|r| r.canary.as_ref());
    let (canary_list, stable_list): (Vec<Instance>, Vec<Instance>) = instances
        .iter()
        .filter(|i| {
            !st.removing.contains(&i.id) && !lost.contains(&i.id) && !overdue.contains(&i.id)
        })
        .cloned()
        .partition(|i| canary.is_some_and(|c| c.version == i.version));

    let mut rejected = None;
    let stable_demand = record.as_ref().map(|r| demand_of(&r.spec));
    let mut stable_plan = {
        let mut place = || match stable_demand.as_ref().map(|d| scheduler.place(d)) {
            Some(Ok(node)) => Some(node),
            Some(Err(r)) => {
                rejected = Some(r);
                None
            }
            None => None,
        };
        plan(
            desired,
            &stable_list,
            &is_leaving,
            &restart_at,
            start_at,
            &ready,
            &mut place,
            now,
        )
    };
    let unplaced = match (rejected, &stable_demand) {
        (Some(r), Some(d)) if stable_plan.unplaced > 0 => {
            Some(unplaced_message(stable_plan.unplaced, &r, d))
        }
        _ => None,
    };
    let canary_plan = canary.zip(desired).map(|(c, d)| {
        let want = Desired {
            version: c.version,
            replicas: if d.replicas == 0 {
                0
            } else {
                c.replicas(d.replicas)
            },
            max_unavailable: 0,
        };
        let demand = demand_of(&c.spec);
        let mut place = || scheduler.place(&demand).ok();
        plan(
            Some(want),
            &canary_list,
            &is_leaving,
            &restart_at,
            start_at,
            &ready,
            &mut place,
            now,
        )
    });
    // What the drain's deadline stops goes first.
    let mut stable: Vec<Placed> = overdue
        .iter()
        .map(|id| Action::Remove { id: id.clone() }.into())
        .collect();
    stable.extend(stable_plan.actions.drain(..).map(Placed::from));
    let mut canary_actions = canary_plan.as_ref().map(|p| {
        p.actions
            .iter()
            .cloned()
            .map(Placed::from)
            .collect::<Vec<_>>()
    });
    for placed in stable.iter_mut().chain(canary_actions.iter_mut().flatten()) {
        reserve(&mut st, record.as_ref(), placed);
    }
    let rolling = record.as_ref().is_some_and(|r| {
        stable_list
            .iter()
            .any(|i| i.version != r.version || leaving.contains(&i.id))
    });
    let blocked = instances
        .iter()
        .any(|i| table.get(&i.node).is_some_and(|n| n.record.drained) && !leaving.contains(&i.id));
    let wake_at = [
        stable_plan.wake_at,
        canary_plan.as_ref().and_then(|p| p.wake_at),
        lost_at,
        next_deadline(&table, instances, now),
        // Waiting for an earlier service to leave a drained node.
        blocked.then(|| now + Duration::from_secs(1)),
    ]
    .into_iter()
    .flatten()
    .min();
    let note = st.services.get(service).and_then(|s| s.unplaced.clone());
    drop(st);
    if note != unplaced {
        inner
            .state_mut()
            .services
            .entry(service.to_string())
            .or_default()
            .unplaced = unplaced;
    }
    Decided {
        record,
        stable,
        canary: canary_actions,
        rolling,
        wake_at: wake_at.filter(|w| *w < far),
    }
}

/// Holds a start's resources on its node until it has run (or failed).
fn reserve(st: &mut State, record: Option<&ServiceRecord>, placed: &mut Placed) {
    let (Action::Start { node, .. }, Some(record)) = (&placed.action, record) else {
        return;
    };
    let key = rand::random::<u64>();
    st.placing
        .insert(key, (node.clone(), demand_of(&record.spec).reservation()));
    placed.reservation = Some(key);
}
