//! A job's plan, pure: the replicas of the wanted version and run stay
//! (one per slot), everything else goes; a replica that exited is started
//! again only when its policy says the exit was a failure to retry (after
//! the backoff); missing slots start only while the run is active.

use std::collections::BTreeMap;

use super::JobWant;
use crate::agent::{Instance, ProcessState};
use crate::control::plan::{Action, Plan, Rules};

/// Decides for a job. `place(slot)` names the node for a new replica.
pub(crate) fn plan_job(
    want: JobWant,
    instances: &[Instance],
    rules: &Rules<'_>,
    place: &mut dyn FnMut(u32) -> Option<String>,
) -> Plan {
    let now = rules.now;
    let mut out = Plan::default();
    let running = |i: &Instance| !matches!(i.state, ProcessState::Exited { .. });
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by_key(|i| (i.slot, !running(i), &i.id));
    let mut keep: BTreeMap<u32, &Instance> = BTreeMap::new();
    let mut removals = Vec::new();
    for i in sorted {
        let current = i.version == want.version && i.run == want.run;
        if !current || i.slot >= want.replicas || keep.contains_key(&i.slot) {
            removals.push(Action::Remove { id: i.id.clone() });
        } else {
            keep.insert(i.slot, i);
        }
    }
    let mut restarts = Vec::new();
    for i in keep.values() {
        let ProcessState::Exited { code } = i.state else {
            continue;
        };
        if want.policy.finished(code) {
            continue;
        }
        match (rules.restart_at)(&i.id) {
            Some(at) if at > now => {
                out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
            }
            _ => restarts.push(Action::Restart { id: i.id.clone() }),
        }
    }
    let mut starts = Vec::new();
    let missing: Vec<u32> = (0..want.replicas)
        .filter(|s| !keep.contains_key(s))
        .collect();
    if want.active && !missing.is_empty() {
        match rules.start_at {
            Some(at) if at > now => out.wake_at = Some(at),
            _ => {
                for slot in missing {
                    match place(slot) {
                        Some(node) => starts.push(Action::Start { slot, node }),
                        None => out.unplaced += 1,
                    }
                }
            }
        }
    }
    out.actions = removals;
    out.actions.extend(restarts);
    out.actions.extend(starts);
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use api::spec::RestartPolicy;

    fn inst(id: &str, version: u64, run: u64, slot: u32, state: ProcessState) -> Instance {
        Instance {
            id: id.into(),
            node: "n1".into(),
            service: "job".into(),
            project: "default".into(),
            version,
            slot,
            pid: None,
            state,
            ip: None,
            run,
            restart: RestartPolicy::OnFailure,
        }
    }

    fn want(policy: RestartPolicy, active: bool) -> JobWant {
        JobWant {
            version: 2,
            run: 3,
            replicas: 2,
            active,
            policy,
        }
    }

    fn decide(want: JobWant, list: &[Instance], restart_at: Option<Instant>, now: Instant) -> Plan {
        let at = move |_: &str| restart_at;
        let rules = Rules {
            leaving: &|_| false,
            restart_at: &at,
            start_at: None,
            ready: &|_| true,
            stale: &|_| false,
            frees_room: &|_| true,
            old_stopping: false,
            now,
        };
        plan_job(want, list, &rules, &mut |_| Some("n1".into()))
    }

    const OK: ProcessState = ProcessState::Exited { code: 0 };
    const FAIL: ProcessState = ProcessState::Exited { code: 2 };

    #[test]
    fn an_active_run_starts_its_slots_and_leaves_the_finished_alone() {
        let now = Instant::now();
        let p = decide(
            want(RestartPolicy::OnFailure, true),
            &[inst("a", 2, 3, 0, OK)],
            None,
            now,
        );
        assert_eq!(
            p.actions,
            vec![Action::Start {
                slot: 1,
                node: "n1".into()
            }]
        );
    }

    #[test]
    fn failures_retry_under_on_failure_after_the_backoff_and_never_under_never() {
        let now = Instant::now();
        let list = [inst("a", 2, 3, 0, FAIL), inst("b", 2, 3, 1, OK)];
        let later = now + Duration::from_secs(2);
        let p = decide(
            want(RestartPolicy::OnFailure, true),
            &list,
            Some(later),
            now,
        );
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at, Some(later));
        let p = decide(want(RestartPolicy::OnFailure, true), &list, None, now);
        assert_eq!(p.actions, vec![Action::Restart { id: "a".into() }]);
        let p = decide(want(RestartPolicy::Never, true), &list, None, now);
        assert!(p.actions.is_empty(), "{p:?}");
    }

    #[test]
    fn older_runs_and_versions_go_and_an_idle_job_starts_nothing() {
        let now = Instant::now();
        let list = [
            inst("old-run", 2, 2, 0, OK),
            inst("old-version", 1, 3, 1, ProcessState::Running),
        ];
        let p = decide(want(RestartPolicy::Never, false), &list, None, now);
        assert_eq!(
            p.actions,
            vec![
                Action::Remove {
                    id: "old-run".into()
                },
                Action::Remove {
                    id: "old-version".into()
                }
            ]
        );
        let p = decide(want(RestartPolicy::Never, true), &list, None, now);
        assert_eq!(p.actions.len(), 4, "two removals, two starts: {p:?}");
    }
}
