//! The event stream of `GET /api/v1/events`: what an event says, and how
//! it travels as Server-Sent Events (`id:`, `event:`, `data:` JSON) and is
//! read back by the client.

use serde::{Deserialize, Serialize};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// A new version (or a canary) was deployed.
    Deployed,
    Scaled,
    Stopped,
    /// A rollout's counts of new and old replicas moved.
    RolloutProgress,
    /// Every wanted replica runs the version and is ready.
    RolloutComplete,
    /// A failed rollout was undone.
    RolloutReverted,
    CanaryPromoted,
    RolledBack,
    ReplicaStarted,
    ReplicaExited,
    ReplicaOomKilled,
    /// orca started a crashed replica again.
    ReplicaRestarted,
    ReplicaReady,
    ReplicaUnready,
    NodeJoined,
    NodeConnected,
    NodeDisconnected,
    NodeDrained,
    NodeUndrained,
    NodeRemoved,
    /// A job's run began (by its schedule, `orca run` or a deploy).
    JobStarted,
    /// A job's run ended: every replica is over for good.
    JobFinished,
    /// A scheduled run was due while the last one still ran: skipped.
    JobSkipped,
}

impl EventKind {
    /// The name in the stream's `event:` field and in JSON.
    pub fn as_str(self) -> &'static str {
        use EventKind::*;
        match self {
            Deployed => "deployed",
            Scaled => "scaled",
            Stopped => "stopped",
            RolloutProgress => "rollout-progress",
            RolloutComplete => "rollout-complete",
            RolloutReverted => "rollout-reverted",
            CanaryPromoted => "canary-promoted",
            RolledBack => "rolled-back",
            ReplicaStarted => "replica-started",
            ReplicaExited => "replica-exited",
            ReplicaOomKilled => "replica-oom-killed",
            ReplicaRestarted => "replica-restarted",
            ReplicaReady => "replica-ready",
            ReplicaUnready => "replica-unready",
            NodeJoined => "node-joined",
            NodeConnected => "node-connected",
            NodeDisconnected => "node-disconnected",
            NodeDrained => "node-drained",
            NodeUndrained => "node-undrained",
            NodeRemoved => "node-removed",
            JobStarted => "job-started",
            JobFinished => "job-finished",
            JobSkipped => "job-skipped",
        }
    }
}

/// One event. Ids grow across restarts of the server too, so a client
/// resumes from the last id it saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub id: u64,
    /// RFC 3339, milliseconds.
    pub time: String,
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    /// A sentence for people.
    pub message: String,
}

impl Event {
    /// The event as one Server-Sent Events message.
    pub fn to_sse(&self) -> String {
        let data = serde_json::to_string(self).unwrap_or_else(|_| "{}".into());
        format!(
            "id: {}\nevent: {}\ndata: {data}\n\n",
            self.id,
            self.kind.as_str()
        )
    }
}

/// Reads Server-Sent Events out of chunks as they come: each whole
/// message's `data:` parsed as an [`Event`] (comments and other fields
/// are skipped).
#[derive(Default)]
pub struct SseReader {
    buffer: String,
}

impl SseReader {
    /// Adds `chunk` and returns the events it completed; a message whose
    /// data is not an event is an error.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, String> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let message: String = self.buffer.drain(..end + 2).collect();
            let data: Vec<&str> = message
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            if data.is_empty() {
                continue;
            }
            let event = serde_json::from_str(&data.join("\n"))
                .map_err(|e| format!("an event that does not parse: {e}"))?;
            out.push(event);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_sse_in_any_chunks() {
        let event = Event {
            id: 7,
            time: "2026-01-01T00:00:00.000Z".into(),
            kind: EventKind::ReplicaOomKilled,
            service: Some("web".into()),
            project: Some("shop".into()),
            instance: Some("web.0.abcdef".into()),
            node: Some("n1".into()),
            version: Some(2),
            message: "out of memory".into(),
        };
        let text = format!(": keep-alive\n\n{}{}", event.to_sse(), event.to_sse());
        assert!(text.contains("event: replica-oom-killed\n"));
        let mut reader = SseReader::default();
        let mut got = Vec::new();
        for chunk in text.as_bytes().chunks(5) {
            got.extend(reader.push(chunk).unwrap());
        }
        assert_eq!(got, vec![event.clone(), event]);
        let kind: EventKind = serde_json::from_str("\"node-drained\"").unwrap();
        assert_eq!(kind.as_str(), "node-drained");
        assert!(SseReader::default().push(b"data: nope\n\n").is_err());
    }
}
