//! Every change to the [`State`], as a plain function of the state and
//! the time: the owner task applies them one at a time, and unit tests
//! call them directly. A change an answer shows bumps the epoch.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use api::status::LastExit;

use super::{ServiceRuntime, State};
use crate::agent::{service_of, Instance, ProcessState};
use crate::control::plan;
use crate::feed::{Announced, Note};
use crate::store::ServiceRecord;

/// A replica's exit as its node reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Exit {
    pub code: u32,
    pub oom_killed: bool,
    pub at: SystemTime,
}

impl State {
    fn touch(&mut self) {
        self.epoch += 1;
    }

    fn service_mut(&mut self, service: &str) -> &mut ServiceRuntime {
        self.touch();
        Arc::make_mut(&mut self.services)
            .entry(service.to_string())
            .or_default()
    }

    /// Keeps `record` (just saved), and says what changed for the feed.
    pub fn put_record(&mut self, record: ServiceRecord) -> Vec<Note> {
        self.touch();
        let name = record.spec.name.clone();
        let notes = crate::feed::record_notes(self.records.get(&name), &record);
        Arc::make_mut(&mut self.records).insert(name, record);
        notes
    }

    /// Records the replicas a gathering found for `service`, and the
    /// exits among them no event reported yet, so that a replica is never
    /// restarted before its backoff is known. Only a real change counts.
    pub fn listed(&mut self, service: &str, listed: Vec<Instance>, now: Instant) {
        if self.instances.get(service) == Some(&listed) {
            return;
        }
        self.touch();
        for i in &listed {
            let ProcessState::Exited { code } = i.state else {
                continue;
            };
            let known = self.replicas.get(&i.id).is_some_and(|r| r.exited);
            if !known && !self.removing.contains(&i.id) {
                let exit = Exit {
                    code,
                    oom_killed: false,
                    at: SystemTime::now(),
                };
                self.record_exit(&i.id, &exit, now);
            }
        }
        Arc::make_mut(&mut self.instances).insert(service.to_string(), listed);
    }

    /// Forgets a service that is neither wanted nor running anywhere.
    pub fn forget_service(&mut self, service: &str) {
        self.touch();
        Arc::make_mut(&mut self.instances).remove(service);
        Arc::make_mut(&mut self.services).remove(service);
    }

    /// Keeps since when the service's version has been unsettled, and the
    /// rollout as the feed last told it.
    pub fn settling(
        &mut self,
        service: &str,
        unsettled_since: Option<(u64, Instant)>,
        announced: Option<Announced>,
    ) {
        let s = self.service_mut(service);
        s.unsettled_since = unsettled_since;
        s.announced = announced;
    }

    /// Why the last deploy ran the local image (None: it pulled).
    pub fn pull_note(&mut self, service: &str, note: Option<String>) {
        self.service_mut(service).pull_note = note;
    }

    /// Why wanted replicas have no node (None: all placed).
    pub fn unplaced(&mut self, service: &str, why: Option<String>) {
        if self.services.get(service).and_then(|s| s.unplaced.as_ref()) != why.as_ref() {
            self.service_mut(service).unplaced = why;
        }
    }

    /// How a rollout goes when it replaces in place (None: it surges, or
    /// there is no rollout).
    pub fn in_place(&mut self, service: &str, note: Option<String>) {
        if self.services.get(service).and_then(|s| s.in_place.as_ref()) != note.as_ref() {
            self.service_mut(service).in_place = note;
        }
    }

    /// Keeps which of `service`'s replicas were given up for lost:
    /// `lost` now, and those of before that are still listed.
    pub fn lost(&mut self, service: &str, lost: &HashSet<String>, listed: &[Instance]) {
        let before = self.services.get(service).map(|s| &s.lost);
        let mut now: HashSet<String> = before
            .into_iter()
            .flatten()
            .filter(|id| listed.iter().any(|i| &i.id == *id))
            .cloned()
            .collect();
        now.extend(lost.iter().cloned());
        if before.map_or(!now.is_empty(), |b| *b != now) {
            self.service_mut(service).lost = now;
        }
    }

    /// Why each TLS service's certificate cannot be served: every service
    /// not named has none.
    pub fn tls_problems(&mut self, mut problems: HashMap<String, String>) {
        let same = self
            .services
            .iter()
            .all(|(name, s)| s.tls_problem.as_ref() == problems.get(name))
            && problems.keys().all(|name| self.services.contains_key(name));
        if same {
            return;
        }
        self.touch();
        let services = Arc::make_mut(&mut self.services);
        for (name, s) in services.iter_mut() {
            s.tls_problem = problems.remove(name);
        }
        for (name, problem) in problems {
            services.entry(name).or_default().tls_problem = Some(problem);
        }
    }

