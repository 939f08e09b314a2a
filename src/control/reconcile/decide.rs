//! One worker round's decision: from the gathered replicas, the node table
//! and the state, the plans (stable and canary) with each new replica
//! placed by the scheduler and its resources reserved. The state's owner
//! runs it as one change, so two workers never place on the same free
//! room.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use super::placer::Placer;
use super::standing::{standing, Standing};
use crate::agent::Instance;
use crate::control::execute::Placed;
use crate::control::plan::{plan, Action, Desired, Rules};
use crate::control::schedule::{
    demand_of, load_of, unplaced_message, Candidate, Demand, Scheduler,
};
use crate::control::state::State;
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// What to do now.
#[derive(Default)]
pub(crate) struct Decided {
    pub record: Option<ServiceRecord>,
    pub stable: Vec<Placed>,
    /// The canary's own actions, when the service has a canary.
    pub canary: Option<Vec<Placed>>,
    /// Replicas of an older version (or on a drained node) still serve.
    pub rolling: bool,
    /// When to look again even if nothing wakes the worker.
    pub wake_at: Option<Instant>,
    /// The new version cannot be placed even in place of its old
    /// replicas: why (the rollout fails at once).
    pub no_room: Option<String>,
    /// The canary cannot be placed: why (it fails at once).
    pub canary_no_room: Option<String>,
}

fn desired_of(record: Option<&ServiceRecord>) -> Option<Desired> {
    let r = record?;
    let replicas = r.desired_replicas();
    Some(Desired {
        version: r.version,
        replicas,
        max_surge: api::spec::surge_of(r.spec.deploy.as_ref(), replicas),
        max_unavailable: r
            .spec
            .deploy
            .as_ref()
            .and_then(|d| d.max_unavailable)
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
        recreate: r.spec.strategy() == api::spec::Strategy::Recreate,
    })
}

/// The nodes as the scheduler sees them for `service`: what every
/// replica and every start in flight reserves, and how many replicas of
/// the service each node already runs (not counting those that must go).
fn candidates(table: &Table, st: &State, service: &str, going: &HashSet<String>) -> Vec<Candidate> {
    let mut loads = st.node_loads();
    for (node, load) in st.placing.values() {
        loads.entry(node.as_str()).or_default().add(*load);
    }
    let mut of_service: HashMap<&str, u32> = HashMap::new();
    for i in st.instances.get(service).into_iter().flatten() {
        if !going.contains(&i.id) {
            *of_service.entry(i.node.as_str()).or_default() += 1;
        }
    }
    let spec = st.records.get(service).map(|r| &r.spec);
    table
        .nodes
        .values()
        .map(|n| {
            let load = loads.get(n.id()).copied().unwrap_or_default();
            Candidate {
                id: n.id().to_string(),
                labels: n.record.labels.clone(),
                // A node whose containerd is down takes nothing new.
                ready: n.schedulable(),
                drained: n.record.drained,
                capacity: n.capacity(),
                reserved: load.reserved,
                cpu_limits: load.cpu_limits,
                of_service: of_service.get(n.id()).copied().unwrap_or(0),
                host_access: spec.is_none_or(|s| n.record.access.allows(s).is_ok()),
            }
        })
        .collect()
}

/// True if a service named before `service` still has replicas on `node`
/// (drains move one service at a time).
pub(crate) fn earlier_on(st: &State, node: &str, service: &str) -> bool {
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

/// A plan with the spec whose demand its starts reserve (none for a
/// deleted service, which starts nothing).
struct Planned<'a> {
    plan: crate::control::plan::Plan,
    spec: Option<&'a api::spec::ServiceSpec>,
}

/// What the plans of one round came to.
struct Plans<'a> {
    stable: Option<Planned<'a>>,
    canary: Option<Planned<'a>>,
    /// Why stable replicas went unplaced.
    unplaced: Option<String>,
    /// Replicas of another version (or leaving a drained node) still serve.
    rolling: bool,
    /// Replicas of another version still serve (not only a drain).
    upgrading: bool,
    /// See [`Decided::no_room`].
    no_room: Option<String>,
    /// See [`Decided::canary_no_room`].
    canary_no_room: Option<String>,
}

