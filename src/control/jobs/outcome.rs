//! Where a job's run stands, pure: whether it ended and with which exit
//! codes, and how status and the rollout tell it.

use api::status::{JobStatus, Rollout, RolloutPhase, ServiceState};

use super::JobWant;
use crate::agent::{Instance, ProcessState};
use crate::store::ServiceRecord;

/// The replicas of the wanted run, slot by slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RunView {
    /// Every slot's replica is over for good: the run ended.
    pub ended: bool,
    /// Exit codes by slot (of the replicas that are over).
    pub codes: Vec<u32>,
    /// Replicas of the run that run now.
    pub running: u32,
    /// Replicas of the run that are over for good.
    pub over: u32,
    /// Replicas of the run that exited and will be started again.
    pub retrying: u32,
    /// Replicas of other versions or runs still there.
    pub other: u32,
}

/// Looks at `instances` for `want`'s run.
pub(crate) fn run_view(want: &JobWant, instances: &[Instance]) -> RunView {
    let mut view = RunView::default();
    let mut slots: Vec<Option<u32>> = vec![None; want.replicas as usize];
    for i in instances {
        if i.version != want.version || i.run != want.run || i.slot >= want.replicas {
            view.other += 1;
            continue;
        }
        match i.state {
            ProcessState::Exited { code } if want.policy.finished(code) => {
                view.over += 1;
                slots[i.slot as usize] = Some(code);
            }
            ProcessState::Exited { .. } => view.retrying += 1,
            _ => view.running += 1,
        }
    }
    view.ended = want.active && slots.iter().all(Option::is_some);
    view.codes = slots.into_iter().flatten().collect();
    view
}

/// A job's overall state and message. `waiting` says why its replicas
/// have not started (a dependency, no room).
pub(crate) fn state(
    record: &ServiceRecord,
    want: &JobWant,
    view: &RunView,
    waiting: Option<&str>,
) -> (ServiceState, Option<String>) {
    let job = &record.job;
    if record.stopped {
        return (ServiceState::Stopped, None);
    }
    if want.active {
        let mut msg = format!(
            "run {}: {} of {} replicas running, {} finished",
            job.run, view.running, want.replicas, view.over
        );
        if view.retrying > 0 {
            msg.push_str(&format!(", {} to be retried", view.retrying));
        }
        if let Some(w) = waiting {
            msg.push_str(&format!("; {w}"));
        }
        let state = if view.running + view.over + view.retrying == 0 {
            ServiceState::Pending
        } else {
            ServiceState::Running
        };
        return (state, Some(msg));
    }
    match job.succeeded() {
        None => (
            ServiceState::Pending,
            Some(match &record.spec.schedule {
                Some(s) => format!("waiting for its schedule {s:?}"),
                None => "no run yet".into(),
            }),
        ),
        Some(true) => (
            ServiceState::Completed,
            Some(format!("run {} completed", job.done)),
        ),
        Some(false) => {
            let codes: Vec<String> = job.exit_codes.iter().map(u32::to_string).collect();
            (
                ServiceState::Failed,
                Some(format!(
                    "run {} failed: exit codes [{}]",
                    job.done,
                    codes.join(", ")
                )),
            )
        }
    }
}

/// The job's part of status; `next_run` as RFC 3339.
pub(crate) fn job_status(record: &ServiceRecord, next_run: Option<String>) -> JobStatus {
    let job = &record.job;
    JobStatus {
        restart: record.spec.restart_policy().as_str().to_string(),
        run: job.run,
        active: job.active() && !record.stopped,
        last_run: job.last_run.clone(),
        trigger: job.trigger.clone(),
        next_run,
        schedule: record.spec.schedule.clone(),
        last_exit_code: (job.done > 0).then(|| {
            job.exit_codes
                .iter()
                .copied()
                .find(|c| *c != 0)
                .unwrap_or(0)
        }),
        exit_codes: job.exit_codes.clone(),
        finished_at: job.finished_at.clone(),
        skipped: job.skipped,
        last_skipped: job.last_skipped.clone(),
    }
}

/// A job's rollout: complete once nothing of another version is left and
/// the run's replicas are there (running or over); it never reverts.
pub(crate) fn rollout(
    record: &ServiceRecord,
    want: &JobWant,
    view: &RunView,
    deadline_secs: u64,
) -> Rollout {
    let there = view.running + view.over + view.retrying;
    let complete = view.other == 0 && (!want.active || there >= want.replicas);
    let (phase, what) = if complete {
        (RolloutPhase::Complete, "in place")
    } else {
        (RolloutPhase::Progressing, "coming")
    };
    Rollout {
        version: record.version,
        phase,
        message: format!(
            "version {} {what}: job run {}, {there} of {} replicas started",
            record.version, record.job.run, want.replicas
        ),
        updated: there,
        total: want.replicas,
        old: view.other,
        deadline_secs,
        weight: None,
    }
}

/// What status shows of a job: its state, message, rollout and runs,
/// from its replicas as listed, with `now` in Unix seconds.
pub(crate) fn parts(
    record: &ServiceRecord,
    want: &JobWant,
    instances: &[Instance],
    waiting: Option<&str>,
    deadline_secs: u64,
    now: i64,
) -> (ServiceState, Option<String>, Option<Rollout>, JobStatus) {
    let view = run_view(want, instances);
    let (state, message) = state(record, want, &view, waiting);
    let next = super::runs::schedule_of(record)
        .filter(|_| !record.stopped)
        .and_then(|s| super::timer::next(&s, record.job.last_due, now))
        .map(super::runs::rfc3339);
    let rollout = (!record.stopped).then(|| rollout(record, want, &view, deadline_secs));
    (state, message, rollout, job_status(record, next))
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::spec::RestartPolicy;

    fn inst(slot: u32, run: u64, state: ProcessState) -> Instance {
        Instance {
            id: format!("j.{slot}.{run}"),
            node: "n1".into(),
            service: "j".into(),
            project: "default".into(),
            version: 1,
            slot,
            pid: None,
            state,
            ip: None,
            run,
            restart: RestartPolicy::OnFailure,
        }
    }

    #[test]
    fn a_run_ends_when_every_slot_is_over() {
        let want = JobWant {
            version: 1,
            run: 2,
            replicas: 2,
            active: true,
            policy: RestartPolicy::OnFailure,
        };
        let ok = ProcessState::Exited { code: 0 };
        let v = run_view(&want, &[inst(0, 2, ok), inst(1, 2, ProcessState::Running)]);
        assert!(!v.ended);
        assert_eq!((v.running, v.over), (1, 1));
        let v = run_view(
            &want,
            &[inst(0, 2, ok), inst(1, 2, ProcessState::Exited { code: 3 })],
        );
        assert!(!v.ended, "on-failure retries a failure");
        assert_eq!(v.retrying, 1);
        let never = JobWant {
            policy: RestartPolicy::Never,
            ..want
        };
        let v = run_view(
            &never,
            &[inst(0, 2, ok), inst(1, 2, ProcessState::Exited { code: 3 })],
        );
        assert!(v.ended);
        assert_eq!(v.codes, vec![0, 3]);
        let v = run_view(&never, &[inst(0, 1, ok), inst(1, 2, ok)]);
        assert!(!v.ended, "slot 0 is of an older run");
        assert_eq!(v.other, 1);
    }
}
