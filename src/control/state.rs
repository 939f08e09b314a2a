//! The control plane's in-memory view: the records (a cache of the store),
//! the replicas each service has as last seen on the node, and what the
//! reconciler remembers about crashes and failed starts.

use std::collections::{HashMap, HashSet};
use std::time::{Instant, SystemTime};

use api::status::LastExit;

use super::plan;
use super::progress::Replica;
use crate::agent::{Instance, ProcessState};
use crate::store::ServiceRecord;

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
}

/// See the module doc.
#[derive(Debug, Default)]
pub struct State {
    pub records: HashMap<String, ServiceRecord>,
    pub instances: HashMap<String, Vec<Instance>>,
    pub replicas: HashMap<String, ReplicaRuntime>,
    pub services: HashMap<String, ServiceRuntime>,
    /// Replicas being removed on purpose: their exits are no crashes.
    pub removing: HashSet<String>,
    /// Resources held for replicas being started, by a key per start:
    /// node and reservation (see `schedule`).
    pub placing: HashMap<u64, (String, crate::agent::Capacity)>,
    /// Replicas that have a health checker running.
    pub checkers: HashSet<String>,
    /// Bumped by every change (see `Inner::state_mut`).
    pub epoch: u64,
}

impl State {
    /// What the replicas on each node reserve (their service's
    /// `resources`), by node.
    pub fn allocated(&self) -> HashMap<&str, crate::agent::Capacity> {
        let mut out: HashMap<&str, crate::agent::Capacity> = HashMap::new();
        for (name, list) in &self.instances {
            let reservation = self
                .records
                .get(name)
                .map(|r| super::schedule::demand_of(&r.spec).reservation())
                .unwrap_or_default();
            for i in list {
                let a = out.entry(i.node.as_str()).or_default();
                a.cpu += reservation.cpu;
                a.memory_bytes += reservation.memory_bytes;
            }
        }
        out
    }

    /// Records a replica's exit: its backoff, last exit and crash count.
    /// A second report of the same exit (the event after a listing saw it,
    /// or the other way round) only adds what it knows (an OOM kill).
    pub fn record_exit(
        &mut self,
        id: &str,
        code: u32,
        oom_killed: bool,
        at: SystemTime,
        now: Instant,
    ) {
        let r = self.replicas.entry(id.to_string()).or_default();
        if r.exited {
            if let Some(e) = r.last_exit.as_mut() {
                e.oom_killed |= oom_killed;
            }
            return;
        }
        r.exited = true;
        let ran_long = r
            .started_at
            .is_some_and(|s| now.duration_since(s) >= plan::HEALTHY_RESET);
        r.consecutive = if ran_long { 1 } else { r.consecutive + 1 };
        r.next_start = Some(now + plan::backoff(r.consecutive));
        r.last_exit = Some(LastExit {
            code,
            oom_killed,
            at: humantime::format_rfc3339_seconds(at).to_string(),
        });
        let service = crate::agent::service_of(id);
        if let Some(list) = self.instances.get_mut(service) {
            for i in list.iter_mut().filter(|i| i.id == id) {
                i.state = ProcessState::Exited { code };
                i.pid = None;
            }
        }
    }

    /// Records that a replica's process started.
    pub fn record_start(&mut self, id: &str, pid: u32, now: Instant) {
        let r = self.replicas.entry(id.to_string()).or_default();
        r.started_at = Some(now);
        r.exited = false;
        let service = crate::agent::service_of(id);
        if let Some(list) = self.instances.get_mut(service) {
            for i in list.iter_mut().filter(|i| i.id == id) {
                i.state = ProcessState::Running;
                i.pid = Some(pid);
            }
        }
    }

    /// Records the exits a listing shows that no event has reported yet,
    /// so that a replica is never restarted before its backoff is known.
    pub fn record_listed_exits(&mut self, listed: &[Instance], now: Instant) {
        for i in listed {
            let ProcessState::Exited { code } = i.state else {
                continue;
            };
            let known = self.replicas.get(&i.id).is_some_and(|r| r.exited);
            if !known && !self.removing.contains(&i.id) {
                self.record_exit(&i.id, code, false, SystemTime::now(), now);
            }
        }
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

    /// A service's replicas as its rollout sees them.
    pub fn rollout_replicas(&self, record: &ServiceRecord, now: Instant) -> Vec<Replica> {
        let has_check = super::health::readiness(&record.spec).is_some();
        self.instances
            .get(&record.spec.name)
            .into_iter()
            .flatten()
            .map(|i| Replica {
                version: i.version,
                slot: i.slot,
                serving: matches!(i.state, ProcessState::Running) && !self.removing.contains(&i.id),
                ready: self.ready(has_check, &i.id, now),
            })
            .collect()
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
