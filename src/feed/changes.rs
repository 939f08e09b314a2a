//! What a change means as events, decided without acting: a service record
//! before and after a save, and the node table before and after a change
//! of the registry.

use api::events::EventKind;

use super::Note;
use crate::store::ServiceRecord;

/// The events of saving `new` over `old` (none before: a first deploy).
pub fn record_notes(old: Option<&ServiceRecord>, new: &ServiceRecord) -> Vec<Note> {
    let (name, project) = (new.spec.name.as_str(), new.spec.project.as_str());
    let note = |kind, message: String| Note::new(kind, message).service(name, project);
    let mut out = Vec::new();
    let old_canary = old.and_then(|o| o.canary.as_ref()).map(|c| c.version);
    let new_canary = new.canary.as_ref().map(|c| c.version);
    let version_changed = old.is_none_or(|o| o.version != new.version);
    let reverted = new.reverted.is_some() && old.is_none_or(|o| o.reverted != new.reverted);
    if reverted {
        if let Some(r) = &new.reverted {
            out.push(note(EventKind::RolloutReverted, r.message.clone()).version(r.version));
        }
    } else if version_changed && old_canary == Some(new.version) && new_canary.is_none() {
        out.push(
            note(
                EventKind::CanaryPromoted,
                format!("canary version {} promoted", new.version),
            )
            .version(new.version),
        );
    } else if version_changed {
        let entry = new.history.iter().find(|v| v.version == new.version);
        let rollback = entry
            .and_then(|v| v.note.as_deref())
            .filter(|n| n.starts_with("rollback"));
        let by = entry
            .map(|v| v.deployed_by.as_str())
            .filter(|b| !b.is_empty());
        let by = by.map(|b| format!(" by {b}")).unwrap_or_default();
        out.push(
            match rollback {
                Some(n) => note(
                    EventKind::RolledBack,
                    format!("version {}: {n}{by}", new.version),
                ),
                None => note(
                    EventKind::Deployed,
                    format!("version {} of {}{by}", new.version, new.spec.image),
                ),
            }
            .version(new.version),
        );
    }
    match (old_canary, &new.canary) {
        (old_c, Some(c)) if old_c != Some(c.version) => out.push(
            note(
                EventKind::Deployed,
                format!(
                    "canary version {} of {} at {}%",
                    c.version, c.spec.image, c.weight
                ),
            )
            .version(c.version),
        ),
        (Some(c), None) if old.is_some_and(|o| o.version == new.version) => {
            out.push(note(EventKind::RolledBack, format!("canary version {c} removed")).version(c))
        }
        _ => {}
    }
    if let Some(o) = old {
        if !version_changed && o.spec.replicas != new.spec.replicas && !new.stopped {
            out.push(
                note(
                    EventKind::Scaled,
                    format!("{} to {} replicas", o.spec.replicas, new.spec.replicas),
                )
                .version(new.version),
            );
        }
        if !o.stopped && new.stopped {
            out.push(note(EventKind::Stopped, "stopped".into()).version(new.version));
        }
    }
    out.extend(super::jobs::job_notes(old, new));
    out
}

/// The rollout as last announced: version, ready replicas of it, old
/// replicas, and whether it was complete.
pub type Announced = (u64, u32, u32, bool);

/// The event for a rollout's state `now` after `last` was announced, and
/// what is announced then. A rollout found complete with nothing announced
/// before (a restart of the server) is not news.
pub fn rollout_note(
    service: &str,
    project: &str,
    last: Option<Announced>,
    now: &api::status::Rollout,
) -> (Option<Note>, Option<Announced>) {
    use api::status::RolloutPhase;
    let complete = now.phase == RolloutPhase::Complete;
    let moving = matches!(now.phase, RolloutPhase::Progressing | RolloutPhase::Canary);
    if !complete && !moving {
        // Reverted and failed are told by the record's change.
        return (None, last);
    }
    let current = (now.version, now.updated, now.old, complete);
    if last == Some(current) || (last.is_none() && complete) {
        return (None, Some(current));
    }
    let kind = if complete {
        EventKind::RolloutComplete
    } else {
        EventKind::RolloutProgress
    };
    let message = if now.old > 0 && !complete {
        format!("{}; {} old", now.message, now.old)
    } else {
        now.message.clone()
    };
    let note = Note::new(kind, message)
        .service(service, project)
        .version(now.version);
    (Some(note), Some(current))
}

/// What the feed tells about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeView {
    pub id: String,
    pub ready: bool,
    pub drained: bool,
    pub address: String,
    /// Its connection's number: a new one is a reconnect.
    pub session: u64,
}