/// Plans the stable replicas and, beside them, the canary's; each new
/// replica placed by `scheduler`.
#[allow(clippy::too_many_arguments)]
fn plans<'a>(
    st: &State,
    record: Option<&'a ServiceRecord>,
    service: &str,
    instances: &[Instance],
    standing: &Standing,
    scheduler: &mut Scheduler,
    far: Instant,
    now: Instant,
) -> Plans<'a> {
    // Dependencies that do not hold yet: nothing starts, nothing restarts.
    let waiting = record.and_then(|r| {
        crate::control::jobs::deps::waiting(&r.spec, &|n| {
            crate::control::jobs::deps::facts(st, n, now)
        })
    });
    let is_waiting = waiting.is_some();
    let restart_at = |id: &str| {
        // A node that cannot be reached restarts its own replicas.
        if standing.unreachable.contains(id) || is_waiting {
            Some(far)
        } else {
            st.replicas.get(id).and_then(|r| r.next_start)
        }
    };
    let has_check = record.is_some_and(|r| crate::control::health::readiness(&r.spec).is_some());
    let ready = |i: &Instance| st.ready(has_check, &i.id, now);
    let is_leaving = |i: &Instance| standing.leaving.contains(&i.id);
    let runtime = st.services.get(service);
    let stale = |i: &Instance| runtime.is_some_and(|s| s.lost.contains(&i.id));
    // The nodes before this round's placements, for what-ifs.
    let base = scheduler.nodes().to_vec();
    let frees_room = |i: &Instance| {
        record.is_some_and(|r| fits_without(&base, r, [i], &demand_of(&r.spec)).is_ok())
    };
    let old_stopping = record.is_some_and(|r| {
        instances
            .iter()
            .any(|i| i.version != r.version && st.removing.contains(&i.id))
    });
    let rules = Rules {
        old_stopping,
        leaving: &is_leaving,
        restart_at: &restart_at,
        start_at: runtime.and_then(|s| s.next_start),
        ready: &ready,
        stale: &stale,
        frees_room: &frees_room,
        now,
    };
    let live: Vec<Instance> = instances
        .iter()
        .filter(|i| {
            !st.removing.contains(&i.id)
                && !standing.lost.contains(&i.id)
                && !standing.overdue.contains(&i.id)
        })
        .cloned()
        .collect();
    let Some(record) = record else {
        // Unknown (or deleted): everything reachable goes.
        let reachable: Vec<Instance> = live
            .into_iter()
            .filter(|i| !standing.unreachable.contains(&i.id))
            .collect();
        let plan = plan(None, &reachable, &rules, &mut |_| None);
        return Plans {
            stable: Some(Planned { plan, spec: None }),
            canary: None,
            unplaced: None,
            rolling: false,
            upgrading: false,
            no_room: None,
            canary_no_room: None,
        };
    };
    if let Some(want) = crate::control::jobs::want_of(record) {
        return job_plans(st, record, want, &live, &rules, scheduler, waiting, now);
    }
    let desired = desired_of(Some(record));
    // A canary's replicas are planned on their own, beside the stable ones.
    let canary = record.canary.as_ref();
    let (canary_list, stable_list): (Vec<Instance>, Vec<Instance>) = live
        .into_iter()
        .partition(|i| canary.is_some_and(|c| c.version == i.version));
    let mut placer = Placer::new(&record.spec, &st.volumes, &st.busy);
    let mut stable = plan(desired, &stable_list, &rules, &mut |slot| {
        (!is_waiting).then(|| placer.place(scheduler, slot))?
    });
    let demand = *placer.demand();
    let unplaced = waited(&mut stable, waiting, now).or_else(|| placer.unplaced(stable.unplaced));
    let waits_for_volume = placer.waiting.is_some();
    let rolling = stable_list
        .iter()
        .any(|i| i.version != record.version || standing.leaving.contains(&i.id));
    // A rollout that cannot place its version even where its own replicas
    // are now fails at once: no room will come by waiting.
    // (Only a new version: a drain that finds no room waits for room.)
    let upgrading = stable_list.iter().any(|i| i.version != record.version);
    let no_room = match (&unplaced, upgrading && !waits_for_volume) {
        (Some(why), true) => {
            let never =
                fits_without(&base, record, &stable_list, &demand).is_err_and(|r| lacks_room(&r));
            never.then(|| {
                format!(
                    "no node can take a replica of version {} even in place of an old one: {why}",
                    record.version
                )
            })
        }
        _ => None,
    };
    let mut canary_no_room = None;
    let canary = canary.zip(desired).map(|(c, d)| {
        let want = Desired {
            version: c.version,
            replicas: if d.replicas == 0 || c.failed.is_some() {
                0
            } else {
                c.replicas(d.replicas)
            },
            max_unavailable: 0,
            max_surge: 1,
            recreate: false,
        };
        let mut placer = Placer::new(&c.spec, &st.volumes, &st.busy);
        let plan = plan(Some(want), &canary_list, &rules, &mut |slot| {
            placer.place(scheduler, slot)
        });
        let demand = *placer.demand();
        canary_no_room = placer
            .rejected
            .filter(|r| plan.unplaced > 0 && lacks_room(r))
            .map(|r| {
                format!(
                    "no room for the canary on any node: {}",
                    unplaced_message(plan.unplaced, &r, &demand)
                )
            });
        Planned {
            plan,
            spec: Some(&c.spec),
        }
    });
    Plans {
        rolling,
        upgrading,
        stable: Some(Planned {
            plan: stable,
            spec: Some(&record.spec),
        }),
        canary,
        unplaced,
        no_room,
        canary_no_room,
    }
}

