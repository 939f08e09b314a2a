//! The state's changes, and its owner's promise: a change that was
//! answered is in the next read, and snapshots never change under a reader.

use std::time::{Duration, Instant, SystemTime};

use super::{Exit, State, StateHandle};
use crate::agent::{Capacity, Instance, ProcessState};
use crate::control::plan;

fn instance(id: &str, state: ProcessState) -> Instance {
    Instance {
        id: id.into(),
        node: "n1".into(),
        service: "web".into(),
        project: "p".into(),
        version: 1,
        slot: 0,
        pid: Some(7),
        state,
        ip: None,
        run: 0,
        restart: Default::default(),
    }
}

fn exit(code: u32, oom_killed: bool) -> Exit {
    Exit {
        code,
        oom_killed,
        at: SystemTime::now(),
    }
}

#[test]
fn an_exit_counts_once_and_a_removal_is_no_crash() {
    let now = Instant::now();
    let mut st = State::default();
    st.listed("web", vec![instance("web.0.a", ProcessState::Running)], now);
    st.record_start("web.0.a", 7, now);
    assert!(st.record_exit("web.0.a", &exit(1, false), now));
    // The same exit again (a listing after the event): only the OOM kill
    // is added.
    assert!(st.record_exit("web.0.a", &exit(1, true), now));
    let r = &st.replicas["web.0.a"];
    assert_eq!(r.consecutive, 1);
    assert!(r.last_exit.as_ref().is_some_and(|e| e.oom_killed));
    assert_eq!(r.next_start, Some(now + plan::crash_backoff(1)));
    assert_eq!(
        plan::crash_backoff(1),
        Duration::ZERO,
        "the first crash restarts at once"
    );
    assert_eq!(
        st.instances["web"][0].state,
        ProcessState::Exited { code: 1 }
    );

    assert!(st.removing("web.0.b"));
    assert!(!st.removing("web.0.b"), "already being removed");
    let epoch = st.epoch;
    assert!(!st.record_exit("web.0.b", &exit(137, false), now));
    assert_eq!(st.epoch, epoch, "a removal's exit changes nothing");
    assert!(!st.replicas.contains_key("web.0.b"));
    st.removed("web.0.b");
    assert!(st.removing.is_empty());
}

#[test]
fn a_listing_records_unreported_exits_and_only_a_real_change_moves_the_epoch() {
    let now = Instant::now();
    let mut st = State::default();
    let listed = vec![instance("web.0.a", ProcessState::Exited { code: 2 })];
    st.listed("web", listed.clone(), now);
    assert!(st.replicas["web.0.a"].exited);
    assert_eq!(st.replicas["web.0.a"].consecutive, 1);
    let epoch = st.epoch;
    st.listed("web", listed, now);
    assert_eq!(st.epoch, epoch);
    assert_eq!(st.replicas["web.0.a"].consecutive, 1, "counted once");
    // Found over on a (re)start: maybe this server's own removal before
    // a crash, so no evidence against its version.
    assert!(!st.replicas["web.0.a"].exit_witnessed);
    // Seen running, then seen exited: a crash it witnessed.
    st.listed("web", vec![instance("web.0.b", ProcessState::Running)], now);
    st.listed(
        "web",
        vec![instance("web.0.b", ProcessState::Exited { code: 3 })],
        now,
    );
    assert!(st.replicas["web.0.b"].exit_witnessed);
    // An exit event of a replica whose start was seen is witnessed; of a
    // task that never started (cleared away after a crash), it is not.
    st.record_start("web.0.c", 9, now);
    assert!(st.record_exit("web.0.c", &exit(1, false), now));
    assert!(st.replicas["web.0.c"].exit_witnessed);
    st.listed("web", vec![instance("web.0.d", ProcessState::Created)], now);
    assert!(st.record_exit("web.0.d", &exit(137, false), now));
    assert!(!st.replicas["web.0.d"].exit_witnessed);
}

#[test]
fn failed_restarts_are_counted_until_one_works() {
    let now = Instant::now();
    let mut st = State::default();
    assert_eq!(st.restart_failed("web", "web.0.a", "no".into(), now), 1);
    assert_eq!(st.restart_failed("web", "web.0.a", "no".into(), now), 2);
    st.restarted("web.0.a", 7, now);
    assert_eq!(st.replicas["web.0.a"].failed_restarts, 0);
    assert_eq!(st.restart_failed("web", "web.0.a", "no".into(), now), 1);
}

#[test]
fn readiness_says_when_it_changed() {
    let mut st = State::default();
    assert!(
        !st.readiness("web.0.a", None, Some(0)),
        "unknown stays unknown"
    );
    assert!(st.readiness("web.0.a", Some(true), None));
    assert!(!st.readiness("web.0.a", Some(true), None));
    assert!(
        !st.readiness("web.0.a", Some(true), Some(1)),
        "a count only"
    );
    assert_eq!(st.replicas["web.0.a"].ready_failures, 1);
    assert!(st.checker_started("web.0.a"));
    assert!(!st.checker_started("web.0.a"));
    st.checker_ended("web.0.a", true);
    assert_eq!(st.replicas["web.0.a"].healthy, None);
    assert!(st.checkers.is_empty());
}

#[test]
fn a_new_replica_frees_what_its_start_held() {
    let now = Instant::now();
    let mut st = State::default();
    let key = st.reserve(
        "n1",
        scheduler::Load {
            reserved: Capacity {
                cpu: 1.0,
                memory_bytes: 1 << 20,
            },
            cpu_limits: 1.0,
        },
    );
    st.start_failed("web", "no room".into(), now);
    assert_eq!(st.services["web"].start_failures, 1);
    st.started_new(instance("web.0.a", ProcessState::Running), 7, now);
    st.release(key);
    assert!(st.placing.is_empty());
    assert_eq!(st.instances["web"].len(), 1);
    assert_eq!(st.services["web"].start_failures, 0);
    assert_eq!(st.services["web"].last_error, None);
}

#[test]
fn a_snapshot_does_not_change_under_its_reader() {
    let now = Instant::now();
    let mut st = State::default();
    st.listed("web", vec![instance("web.0.a", ProcessState::Running)], now);
    let snapshot = st.clone();
    st.record_exit("web.0.a", &exit(1, false), now);
    assert_eq!(snapshot.instances["web"][0].state, ProcessState::Running);
    assert!(!snapshot.replicas.contains_key("web.0.a"));
    assert!(snapshot.epoch < st.epoch);
}

#[tokio::test]
async fn an_answered_change_is_in_the_next_read_and_changes_keep_their_order() {
    let handle = StateHandle::start(State::default());
    let before = handle.read();
    handle
        .listed(
            "web",
            vec![instance("web.0.a", ProcessState::Running)],
            Instant::now(),
        )
        .await;
    assert!(handle.read().instances.contains_key("web"));
    assert!(!before.instances.contains_key("web"), "old snapshot kept");

    // Many tasks at once: each answer sees its own change; the last
    // change sent by one task wins over its earlier ones.
    let tasks: Vec<_> = (0..50)
        .map(|n| {
            let handle = handle.clone();
            tokio::spawn(async move {
                let id = format!("web.{n}.x");
                handle.readiness(&id, Some(false), None).await;
                assert!(handle.readiness(&id, Some(true), None).await);
                assert_eq!(handle.read().replicas[&id].healthy, Some(true));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(handle.read().replicas.len(), 50);
    // The owner ends with its last handle.
    drop(handle);
    tokio::time::sleep(Duration::from_millis(10)).await;
}
