//! The reconciler's decision, pure: given what a service should be and
//! what runs on every node, which replicas to remove, restart or start (and
//! where, as the scheduler's `place` closure says), and when to look again.
//! Tested without containerd.

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

/// The delay before restarting a replica after `consecutive` crashes in
/// a row: none after the first (as Kubernetes restarts at once), then
/// [`backoff`] from the second (1, 2, 4 ... 300 s).
pub fn crash_backoff(consecutive: u32) -> Duration {
    match consecutive {
        0 | 1 => Duration::ZERO,
        n => backoff(n - 1),
    }
}

/// What the service should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub version: u64,
    pub replicas: u32,
    /// Replacing an older version: replicas of the old one may be missing
    /// from the wanted count by at most this many while new ones come up
    /// (one new replica more than wanted may run meanwhile).
    pub max_unavailable: u32,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove { id: String },
    Restart { id: String },
    Start { slot: u32, node: String },
}

/// The steps, and when to look again if something waits on a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Instant>,
    /// Replicas wanted now that no node could take.
    pub unplaced: u32,
}

/// Decides. `restart_at(id)` is when an exited replica may restart (None:
/// now); `start_at` is when new replicas may be tried again after a failed
/// start (None: now); `ready(instance)` tells whether a running replica
/// takes traffic (health check passed, or up long enough). `leaving(i)`
/// marks replicas that must move (their node is drained): they are
/// replaced like an old version's, each new one ready before one of them
/// goes. `place()` names the node for a new replica (None: none fits).
///
/// A new version rolls: old replicas stay until enough new ones are ready,
/// and at most `max(1, max_unavailable)` new ones come up at a time.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    desired: Option<Desired>,
    instances: &[Instance],
    leaving: &dyn Fn(&Instance) -> bool,
    restart_at: &dyn Fn(&str) -> Option<Instant>,
    start_at: Option<Instant>,
    ready: &dyn Fn(&Instance) -> bool,
    place: &mut dyn FnMut() -> Option<String>,
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
    let mut old: Vec<&Instance> = Vec::new();
    for i in sorted {
        if i.version != desired.version || leaving(i) {
            old.push(i);
        } else if i.slot >= desired.replicas || keep.contains_key(&i.slot) {
            removals.push(Action::Remove { id: i.id.clone() });
        } else {
            keep.insert(i.slot, i);
        }
    }
    let running = |i: &Instance| matches!(i.state, ProcessState::Running);
    // Old replicas that still serve, until new ones can take their place.
    let new_ready = keep.values().filter(|i| running(i) && ready(i)).count() as u32;
    let keep_old = desired
        .replicas
        .saturating_sub(desired.max_unavailable)
        .saturating_sub(new_ready) as usize;
    let mut old_running: Vec<&&Instance> = old.iter().filter(|i| running(i)).collect();
    old_running.sort_by_key(|i| (std::cmp::Reverse(ready(i)), i.slot));
    let kept_old: Vec<&str> = old_running
        .iter()
        .take(keep_old)
        .map(|i| i.id.as_str())
        .collect();
    for i in &old {
        if !kept_old.contains(&i.id.as_str()) {
            removals.push(Action::Remove { id: i.id.clone() });
        }
    }
    let rolling = !kept_old.is_empty();
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
    let mut missing: Vec<u32> = (0..desired.replicas)
        .filter(|s| !keep.contains_key(s))
        .collect();
    if rolling {
        // Bring new replicas up a batch at a time.
        let in_flight = keep.values().filter(|i| !(running(i) && ready(i))).count();
        let batch = desired.max_unavailable.max(1) as usize;
        missing.truncate(batch.saturating_sub(in_flight));
    }
    if !missing.is_empty() {
        match start_at {
            Some(at) if at > now => wake(at, &mut out),
            _ => {
                for slot in missing {
                    match place() {
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
    use super::*;

    /// Every replica stays, every new one goes to node "n".
    fn plan1(
        desired: Option<Desired>,
        instances: &[Instance],
        restart_at: &dyn Fn(&str) -> Option<Instant>,
        start_at: Option<Instant>,
        ready: &dyn Fn(&Instance) -> bool,
        now: Instant,
    ) -> Plan {
        plan(
            desired,
            instances,
            &|_| false,
            restart_at,
            start_at,
            ready,
            &mut || Some("n".into()),
            now,
        )
    }

    fn inst(id: &str, version: u64, slot: u32, state: ProcessState) -> Instance {
        Instance {
            id: id.into(),
            node: "fake-node".into(),
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
    fn all_ready(_: &Instance) -> bool {
        true
    }
    fn want(version: u64, replicas: u32) -> Option<Desired> {
        Some(Desired {
            version,
            replicas,
            max_unavailable: 0,
        })
    }

    #[test]
    fn a_first_crash_restarts_at_once_then_backs_off() {
        assert_eq!(crash_backoff(1), Duration::ZERO);
        assert_eq!(crash_backoff(2), Duration::from_secs(1));
        assert_eq!(crash_backoff(3), Duration::from_secs(2));
        assert_eq!(crash_backoff(1000), Duration::from_secs(300));
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
        let p = plan1(
            want(1, 3),
            &[inst("a", 1, 1, RUN)],
            &now_all,
            None,
            &all_ready,
            Instant::now(),
        );
        assert_eq!(
            p.actions,
            vec![
                Action::Start {
                    slot: 0,
                    node: "n".into()
                },
                Action::Start {
                    slot: 2,
                    node: "n".into()
                }
            ]
        );
    }

    #[test]
    fn converged_does_nothing_and_adopts() {
        let running = [inst("a", 1, 0, RUN), inst("b", 1, 1, RUN)];
        assert_eq!(
            plan1(
                want(1, 2),
                &running,
                &now_all,
                None,
                &all_ready,
                Instant::now()
            ),
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
        let p = plan1(want(1, 2), &list, &now_all, None, &all_ready, now);
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
        let p = plan1(None, &list, &now_all, None, &all_ready, Instant::now());
        assert_eq!(p.actions.len(), 2);
        let p = plan1(
            want(1, 0),
            &list,
            &now_all,
            None,
            &all_ready,
            Instant::now(),
        );
        assert_eq!(p.actions.len(), 2);
    }

    #[test]
    fn crashed_waits_for_its_backoff() {
        let now = Instant::now();
        let later = now + Duration::from_secs(4);
        let list = [inst("a", 1, 0, DEAD), inst("b", 1, 1, DEAD)];
        let at = move |id: &str| if id == "a" { Some(later) } else { None };
        let p = plan1(want(1, 2), &list, &at, None, &all_ready, now);
        assert_eq!(p.actions, vec![Action::Restart { id: "b".into() }]);
        assert_eq!(p.wake_at, Some(later));
        let p = plan1(want(1, 2), &list, &at, None, &all_ready, later);
        assert_eq!(p.actions.len(), 2);
    }

    #[test]
    fn unplaceable_starts_nothing_new_but_restarts() {
        let list = [inst("a", 1, 0, DEAD)];
        let p = plan(
            want(1, 3),
            &list,
            &|_| false,
            &now_all,
            None,
            &all_ready,
            &mut || None,
            Instant::now(),
        );
        assert_eq!(p.actions, vec![Action::Restart { id: "a".into() }]);
        assert_eq!(p.unplaced, 2);
    }

    #[test]
    fn leaving_replicas_move_one_at_a_time() {
        let now = Instant::now();
        let mut list = vec![inst("a", 1, 0, RUN), inst("b", 1, 1, RUN)];
        let on_drained = |i: &Instance| i.id == "b";
        let mut nodes = vec!["n2".to_string()].into_iter();
        let p = plan(
            want(1, 2),
            &list,
            &on_drained,
            &now_all,
            None,
            &all_ready,
            &mut || nodes.next(),
            now,
        );
        // The replacement starts first; b stays until it is ready.
        assert_eq!(
            p.actions,
            vec![Action::Start {
                slot: 1,
                node: "n2".into()
            }]
        );
        list.push(inst("c", 1, 1, RUN));
        let not_c = |i: &Instance| i.id != "c";
        let p = plan(
            want(1, 2),
            &list,
            &on_drained,
            &now_all,
            None,
            &not_c,
            &mut || None,
            now,
        );
        assert!(p.actions.is_empty(), "{p:?}");
        let p = plan(
            want(1, 2),
            &list,
            &on_drained,
            &now_all,
            None,
            &all_ready,
            &mut || None,
            now,
        );
        assert_eq!(p.actions, vec![Action::Remove { id: "b".into() }]);
    }

    #[test]
    fn failed_starts_back_off() {
        let now = Instant::now();
        let at = now + Duration::from_secs(2);
        let p = plan1(want(1, 2), &[], &now_all, Some(at), &all_ready, now);
        assert!(p.actions.is_empty());
        assert_eq!(p.wake_at, Some(at));
    }

    #[test]
    fn a_new_version_rolls_one_at_a_time() {
        let now = Instant::now();
        let old = [
            inst("o0", 1, 0, RUN),
            inst("o1", 1, 1, RUN),
            inst("o2", 1, 2, RUN),
        ];
        let starts = |p: &Plan| {
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Start { .. }))
                .count()
        };
        let removes = |p: &Plan| {
            p.actions
                .iter()
                .filter(|a| matches!(a, Action::Remove { .. }))
                .count()
        };

        // Nothing new yet: every old replica stays, one new one starts.
        let p = plan1(want(2, 3), &old, &now_all, None, &all_ready, now);
        assert_eq!((starts(&p), removes(&p)), (1, 0), "{p:?}");

        // The new one runs but is not ready: wait.
        let mut list = old.to_vec();
        list.push(inst("n0", 2, 0, RUN));
        let not_new = |i: &Instance| i.version == 1;
        let p = plan1(want(2, 3), &list, &now_all, None, &not_new, now);
        assert!(p.actions.is_empty(), "{p:?}");

        // Ready: one old goes, the next new one starts.
        let p = plan1(want(2, 3), &list, &now_all, None, &all_ready, now);
        assert_eq!((starts(&p), removes(&p)), (1, 1), "{p:?}");

        // All new ready: the old ones go.
        let all_new = [
            inst("n0", 2, 0, RUN),
            inst("n1", 2, 1, RUN),
            inst("n2", 2, 2, RUN),
            inst("o2", 1, 2, RUN),
        ];
        let p = plan1(want(2, 3), &all_new, &now_all, None, &all_ready, now);
        assert_eq!(p.actions, vec![Action::Remove { id: "o2".into() }]);

        // max_unavailable 2: two old may go before new ones are ready, two start at once.
        let d = Some(Desired {
            version: 2,
            replicas: 3,
            max_unavailable: 2,
        });
        let p = plan1(d, &old, &now_all, None, &all_ready, now);
        assert_eq!((starts(&p), removes(&p)), (2, 2), "{p:?}");
    }
}
