//! `GET /api/v1/events`: the feed (see [`crate::feed`]) as Server-Sent
//! Events, filtered by service and project, resumed after an id; and how
//! the control plane tells the feed what happened.

use std::time::Duration;

use api::events::{Event, EventKind};
use api::request::EventsQuery;
use api::{ApiError, ApiResponse};
use bytes::Bytes;
use tokio::sync::{broadcast, mpsc};

use super::{ControlPlane, Inner};
use crate::agent::service_of;
use crate::feed::Note;

/// A comment this often keeps proxies from closing a quiet stream.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

impl Inner {
    /// Publishes `notes` on the feed.
    pub(crate) fn tell(&self, notes: impl IntoIterator<Item = Note>) {
        for note in notes {
            self.feed.publish(note);
        }
    }

    /// Publishes an event about replica `id` on `node` (when the caller
    /// knows it), with its service, project, version and node as the state
    /// knows them (a replica just started may not be listed yet: then its
    /// service's). Takes the state's lock: never call it holding that lock.
    pub(crate) fn tell_replica(
        &self,
        kind: EventKind,
        id: &str,
        node: Option<&str>,
        message: String,
    ) {
        let mut note = Note::new(kind, message).instance(id);
        {
            let st = self.state();
            let service = service_of(id);
            let found = st
                .instances
                .get(service)
                .and_then(|list| list.iter().find(|i| i.id == id));
            if let Some(i) = found {
                note = note
                    .service(&i.service, &i.project)
                    .version(i.version)
                    .node(&i.node);
            } else if let Some(r) = st.records.get(service) {
                note = note.service(service, &r.spec.project);
            }
        }
        if let Some(node) = node {
            note = note.node(node);
        }
        self.feed.publish(note);
    }
}

/// True if `event` passes the stream's filter.
fn wanted(query: &EventsQuery, event: &Event) -> bool {
    query
        .service
        .as_ref()
        .is_none_or(|s| event.service.as_ref() == Some(s))
        && query
            .project
            .as_ref()
            .is_none_or(|p| event.project.as_ref() == Some(p))
}

impl ControlPlane {
    pub(crate) fn events(&self, query: EventsQuery) -> Result<ApiResponse, ApiError> {
        let (backlog, rx) = self.inner().feed.subscribe(query.since);
        let (tx, out) = mpsc::channel::<Bytes>(64);
        self.inner().spawn(stream(query, backlog, rx, tx));
        Ok(ApiResponse::Events(out))
    }
}

/// Writes the backlog, then every new event, until the client goes away.
/// A client too slow for the feed is cut off: it reconnects with the last
/// id it got and resumes from the kept events.
async fn stream(
    query: EventsQuery,
    backlog: Vec<std::sync::Arc<Event>>,
    mut rx: broadcast::Receiver<std::sync::Arc<Event>>,
    tx: mpsc::Sender<Bytes>,
) {
    // The reconnect delay for EventSource clients, and a first write so
    // that the client knows the stream is open.
    if tx
        .send(Bytes::from_static(b"retry: 1000\n\n"))
        .await
        .is_err()
    {
        return;
    }
    for event in backlog.iter().filter(|e| wanted(&query, e)) {
        if tx.send(Bytes::from(event.to_sse())).await.is_err() {
            return;
        }
    }
    loop {
        let text = tokio::select! {
            got = rx.recv() => match got {
                Ok(event) if wanted(&query, &event) => event.to_sse(),
                Ok(_) => continue,
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    tracing::debug!(missed, "event stream client too slow; ending its stream");
                    return;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tokio::time::sleep(KEEP_ALIVE) => ": keep-alive\n\n".to_string(),
            _ = tx.closed() => return,
        };
        if tx.send(Bytes::from(text)).await.is_err() {
            return;
        }
    }
}
