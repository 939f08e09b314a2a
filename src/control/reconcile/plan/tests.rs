//! The plan's decisions, one situation each.
use super::*;

/// The plan with the rules spelled out, nothing stale, and room freed by
/// any old replica.
#[allow(clippy::too_many_arguments)]
pub(super) fn plan_with(
    desired: Option<Desired>,
    instances: &[Instance],
    leaving: &dyn Fn(&Instance) -> bool,
    restart_at: &dyn Fn(&str) -> Option<Instant>,
    start_at: Option<Instant>,
    ready: &dyn Fn(&Instance) -> bool,
    place: &mut dyn FnMut(u32) -> Option<String>,
    now: Instant,
) -> Plan {
    let rules = Rules {
        leaving,
        restart_at,
        start_at,
        ready,
        stale: &|_| false,
        frees_room: &|_| true,
        old_stopping: false,
        now,
    };
    plan(desired, instances, &rules, place)
}

/// Every replica stays, every new one goes to node "n".
pub(super) fn plan1(
    desired: Option<Desired>,
    instances: &[Instance],
    restart_at: &dyn Fn(&str) -> Option<Instant>,
    start_at: Option<Instant>,
    ready: &dyn Fn(&Instance) -> bool,
    now: Instant,
) -> Plan {
    plan_with(
        desired,
        instances,
        &|_| false,
        restart_at,
        start_at,
        ready,
        &mut |_| Some("n".into()),
        now,
    )
}

pub(super) fn inst(id: &str, version: u64, slot: u32, state: ProcessState) -> Instance {
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
        run: 0,
        restart: Default::default(),
    }
}
pub(super) const RUN: ProcessState = ProcessState::Running;
pub(super) const DEAD: ProcessState = ProcessState::Exited { code: 3 };
pub(super) fn now_all(_: &str) -> Option<Instant> {
    None
}
pub(super) fn all_ready(_: &Instance) -> bool {
    true
}
pub(super) fn want(version: u64, replicas: u32) -> Option<Desired> {
    Some(Desired {
        version,
        replicas,
        max_unavailable: 0,
        max_surge: 1,
        recreate: false,
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
    let p = plan_with(
        want(1, 3),
        &list,
        &|_| false,
        &now_all,
        None,
        &all_ready,
        &mut |_| None,
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
    let p = plan_with(
        want(1, 2),
        &list,
        &on_drained,
        &now_all,
        None,
        &all_ready,
        &mut |_| nodes.next(),
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
    let p = plan_with(
        want(1, 2),
        &list,
        &on_drained,
        &now_all,
        None,
        &not_c,
        &mut |_| None,
        now,
    );
    assert!(p.actions.is_empty(), "{p:?}");
    let p = plan_with(
        want(1, 2),
        &list,
        &on_drained,
        &now_all,
        None,
        &all_ready,
        &mut |_| None,
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

    // max_unavailable 2: two old may go before new ones are ready; with
    // a surge of 1, three new ones start at once (4 at most in all).
    let d = to_v2(3, 2, 1);
    let p = plan1(d, &old, &now_all, None, &all_ready, now);
    assert_eq!((starts(&p), removes(&p)), (3, 2), "{p:?}");
}

/// Version 2 of `replicas`, replacing version 1.
pub(super) fn to_v2(replicas: u32, max_unavailable: u32, max_surge: u32) -> Option<Desired> {
    Some(Desired {
        version: 2,
        replicas,
        max_unavailable,
        max_surge,
        recreate: false,
    })
}
