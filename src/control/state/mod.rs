//! The control plane's in-memory view: the records (a cache of the store),
//! the replicas each service has as last seen on the node, and what the
//! reconciler remembers about crashes and failed starts.
//!
//! One task owns it ([`owner`]): everyone else holds a [`StateHandle`],
//! reads the snapshot it publishes after each batch of changes, and asks
//! it for changes, which are plain functions over the state ([`change`]).
//! Each map is shared with the snapshots and copied only when changed
//! while a snapshot still holds it.

mod change;
mod owner;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use api::status::LastExit;

use super::plan;
use super::progress::Replica;
use crate::agent::{Instance, ProcessState};
use crate::store::ServiceRecord;
use scheduler::Load;

pub(crate) use change::Exit;
pub(crate) use owner::StateHandle;

/// How long a replica without a readiness check must run to count as ready.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);

/// What the reconciler remembers about one replica.
#[derive(Debug, Clone, Default)]
pub struct ReplicaRuntime {
    /// Restarts done by orca.
    pub restarts: u32,
    /// Crashes since it last ran healthy for [`plan::HEALTHY_RESET`].
    pub consecutive: u32,
    pub last_exit: Option<LastExit>,
    /// Not restarted before this.
    pub next_start: Option<Instant>,
    /// When its process last started (as far as this orca saw).
    pub started_at: Option<Instant>,
    /// Readiness: `None` while unchecked, then the checks' verdict.
    pub healthy: Option<bool>,
    /// Failed readiness probes in a row.
    pub ready_failures: u32,
    /// Its exit since it last started is recorded (by the event or by a
    /// listing that saw it first): one exit counts once.
    pub exited: bool,
    /// Its last exit was seen happen to a replica seen running: not found
    /// already over on a (re)start (maybe this server's own removal before
    /// a crash), nor a task that never started, killed as it was cleared
    /// away. Only a witnessed exit fails a rollout.
    pub exit_witnessed: bool,
    /// Restarts that failed in a row.
    pub failed_restarts: u32,
}

/// What the reconciler remembers about a service.
#[derive(Debug, Clone, Default)]
pub struct ServiceRuntime {
    /// Failed attempts to start new replicas in a row.
    pub start_failures: u32,
    pub next_start: Option<Instant>,
    /// Why the service is not as wanted, for status.
    pub last_error: Option<String>,
    /// Since when the record's version (the first number) has not settled
    /// (every wanted replica ready, nothing else left): the rollout's
    /// deadline runs from there.
    pub unsettled_since: Option<(u64, Instant)>,
    /// The rollout as the event feed last told it.
    pub announced: Option<crate::feed::Announced>,
    /// Why its certificate cannot be served (see `certs`).
    pub tls_problem: Option<String>,
    /// Set when the last deploy ran the local image because the registry
    /// could not be reached.
    pub pull_note: Option<String>,
    /// Why wanted replicas have no node.
    pub unplaced: Option<String>,
    /// Set while a rollout replaces in place for want of room: how.
    pub in_place: Option<String>,
    /// Replicas given up for lost (their node was gone past the reschedule
    /// delay) and still listed: if they come back, they are the surplus.
    pub lost: HashSet<String>,
}

/// See the module doc. Read-only outside [`change`]: the maps are shared
/// (`Arc`), so only the owner's changes can write them.
#[derive(Debug, Default, Clone)]
pub struct State {
    pub records: Arc<HashMap<String, ServiceRecord>>,
    pub instances: Arc<HashMap<String, Vec<Instance>>>,
    pub replicas: Arc<HashMap<String, ReplicaRuntime>>,
    pub services: Arc<HashMap<String, ServiceRuntime>>,
    /// Replicas being removed on purpose: their exits are no crashes.
    pub removing: Arc<HashSet<String>>,
    /// What replicas being started hold, by a key per start: node and
    /// load (see `schedule`).
    pub placing: Arc<HashMap<u64, (String, Load)>>,
    /// Replicas that have a health checker running.
    pub checkers: Arc<HashSet<String>>,
    /// Named volumes by `project/name`: the node that holds each (a
    /// cache of the store).
    pub volumes: Arc<std::collections::BTreeMap<String, crate::store::VolumeRecord>>,
    /// Volumes being restored or moved, with why: their replicas are
    /// stopped and none starts until the work is done.
    pub busy: Arc<std::collections::BTreeMap<String, String>>,
    /// Bumped by every change that an answer shows, so that answers cached
    /// from an older state are not served again (see `status`).
    pub epoch: u64,
}

impl State {
    /// What the replicas on each node reserve and the CPU limits they
    /// have, by node: each replica by the spec of its own version (an old
    /// version's replicas mid-rollout, a canary's), so that nothing is
    /// counted by a spec it does not run.
    pub fn node_loads(&self) -> HashMap<&str, Load> {
        let mut out: HashMap<&str, Load> = HashMap::new();
        for (name, list) in self.instances.iter() {
            let record = self.records.get(name);
            let mut by_version: HashMap<u64, Load> = HashMap::new();
            for i in list {
                let load = *by_version.entry(i.version).or_insert_with(|| {
                    record
                        .map(|r| super::schedule::load_of(r, i.version))
                        .unwrap_or_default()
                });
                out.entry(i.node.as_str()).or_default().add(load);
            }
        }
        out
    }

    /// True if replica `id` takes traffic: its readiness check passed
    /// (`has_check`), or it has run for [`SETTLE`] (or since before this
    /// orca saw it start).
    pub fn ready(&self, has_check: bool, id: &str, now: Instant) -> bool {
        let r = self.replicas.get(id);
        if has_check {
            r.and_then(|x| x.healthy) == Some(true)
        } else {
            r.and_then(|x| x.started_at)
                .is_none_or(|t| now.duration_since(t) >= SETTLE)
        }
    }

    /// A service's replicas as its rollout sees them: those on nodes that
    /// cannot be reached now are not known to run, and do not count.
    pub fn rollout_replicas(
        &self,
        record: &ServiceRecord,
        reachable: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> Vec<Replica> {
        let has_check = super::health::readiness(&record.spec).is_some();
        self.instances
            .get(&record.spec.name)
            .into_iter()
            .flatten()
            .filter(|i| reachable(&i.node))
            .map(|i| Replica {
                version: i.version,
                slot: i.slot,
                serving: matches!(i.state, ProcessState::Running) && !self.removing.contains(&i.id),
                ready: self.ready(has_check, &i.id, now),
            })
            .collect()
    }

    /// True when `record`'s version has settled: by what reachable nodes
    /// report now, or by what every node last reported. A node going away
    /// later unsettles no rollout (its replicas are unknown, not late),
    /// and neither do their replacements.
    pub fn settled(
        &self,
        record: &ServiceRecord,
        reachable: &dyn Fn(&str) -> bool,
        now: Instant,
    ) -> bool {
        super::progress::settled(record, &self.rollout_replicas(record, reachable, now))
            || super::progress::settled(record, &self.rollout_replicas(record, &|_| true, now))
    }

    /// True while a replica keeps crashing (twice or more without a
    /// healthy stretch).
    pub fn crash_looping(&self, id: &str, now: Instant) -> bool {
        self.replicas.get(id).is_some_and(|r| {
            r.consecutive >= 2
                && r.started_at
                    .is_none_or(|s| now.duration_since(s) < plan::HEALTHY_RESET)
        })
    }
}