/// A job's plan ([`crate::control::jobs::plan`]): no canary, no rollout
/// to revert.
#[allow(clippy::too_many_arguments)]
fn job_plans<'a>(
    st: &State,
    record: &'a ServiceRecord,
    want: crate::control::jobs::JobWant,
    live: &[Instance],
    rules: &crate::control::plan::Rules<'_>,
    scheduler: &mut Scheduler,
    waiting: Option<String>,
    now: Instant,
) -> Plans<'a> {
    let mut placer = Placer::new(&record.spec, &st.volumes, &st.busy);
    let mut plan = crate::control::jobs::plan::plan_job(want, live, rules, &mut |slot| {
        waiting.is_none().then(|| placer.place(scheduler, slot))?
    });
    let unplaced = waited(&mut plan, waiting, now).or_else(|| placer.unplaced(plan.unplaced));
    Plans {
        stable: Some(Planned {
            plan,
            spec: Some(&record.spec),
        }),
        canary: None,
        unplaced,
        rolling: false,
        upgrading: false,
        no_room: None,
        canary_no_room: None,
    }
}

/// While replicas wait on dependencies: why, and look again in a second
/// (a dependency coming up changes nothing of this service).
fn waited(
    plan: &mut crate::control::plan::Plan,
    waiting: Option<String>,
    now: Instant,
) -> Option<String> {
    let why = waiting.filter(|_| plan.unplaced > 0)?;
    let soon = now + Duration::from_secs(1);
    plan.wake_at = Some(plan.wake_at.map_or(soon, |w| w.min(soon)));
    Some(why)
}

/// True when placement failed for want of room on nodes that are up: not
/// for a node down or unreachable, which may come back.
fn lacks_room(r: &scheduler::Rejections) -> bool {
    r.not_ready == 0 && r.memory + r.cpu > 0
}

