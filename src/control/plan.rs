//! The reconciler's decision, pure: given what a service should be and
//! what runs, which replicas to remove, restart or start, and when to look
//! again. Tested without containerd.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::{Instance, ProcessState};

/// First restart delay; doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Running this long without a crash resets the backoff.
pub const HEALTHY_RESET: Duration = Duration::from_secs(600);

/// The restart delay after `consecutive` crashes in a row (1, 2, 4 ... 300 s).
pub fn backoff(consecutive: u32) -> Duration {
    let exp = consecutive.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// What the service should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub version: u64,
    pub replicas: u32,
    /// False when no node may take new replicas (drained).
    pub schedulable: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove { id: String },
    Restart { id: String },
    Start { slot: u32 },
}

/// The steps, and when to look again if something waits on a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Instant>,
}

/// Decides. `restart_at(id)` is when an exited replica may restart (None:
/// now); `start_at` is when new replicas may be tried again after a failed
/// start (None: now).
pub fn plan(
    desired: Option<Desired>,
    instances: &[Instance],
    restart_at: &dyn Fn(&str) -> Option<Instant>,
    start_at: Option<Instant>,
    now: Instant,
) -> Plan {
    let mut out = Plan::default();
    let wake = |at: Instant, out: &mut Plan| {
        out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
    };
    let Some(desired) = desired else {
        out.actions = instances
            .iter()
            .map(|i| Action::Remove { id: i.id.clone() })
            .collect();
        return out;
    };
    // One keeper per slot of the current version: running first, then by id.
    let mut keep: BTreeMap<u32, &Instance> = BTreeMap::new();
    let mut removals = Vec::new();
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by(|a, b| {
        let running = |i: &Instance| !matches!(i.state, ProcessState::Running);
        (a.slot, running(a), &a.id).cmp(&(b.slot, running(b), &b.id))
    });
    for i in sorted {
        if i.version != desired.version || i.slot >= desired.replicas || keep.contains_key(&i.slot)
        {
            removals.push(Action::Remove { id: i.id.clone() });
        } else {
            keep.insert(i.slot, i);
        }
    }
    let mut restarts = Vec::new();
    for i in keep.values() {
        if matches!(i.state, ProcessState::Running) {
            continue;
        }
        match restart_at(&i.id) {
            Some(at) if at > now => wake(at, &mut out),
            _ => restarts.push(Action::Restart { id: i.id.clone() }),
        }
    }
    let mut starts = Vec::new();
    if desired.schedulable {
        let missing: Vec<u32> = (0..desired.replicas)
            .filter(|s| !keep.contains_key(s))
            .collect();
        if !missing.is_empty() {
            match start_at {
                Some(at) if at > now => wake(at, &mut out),
                _ => starts.extend(missing.into_iter().map(|slot| Action::Start { slot })),
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
    use super::*;

    fn inst(id: &str, version: u64, slot: u32, state: ProcessState) -> Instance {
        Instance {
            id: id.into(),
            service: "web".into(),
            project: "p".into(),
            version,
            slot,
            pid: None,
            state,
            ip: None,
        }
    }
    const RUN: ProcessState = ProcessState::Running;
    const DEAD: ProcessState = ProcessState::Exited { code: 3 };
    fn now_all(_: &str) -> Option<Instant> {
        None
    }
    fn want(version: u64, replicas: u32) -> Option<Desired> {
        Some(Desired {
            version,
            replicas,
            schedulable: true,
        })
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(1));
        assert_eq!(backoff(2), Duration::from_secs(2));
        assert_eq!(backoff(5), Duration::from_secs(16));
        assert_eq!(backoff(9), Duration::from_secs(256));
        assert_eq!(backoff(10), Duration::from_secs(300));
        assert_eq!(backoff(1000), Duration::from_secs(300));
    }

    #[test]
    fn starts_missing_slots() {
        let p = plan(
            want(1, 3),
            &[inst("a", 1, 1, RUN)],
            &now_all,
            None,
            Instant::now(),
        );
        assert_eq!(
            p.actions,
            vec![Action::Start { slot: 0 }, Action::Start { slot: 2 }]
        );
    }

    #[test]
    fn converged_does_nothing_and_adopts() {
        let running = [inst("a", 1, 0, RUN), inst("b", 1, 1, RUN)];
        assert_eq!(
            plan(want(1, 2), &running, &now_all, None, Instant::now()),
            Plan::default()
        );
    }

    #[test]
    fn removes_extra_old_and_duplicates() {
        let now = Instant::now();
        let list = [
            inst("a", 1, 0, RUN),
            inst("b", 1, 1, RUN),
            inst("c", 1, 2, RUN),
            inst("d", 0, 0, RUN),
            inst("e", 1, 0, DEAD),
        ];
        let p = plan(want(1, 2), &list, &now_all, None, now);
        let mut removed: Vec<_> = p
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Remove { id } => Some(id.as_str()),
                _ => None,
            })
            .collect();
        removed.sort();
        assert_eq!(removed, ["c", "d", "e"]);
        assert_eq!(p.actions.len(), 3);
    }

    #[test]
    fn unknown_or_stopped_removes_all() {
        let list = [inst("a", 1, 0, RUN), inst("b", 1, 1, DEAD)];
        let p = plan(None, &list, &now_all, None, Instant::now());
        assert_eq!(p.actions.len(), 2);
        let p = plan(want(1, 0), &list, &now_all, None, Instant::now());
        assert_eq!(p.actions.len(), 2);
    }

    #[test]
    fn crashed_waits_for_its_backoff() {
        let now = Instant::now();
        let later = now + Duration::from_secs(4);
        let list = [inst("a", 1, 0, DEAD), inst("b", 1, 1, DEAD)];
        let at = move |id: &str| if id == "a" { Some(later) } else { None };
        let p = plan(want(1, 2), &list, &at, None, now);
        assert_eq!(p.actions, vec![Action::Restart { id: "b".into() }]);
        assert_eq!(p.wake_at, Some(later));
        let p = plan(want(1, 2), &list, &at, None, later);
        assert_eq!(p.actions.len(), 2);
    }

    #[test]
    fn drained_starts_nothing_new_but_restarts() {
        let list = [inst("a", 1, 0, DEAD)];
        let d = Some(Desired {
            version: 1,
            replicas: 3,
            schedulable: false,
        });
        let p = plan(d, &list, &now_all, None, Instant::now());
        assert_eq!(p.actions, vec![Action::Restart { id: "a".into() }]);
    }

    #[test]
    fn failed_starts_back_off() {
        let now = Instant::now();
        let at = now + Duration::from_secs(2);
        let p = plan(want(1, 2), &[], &now_all, Some(at), now);
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at, Some(at));
    }
}