    /// Records a replica's exit: its backoff, last exit and crash count,
    /// unless it is being removed on purpose (then false). A second report
    /// of the same exit (the event after a listing saw it, or the other
    /// way round) only adds what it knows (an OOM kill).
    pub fn record_exit(&mut self, id: &str, exit: &Exit, now: Instant) -> bool {
        if self.removing.contains(id) {
            return false;
        }
        self.touch();
        // Seen running (listed so, or its start recorded), so its exit was
        // witnessed: not found over on a (re)start, nor a task that never
        // started, killed when it was cleared away.
        let was_running = self.instances.get(service_of(id)).is_some_and(|seen| {
            seen.iter()
                .any(|s| s.id == id && s.state == ProcessState::Running)
        });
        let r = Arc::make_mut(&mut self.replicas)
            .entry(id.to_string())
            .or_default();
        if r.exited {
            if let Some(e) = r.last_exit.as_mut() {
                e.oom_killed |= exit.oom_killed;
            }
            return true;
        }
        r.exited = true;
        r.exit_witnessed = was_running || r.started_at.is_some();
        let ran_long = r
            .started_at
            .is_some_and(|s| now.duration_since(s) >= plan::HEALTHY_RESET);
        r.consecutive = if ran_long { 1 } else { r.consecutive + 1 };
        r.next_start = Some(now + plan::crash_backoff(r.consecutive));
        r.last_exit = Some(LastExit {
            code: exit.code,
            oom_killed: exit.oom_killed,
            at: humantime::format_rfc3339_seconds(exit.at).to_string(),
        });
        if let Some(list) = Arc::make_mut(&mut self.instances).get_mut(service_of(id)) {
            for i in list.iter_mut().filter(|i| i.id == id) {
                i.state = ProcessState::Exited { code: exit.code };
                i.pid = None;
            }
        }
        true
    }

    /// Records that a replica's process started.
    pub fn record_start(&mut self, id: &str, pid: u32, now: Instant) {
        self.touch();
        let r = Arc::make_mut(&mut self.replicas)
            .entry(id.to_string())
            .or_default();
        r.started_at = Some(now);
        r.exited = false;
        if let Some(list) = Arc::make_mut(&mut self.instances).get_mut(service_of(id)) {
            for i in list.iter_mut().filter(|i| i.id == id) {
                i.state = ProcessState::Running;
                i.pid = Some(pid);
            }
        }
    }

    /// Records a restart done by orca; the replica's restart count.
    pub fn restarted(&mut self, id: &str, pid: u32, now: Instant) -> u32 {
        self.record_start(id, pid, now);
        let r = Arc::make_mut(&mut self.replicas)
            .entry(id.to_string())
            .or_default();
        r.restarts += 1;
        r.next_start = None;
        r.failed_restarts = 0;
        r.restarts
    }

    /// Records a restart that failed: backoff, and why, for status. How
    /// many restarts of it failed in a row.
    pub fn restart_failed(&mut self, service: &str, id: &str, error: String, now: Instant) -> u32 {
        let r = Arc::make_mut(&mut self.replicas)
            .entry(id.to_string())
            .or_default();
        r.consecutive += 1;
        r.failed_restarts += 1;
        r.next_start = Some(now + plan::backoff(r.consecutive));
        let failed = r.failed_restarts;
        self.service_mut(service).last_error = Some(error);
        failed
    }

    /// Records a new replica running on its node, counted there until the
    /// next listing; the service's start failures are over.
    pub fn started_new(&mut self, instance: Instance, pid: u32, now: Instant) {
        let id = instance.id.clone();
        let service = instance.service.clone();
        let list = Arc::make_mut(&mut self.instances)
            .entry(service.clone())
            .or_default();
        if !list.iter().any(|i| i.id == id) {
            list.push(instance);
        }
        self.record_start(&id, pid, now);
        let s = self.service_mut(&service);
        s.start_failures = 0;
        s.next_start = None;
        s.last_error = None;
    }

    /// Records a failed start of a new replica: the service's backoff.
    pub fn start_failed(&mut self, service: &str, error: String, now: Instant) {
        let s = self.service_mut(service);
        s.start_failures += 1;
        s.next_start = Some(now + plan::backoff(s.start_failures));
        s.last_error = Some(error);
    }