/// The events between two views of the node table (sorted by id).
pub fn node_notes(before: &[NodeView], after: &[NodeView]) -> Vec<Note> {
    let mut out = Vec::new();
    let note = |kind, id: &str, message: String| Note::new(kind, message).node(id);
    for n in after {
        match before.iter().find(|b| b.id == n.id) {
            None => out.push(note(
                EventKind::NodeJoined,
                &n.id,
                format!("node {} joined from {}", n.id, n.address),
            )),
            Some(b) => {
                if b.ready && !n.ready {
                    out.push(note(
                        EventKind::NodeDisconnected,
                        &n.id,
                        format!("node {} disconnected", n.id),
                    ));
                }
                if n.ready && (!b.ready || b.session != n.session) {
                    out.push(note(
                        EventKind::NodeConnected,
                        &n.id,
                        format!("node {} connected from {}", n.id, n.address),
                    ));
                }
                if !b.drained && n.drained {
                    out.push(note(
                        EventKind::NodeDrained,
                        &n.id,
                        format!("node {} is draining", n.id),
                    ));
                }
                if b.drained && !n.drained {
                    out.push(note(
                        EventKind::NodeUndrained,
                        &n.id,
                        format!("node {} takes replicas again", n.id),
                    ));
                }
            }
        }
    }
    for b in before
        .iter()
        .filter(|b| !after.iter().any(|n| n.id == b.id))
    {
        out.push(note(
            EventKind::NodeRemoved,
            &b.id,
            format!("node {} removed", b.id),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Canary, Reverted};

    fn record(version: u64, replicas: i64) -> ServiceRecord {
        let spec: api::spec::ServiceSpec = serde_json::from_value(serde_json::json!({
            "name": "web", "project": "shop", "image": "web:v1", "replicas": replicas
        }))
        .unwrap();
        ServiceRecord::for_tests(spec, version)
    }

    fn kinds(notes: &[Note]) -> Vec<EventKind> {
        notes.iter().map(|n| n.kind).collect()
    }

    #[test]
    fn record_changes_become_events() {
        use EventKind::*;
        let v1 = record(1, 2);
        let first = record_notes(None, &v1);
        assert_eq!(kinds(&first), vec![Deployed]);
        assert_eq!(first[0].message, "version 1 of web:v1 by ci");
        assert_eq!(
            (first[0].service.as_deref(), first[0].version),
            (Some("web"), Some(1))
        );

        let mut scaled = v1.clone();
        scaled.spec.replicas = 5;
        assert_eq!(kinds(&record_notes(Some(&v1), &scaled)), vec![Scaled]);
        let mut stopped = v1.clone();
        stopped.stopped = true;
        assert_eq!(kinds(&record_notes(Some(&v1), &stopped)), vec![Stopped]);
        // Saved again unchanged (a generation bump): nothing.
        assert!(record_notes(Some(&v1), &v1).is_empty());

        let mut with_canary = v1.clone();
        with_canary.canary = Some(Canary {
            version: 2,
            spec: v1.spec.clone(),
            image_digest: None,
            weight: 10,
            failed: None,
        });
        let n = record_notes(Some(&v1), &with_canary);
        assert_eq!((kinds(&n), n[0].version), (vec![Deployed], Some(2)));
        let mut promoted = record(2, 2);
        promoted.history.clear();
        assert_eq!(
            kinds(&record_notes(Some(&with_canary), &promoted)),
            vec![CanaryPromoted]
        );
        assert_eq!(
            kinds(&record_notes(Some(&with_canary), &v1)),
            vec![RolledBack]
        );

        let mut rollback = record(3, 2);
        if let Some(last) = rollback.history.last_mut() {
            last.note = Some("rollback to 1".into());
        }
        assert_eq!(kinds(&record_notes(Some(&v1), &rollback)), vec![RolledBack]);

        let mut reverted = v1.clone();
        reverted.reverted = Some(Reverted {
            version: 2,
            message: "deploy of version 2 failed".into(),
        });
        let n = record_notes(Some(&record(2, 2)), &reverted);
        assert_eq!((kinds(&n), n[0].version), (vec![RolloutReverted], Some(2)));
    }

    #[test]
    fn a_rollout_is_told_as_it_moves_and_once_complete() {
        use api::status::{Rollout, RolloutPhase};
        let at = |phase, updated, old| Rollout {
            version: 2,
            phase,
            message: format!("version 2: {updated} of 3 replicas ready"),
            updated,
            total: 3,
            old,
            deadline_secs: 300,
            weight: None,
        };
        let (n, last) = rollout_note("web", "shop", None, &at(RolloutPhase::Progressing, 0, 3));
        assert_eq!(
            n.unwrap().message,
            "version 2: 0 of 3 replicas ready; 3 old"
        );
        let (n, last) = rollout_note("web", "shop", last, &at(RolloutPhase::Progressing, 0, 3));
        assert!(n.is_none(), "the same counts again");
        let (n, last) = rollout_note("web", "shop", last, &at(RolloutPhase::Progressing, 1, 2));
        assert_eq!(n.unwrap().kind, EventKind::RolloutProgress);
        let (n, last) = rollout_note("web", "shop", last, &at(RolloutPhase::Complete, 3, 0));
        assert_eq!(n.unwrap().kind, EventKind::RolloutComplete);
        let (n, _) = rollout_note("web", "shop", last, &at(RolloutPhase::Complete, 3, 0));
        assert!(n.is_none());
        // After a restart: complete is no news.
        let (n, last) = rollout_note("web", "shop", None, &at(RolloutPhase::Complete, 3, 0));
        assert!(n.is_none() && last.is_some());
    }

    #[test]
    fn node_changes_become_events() {
        use EventKind::*;
        let view = |id: &str, ready, drained| NodeView {
            id: id.into(),
            ready,
            drained,
            address: "10.0.0.1".into(),
            session: 1,
        };
        let before = vec![view("a", true, false), view("b", true, false)];
        let after = vec![view("a", false, true), view("c", true, false)];
        assert_eq!(
            kinds(&node_notes(&before, &after)),
            vec![NodeDisconnected, NodeDrained, NodeJoined, NodeRemoved]
        );
        let back = vec![view("a", true, false), view("c", true, false)];
        assert_eq!(
            kinds(&node_notes(&after, &back)),
            vec![NodeConnected, NodeUndrained]
        );
        assert!(node_notes(&back, &back).is_empty());
        // Gone and back between two looks: a new session.
        let mut again = back.clone();
        again[0].session = 2;
        assert_eq!(kinds(&node_notes(&back, &again)), vec![NodeConnected]);
    }
}