/// Where a replica of `demand` would go if `gone` (replicas of `record`)
/// held nothing: a what-if on `base`, the nodes before this round's
/// placements.
fn fits_without<'i>(
    base: &[Candidate],
    record: &ServiceRecord,
    gone: impl IntoIterator<Item = &'i Instance>,
    demand: &Demand,
) -> Result<String, scheduler::Rejections> {
    let mut nodes = base.to_vec();
    for i in gone {
        if let Some(n) = nodes.iter_mut().find(|n| n.id == i.node) {
            n.release(load_of(record, i.version));
        }
    }
    Scheduler::new(nodes).place(demand)
}

/// The actions of a plan, each start holding its resources on its node.
fn reserved(st: &mut State, planned: &Planned) -> Vec<Placed> {
    let load = planned
        .spec
        .map(|s| demand_of(s).load())
        .unwrap_or_default();
    planned
        .plan
        .actions
        .iter()
        .map(|action| {
            let mut placed = Placed::from(action.clone());
            if let Action::Start { node, .. } = action {
                placed.reservation = Some(st.reserve(node, load));
            }
            placed
        })
        .collect()
}

/// See the module doc. `reschedule_after` is the cluster's default.
pub(crate) fn decide(
    st: &mut State,
    table: &Table,
    reschedule_after: Duration,
    service: &str,
    instances: &[Instance],
    now: Instant,
) -> Decided {
    let record = st.records.get(service).cloned();
    let standing = standing(
        reschedule_after,
        table,
        st,
        record.as_ref(),
        service,
        instances,
        now,
    );
    let going: HashSet<String> = standing
        .lost
        .iter()
        .chain(&standing.leaving)
        .chain(&standing.overdue)
        .cloned()
        .collect();
    let mut scheduler = Scheduler::new(candidates(table, st, service, &going));
    let far = now + Duration::from_secs(3600);
    let Plans {
        stable: stable_plan,
        canary: canary_plan,
        unplaced,
        rolling,
        upgrading,
        no_room,
        canary_no_room,
    } = plans(
        st,
        record.as_ref(),
        service,
        instances,
        &standing,
        &mut scheduler,
        far,
        now,
    );
    // What the drain's deadline stops goes first.
    let mut stable: Vec<Placed> = standing
        .overdue
        .iter()
        .map(|id| Action::Remove { id: id.clone() }.into())
        .collect();
    if let Some(p) = &stable_plan {
        stable.extend(reserved(st, p));
    }
    let canary = canary_plan.as_ref().map(|p| reserved(st, p));
    let blocked = instances.iter().any(|i| {
        table.get(&i.node).is_some_and(|n| n.record.drained) && !standing.leaving.contains(&i.id)
    });
    let wake_at = [
        stable_plan.as_ref().and_then(|p| p.plan.wake_at),
        canary_plan.as_ref().and_then(|p| p.plan.wake_at),
        standing.lost_at,
        next_deadline(table, instances, now),
        // Waiting for an earlier service to leave a drained node.
        blocked.then(|| now + Duration::from_secs(1)),
    ]
    .into_iter()
    .flatten()
    .min();
    let in_place = stable_plan
        .as_ref()
        .and_then(|p| p.plan.in_place)
        // A drain without room waits for room: only a new version goes in
        // place (and one that fits nowhere fails instead).
        .filter(|_| upgrading && no_room.is_none())
        .map(|n| {
            let at_a_time = if n == 1 {
                "1 at a time".to_string()
            } else {
                format!("{n} at a time")
            };
            format!("no room for a surge on any node; replacing in place, {at_a_time}")
        });
    // Replacing in place is the plan working, not a replica left out.
    st.unplaced(service, unplaced.filter(|_| in_place.is_none()));
    st.in_place(service, in_place);
    st.lost(service, &standing.lost, instances);
    Decided {
        record,
        stable,
        canary,
        rolling,
        wake_at: wake_at.filter(|w| *w < far),
        no_room,
        canary_no_room,
    }
}
