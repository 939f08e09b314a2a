//! The cluster's event feed: what happened to services, replicas and nodes,
//! numbered, the last [`KEPT`] kept for clients that resume, and each new
//! one broadcast to the followers of `GET /api/v1/events`.
//!
//! Ids start at the server's start time in microseconds and count up, so
//! they keep growing across restarts and a client's `Last-Event-ID` from
//! before a restart resumes at the oldest event kept.

mod changes;
mod jobs;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use api::events::{Event, EventKind};
use tokio::sync::broadcast;

pub use changes::{node_notes, record_notes, rollout_note, Announced, NodeView};

/// Events kept for clients that resume.
pub const KEPT: usize = 1000;

/// An event before it has an id and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub kind: EventKind,
    pub service: Option<String>,
    pub project: Option<String>,
    pub instance: Option<String>,
    pub node: Option<String>,
    pub version: Option<u64>,
    pub message: String,
}

impl Note {
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Note {
            kind,
            service: None,
            project: None,
            instance: None,
            node: None,
            version: None,
            message: message.into(),
        }
    }
    pub fn service(mut self, service: &str, project: &str) -> Self {
        self.service = Some(service.to_string());
        self.project = Some(project.to_string());
        self
    }
    pub fn instance(mut self, id: &str) -> Self {
        self.instance = Some(id.to_string());
        if self.service.is_none() {
            self.service = Some(crate::agent::service_of(id).to_string());
        }
        self
    }
    pub fn node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
    pub fn version(mut self, version: u64) -> Self {
        self.version = Some(version);
        self
    }
}

struct Ring {
    next: u64,
    kept: VecDeque<Arc<Event>>,
}

/// See the module doc. Publishing and subscribing take one short lock, so
/// that a subscriber gets every event exactly once: the kept ones, then the
/// broadcast ones.
pub struct Feed {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Feed {
    fn default() -> Self {
        Self::new()
    }
}

impl Feed {
    pub fn new() -> Self {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Self::starting_at(start)
    }

    fn starting_at(first: u64) -> Self {
        let (tx, _) = broadcast::channel(KEPT);
        Feed {
            ring: Mutex::new(Ring {
                next: first,
                kept: VecDeque::with_capacity(KEPT),
            }),
            tx,
        }
    }

    /// Numbers `note`, keeps it and sends it to every follower.
    pub fn publish(&self, note: Note) {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let event = Arc::new(Event {
            id: ring.next,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            kind: note.kind,
            service: note.service,
            project: note.project,
            instance: note.instance,
            node: note.node,
            version: note.version,
            message: note.message,
        });
        ring.next += 1;
        if ring.kept.len() == KEPT {
            ring.kept.pop_front();
        }
        ring.kept.push_back(event.clone());
        // No follower is no error.
        let _ = self.tx.send(event);
    }

    /// The kept events after `since` (all kept ones without it: none; a
    /// client that names no point wants what comes), and a receiver of
    /// every later one.
    pub fn subscribe(
        &self,
        since: Option<u64>,
    ) -> (Vec<Arc<Event>>, broadcast::Receiver<Arc<Event>>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let backlog = match since {
            Some(after) => ring.kept.iter().filter(|e| e.id > after).cloned().collect(),
            None => Vec::new(),
        };
        (backlog, self.tx.subscribe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_gets_each_event_once_from_where_it_resumes() {
        let feed = Feed::starting_at(100);
        for n in 0..5 {
            feed.publish(Note::new(EventKind::Scaled, format!("{n}")));
        }
        let (backlog, mut rx) = feed.subscribe(Some(102));
        let ids: Vec<u64> = backlog.iter().map(|e| e.id).collect();
        assert_eq!(ids, vec![103, 104]);
        feed.publish(Note::new(EventKind::Stopped, "x").service("web", "shop"));
        let next = rx.try_recv().unwrap();
        assert_eq!((next.id, next.kind), (105, EventKind::Stopped));
        assert!(rx.try_recv().is_err());
        // No resume point: only what comes.
        assert!(feed.subscribe(None).0.is_empty());
        // An id from before a restart: everything kept.
        assert_eq!(feed.subscribe(Some(7)).0.len(), 6);
    }

    #[test]
    fn only_the_last_thousand_are_kept() {
        let feed = Feed::starting_at(1);
        for _ in 0..KEPT + 10 {
            feed.publish(Note::new(EventKind::Scaled, ""));
        }
        let (backlog, _) = feed.subscribe(Some(0));
        assert_eq!(backlog.len(), KEPT);
        assert_eq!(backlog[0].id, 11);
        // A real start numbers from its time: past any earlier start's ids.
        let later = Feed::new();
        later.publish(Note::new(EventKind::Scaled, ""));
        assert!(later.subscribe(Some(0)).0[0].id > 1_700_000_000_000_000);
    }
}