    /// Holds `load` on `node` for a start in flight, under a new key.
    pub fn reserve(&mut self, node: &str, load: scheduler::Load) -> u64 {
        let key = loop {
            let key = rand::random::<u64>();
            if !self.placing.contains_key(&key) {
                break key;
            }
        };
        Arc::make_mut(&mut self.placing).insert(key, (node.to_string(), load));
        key
    }

    /// Frees what a start held (it counts where it runs from now on).
    pub fn release(&mut self, key: u64) {
        if self.placing.contains_key(&key) {
            Arc::make_mut(&mut self.placing).remove(&key);
        }
    }

    /// Marks a replica as being removed on purpose; false if it already is.
    /// Claims volumes `keys` for `node` (see [`crate::volumes::claim`]):
    /// the new records, to be stored before the start that needs them.
    pub fn claim_volumes(
        &mut self,
        keys: &[String],
        node: &str,
    ) -> Result<Vec<crate::store::VolumeRecord>, String> {
        let unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let new = crate::volumes::claim(&self.volumes, keys, node, unix)?;
        if !new.is_empty() {
            self.touch();
            let map = Arc::make_mut(&mut self.volumes);
            for v in &new {
                map.insert(v.key(), v.clone());
            }
        }
        Ok(new)
    }

    /// Marks volume `key` busy with `why` (false: it already is), or
    /// (`None`) no longer busy.
    pub fn set_busy(&mut self, key: &str, why: Option<String>) -> bool {
        self.touch();
        let map = Arc::make_mut(&mut self.busy);
        match why {
            Some(w) if map.contains_key(key) => {
                let _ = w;
                false
            }
            Some(w) => {
                map.insert(key.to_string(), w);
                true
            }
            None => map.remove(key).is_some(),
        }
    }

    /// Puts (`Some`) or forgets a volume's record.
    pub fn set_volume(&mut self, key: &str, record: Option<crate::store::VolumeRecord>) {
        self.touch();
        let map = Arc::make_mut(&mut self.volumes);
        match record {
            Some(r) => map.insert(key.to_string(), r),
            None => map.remove(key),
        };
    }

    pub fn removing(&mut self, id: &str) -> bool {
        if self.removing.contains(id) {
            return false;
        }
        self.touch();
        Arc::make_mut(&mut self.removing).insert(id.to_string())
    }

    /// Forgets a removed replica.
    pub fn removed(&mut self, id: &str) {
        self.touch();
        Arc::make_mut(&mut self.removing).remove(id);
        Arc::make_mut(&mut self.replicas).remove(id);
    }

    /// Marks replica `id` as checked by a health checker; false if it
    /// already is.
    pub fn checker_started(&mut self, id: &str) -> bool {
        !self.checkers.contains(id) && Arc::make_mut(&mut self.checkers).insert(id.to_string())
    }

    /// A checker is gone. With `reset`, its replica's readiness is unknown
    /// again (the checker of this server stopped); without, the replica's
    /// node could not be asked, and the next round asks again.
    pub fn checker_ended(&mut self, id: &str, reset: bool) {
        if self.checkers.contains(id) {
            Arc::make_mut(&mut self.checkers).remove(id);
        }
        if reset && self.replicas.contains_key(id) {
            self.touch();
            if let Some(r) = Arc::make_mut(&mut self.replicas).get_mut(id) {
                r.healthy = None;
                r.ready_failures = 0;
            }
        }
    }

    /// Forgets which replicas of `node` are checked (a new connection:
    /// the node checks nothing yet).
    pub fn forget_checks(&mut self, node: &str) {
        let on_node: Vec<String> = self
            .instances
            .values()
            .flatten()
            .filter(|i| i.node == node && self.checkers.contains(&i.id))
            .map(|i| i.id.clone())
            .collect();
        if !on_node.is_empty() {
            let checkers = Arc::make_mut(&mut self.checkers);
            for id in on_node {
                checkers.remove(&id);
            }
        }
    }

    /// Records a replica's readiness and its failed probes in a row (its
    /// node's verdict keeps the count); true if the readiness changed.
    pub fn readiness(&mut self, id: &str, healthy: Option<bool>, failures: Option<u32>) -> bool {
        let before = self.replicas.get(id);
        let changed = before.and_then(|r| r.healthy) != healthy;
        let same_count = failures.is_none_or(|f| before.map_or(0, |r| r.ready_failures) == f);
        if !changed && same_count {
            return false;
        }
        self.touch();
        let r = Arc::make_mut(&mut self.replicas)
            .entry(id.to_string())
            .or_default();
        r.healthy = healthy;
        if let Some(f) = failures {
            r.ready_failures = f;
        }
        changed
    }
}
