//! Jobs: services that run to an end (`restart = "on-failure"` or
//! `"never"`), in numbered runs. A run is asked for by a deploy of a new
//! version (unscheduled jobs), by the schedule or by `orca run`; its
//! replicas carry its number, are not restarted once over for good, and
//! the run ends when every one is. The decisions are pure: what to start
//! and stop ([`plan`]), whether a run ended and how status tells it
//! ([`outcome`]), when a schedule is due ([`timer`]), whether a
//! dependency holds ([`deps`]); [`runs`] acts on them.

pub(crate) mod deps;
pub(crate) mod outcome;
pub(crate) mod plan;
pub(crate) mod runs;
pub(crate) mod timer;

use api::spec::{RestartPolicy, ServiceSpec};

use crate::store::{JobRecord, ServiceRecord};

/// What a job's record asks of its replicas now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct JobWant {
    pub version: u64,
    pub run: u64,
    pub replicas: u32,
    /// The run has not ended: missing replicas start.
    pub active: bool,
    pub policy: RestartPolicy,
}

/// The want of a job's record (None for a service that always restarts).
pub(crate) fn want_of(record: &ServiceRecord) -> Option<JobWant> {
    let policy = record.spec.restart_policy();
    (policy != RestartPolicy::Always).then(|| JobWant {
        version: record.version,
        run: record.job.run,
        replicas: record.desired_replicas(),
        active: record.job.active() && !record.stopped,
        policy,
    })
}

/// The runs after a deploy of `spec` (a new version, or a stopped service
/// deployed again) at `now`: an unscheduled job runs anew; a scheduled
/// one waits for its schedule.
pub(crate) fn deployed(job: &JobRecord, spec: &ServiceSpec, now: &str) -> JobRecord {
    let mut job = job.clone();
    if spec.schedule.is_some() && job.last_due.is_none() {
        // Due times from now on count, none before.
        job.last_due = Some(runs::unix_now());
    }
    if spec.is_job() && spec.schedule.is_none() {
        job.run += 1;
        job.last_run = Some(now.to_string());
        job.trigger = Some("a deploy".into());
    } else if !spec.is_job() {
        // No longer a job: nothing waits on its runs.
        job.done = job.run;
    }
    job
}
