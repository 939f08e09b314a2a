//! The plan's rollouts with a surge, in place when there is no room, and
//! the surplus of a node that comes back; with their bounds as a property.

use super::tests::{all_ready, inst, now_all, plan1, plan_with, to_v2, want, DEAD, RUN};
use super::*;

fn starts_of(p: &Plan) -> Vec<u32> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Start { slot, .. } => Some(*slot),
            _ => None,
        })
        .collect()
}

fn removed_of(p: &Plan) -> Vec<&str> {
    p.actions
        .iter()
        .filter_map(|a| match a {
            Action::Remove { id } => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// The plan when no node has room for a new replica.
fn no_room(
    d: Option<Desired>,
    list: &[Instance],
    ready: &dyn Fn(&Instance) -> bool,
    now: Instant,
) -> Plan {
    plan_with(
        d,
        list,
        &|_| false,
        &now_all,
        None,
        ready,
        &mut |_| None,
        now,
    )
}

fn olds(n: u32) -> Vec<Instance> {
    (0..n).map(|s| inst(&format!("o{s}"), 1, s, RUN)).collect()
}

#[test]
fn a_surge_starts_that_many_new_replicas_at_once() {
    let now = Instant::now();
    let d = to_v2(10, 0, 3);
    let p = plan1(d, &olds(10), &now_all, None, &all_ready, now);
    assert_eq!(starts_of(&p), [0, 1, 2]);
    assert!(removed_of(&p).is_empty());
    // Three new ready: three old go, three more start.
    let mut list = olds(10);
    list.extend((0..3).map(|s| inst(&format!("n{s}"), 2, s, RUN)));
    let p = plan1(d, &list, &now_all, None, &all_ready, now);
    assert_eq!(starts_of(&p), [3, 4, 5]);
    assert_eq!(removed_of(&p).len(), 3);
    // Not ready yet: nothing more starts, nothing old goes.
    let not_new = |i: &Instance| i.version == 1;
    let p = plan1(d, &list, &now_all, None, &not_new, now);
    assert!(p.actions.is_empty(), "{p:?}");
}

#[test]
fn no_room_for_a_surge_replaces_in_place_one_at_a_time() {
    let now = Instant::now();
    let d = to_v2(2, 0, 1);
    let p = no_room(d, &olds(2), &all_ready, now);
    // One old replica goes (the highest slot); its successor waits for it.
    assert_eq!(removed_of(&p), ["o1"]);
    assert!(starts_of(&p).is_empty());
    assert_eq!(p.in_place, Some(1));
    // While it is being removed (gone from the list), nothing else goes.
    let p = no_room(d, &olds(1), &all_ready, now);
    assert!(p.actions.is_empty(), "{p:?}");
    assert_eq!(p.in_place, Some(1));
    // Gone: the successor fits (room for one only) and starts.
    let mut room = vec!["n".to_string()].into_iter();
    let p = plan_with(
        d,
        &olds(1),
        &|_| false,
        &now_all,
        None,
        &all_ready,
        &mut |_| room.next(),
        now,
    );
    assert_eq!(starts_of(&p), [0]);
    assert!(removed_of(&p).is_empty(), "{p:?}");
    // The successor is not ready: the last old replica stays.
    let mut list = olds(1);
    list.push(inst("n1", 2, 1, RUN));
    let not_new = |i: &Instance| i.version == 1;
    let p = no_room(d, &list, &not_new, now);
    assert!(removed_of(&p).is_empty(), "{p:?}");
    // Ready: the last old one goes in place too.
    let p = no_room(d, &list, &all_ready, now);
    assert_eq!(removed_of(&p), ["o0"]);
    // max_unavailable 2 replaces two at a time.
    let d2 = to_v2(4, 2, 1);
    let p = no_room(d2, &olds(4), &all_ready, now);
    // Two go by max_unavailable at once, none more: the floor is 2.
    assert_eq!(removed_of(&p).len(), 2, "{p:?}");
    assert_eq!(p.in_place, Some(2));
}

#[test]
fn in_place_only_stops_a_replica_whose_room_helps() {
    let now = Instant::now();
    let d = to_v2(2, 0, 1);
    let rules = Rules {
        leaving: &|_| false,
        restart_at: &now_all,
        start_at: None,
        ready: &all_ready,
        stale: &|_| false,
        frees_room: &|i| i.id == "o0",
        old_stopping: false,
        now,
    };
    let p = plan(d, &olds(2), &rules, &mut |_| None);
    assert_eq!(removed_of(&p), ["o0"]);
}

#[test]
fn a_replica_back_from_a_lost_node_is_the_one_that_goes() {
    let now = Instant::now();
    // "b" came back; "z" replaced it meanwhile and sorts after it by id.
    let list = [
        inst("a", 1, 0, RUN),
        inst("b", 1, 1, RUN),
        inst("z", 1, 1, RUN),
    ];
    let rules = Rules {
        leaving: &|_| false,
        restart_at: &now_all,
        start_at: None,
        ready: &all_ready,
        stale: &|i| i.id == "b",
        frees_room: &|_| true,
        old_stopping: false,
        now,
    };
    let p = plan(want(1, 2), &list, &rules, &mut |_| Some("n".into()));
    assert_eq!(p.actions, vec![Action::Remove { id: "b".into() }]);
}

proptest::proptest! {
    /// Whatever runs, a rollout never has more than the wanted count plus
    /// the surge, and never stops a ready replica that would leave fewer
    /// ready than the wanted count less `max(1, max_unavailable)`.
    #[test]
    fn a_rollout_keeps_its_surge_and_availability_bounds(
        replicas in 1u32..12,
        max_unavailable in 0u32..4,
        max_surge in 1u32..5,
        old in proptest::collection::vec((0u32..12, proptest::bool::ANY), 0..12),
        new in proptest::collection::btree_map(0u32..12, proptest::bool::ANY, 0..12),
        room in 0usize..6,
    ) {
        let mut list = Vec::new();
        let mut ready_ids = std::collections::BTreeSet::new();
        for (n, (slot, ready)) in old.iter().enumerate() {
            list.push(inst(&format!("o{n}"), 1, *slot, RUN));
            if *ready {
                ready_ids.insert(format!("o{n}"));
            }
        }
        for (slot, ready) in &new {
            list.push(inst(&format!("n{slot}"), 2, *slot, RUN));
            if *ready && *slot < replicas {
                ready_ids.insert(format!("n{slot}"));
            }
        }
        let is_ready = |i: &Instance| ready_ids.contains(&i.id);
        let d = to_v2(replicas, max_unavailable, max_surge);
        let mut left = room;
        let p = plan_with(d, &list, &|_| false, &now_all, None, &is_ready, &mut |_| {
            left = left.checked_sub(1)?;
            Some("n".into())
        }, Instant::now());
        let removed = removed_of(&p);
        let ready_before = ready_ids.len();
        let ready_after = ready_ids.iter().filter(|id| !removed.contains(&id.as_str())).count();
        let floor = replicas.saturating_sub(max_unavailable.max(1)) as usize;
        proptest::prop_assert!(ready_after >= ready_before.min(floor), "{p:?}");
        let rolling = list.iter().any(|i| i.version == 1 && !removed.contains(&i.id.as_str()));
        if rolling && !starts_of(&p).is_empty() {
            let staying = list.iter().filter(|i| !removed.contains(&i.id.as_str())).count();
            proptest::prop_assert!(
                staying + starts_of(&p).len() <= (replicas + max_surge) as usize,
                "{p:?}"
            );
        }
    }
}

#[test]
fn recreate_stops_every_old_replica_before_a_new_one_starts() {
    let now = Instant::now();
    let mut d = to_v2(3, 0, 1).unwrap();
    d.recreate = true;
    let list = vec![
        inst("o0", 1, 0, RUN),
        inst("o1", 1, 1, RUN),
        inst("o2", 1, 2, DEAD),
    ];
    let rules = |old_stopping| Rules {
        leaving: &|_| false,
        restart_at: &now_all,
        start_at: None,
        ready: &all_ready,
        stale: &|_| false,
        frees_room: &|_| true,
        old_stopping,
        now,
    };
    let mut placed = 0;
    let p = plan(Some(d), &list, &rules(false), &mut |_| {
        placed += 1;
        Some("n".into())
    });
    let removed: Vec<_> = p
        .actions
        .iter()
        .filter(|a| matches!(a, Action::Remove { .. }))
        .collect();
    assert_eq!(removed.len(), 3, "{:?}", p.actions);
    assert_eq!(
        p.actions.len(),
        3,
        "nothing starts beside them: {:?}",
        p.actions
    );
    assert_eq!(placed, 0);
    // Still stopping (no longer listed as planned): nothing starts.
    let p = plan(Some(d), &[], &rules(true), &mut |_| Some("n".into()));
    assert!(p.actions.is_empty(), "{:?}", p.actions);
    // All gone: the new version starts, every slot at once.
    let p = plan(Some(d), &[], &rules(false), &mut |_| Some("n".into()));
    assert_eq!(p.actions.len(), 3);
    assert!(p.actions.iter().all(|a| matches!(a, Action::Start { .. })));
    // Control: rolling keeps the old replicas until new ones are ready.
    d.recreate = false;
    let p = plan(Some(d), &list[..2], &rules(false), &mut |_| {
        Some("n".into())
    });
    assert!(
        p.actions.iter().any(|a| matches!(a, Action::Start { .. })),
        "{:?}",
        p.actions
    );
}
