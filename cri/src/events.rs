//! Task events from containerd's event service: start, exit, OOM, delete.
//!
//! `Events.Subscribe` sends no response headers until the first event, so
//! the subscription runs in its own task and publishes a marker event to
//! learn that it is live. When containerd restarts, the stream breaks: the
//! task waits for containerd, subscribes again and emits
//! [`CriEvent::Resubscribed`], since events may have been missed meanwhile
//! and the consumer should resync.

use std::time::{Duration, SystemTime};

use containerd_client::events::{ContainerDelete, TaskDelete, TaskExit, TaskOom, TaskStart};
use containerd_client::services::v1::{PublishRequest, SubscribeRequest};
use prost::Message;
use tokio::sync::mpsc;

use crate::client::Cri;
use crate::container::timestamp_to_system;
use crate::error::{CriError, Result};

const MARKER_TOPIC: &str = "/orca/marker";

/// A task event of orca's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CriEvent {
    /// A task's init process started.
    TaskStart { container_id: String, pid: u32 },
    /// A process exited; `exec_id` is empty for the init process.
    TaskExit {
        container_id: String,
        exec_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: Option<SystemTime>,
    },
    /// The OOM killer struck in the container's cgroup.
    TaskOom { container_id: String },
    /// A task was deleted.
    TaskDelete {
        container_id: String,
        exit_status: u32,
    },
    /// The stream was re-established after a break; resync state.
    Resubscribed,
}

/// A live stream of [`CriEvent`]s; dropping it ends the subscription.
pub struct EventStream {
    rx: mpsc::Receiver<CriEvent>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// The next event; `None` only if the subscription task died.
    pub async fn next(&mut self) -> Option<CriEvent> {
        self.rx.recv().await
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Cri {
    /// Subscribes to task events; returns once the subscription is live, so
    /// no event after this call is missed.
    pub async fn subscribe(&self) -> Result<EventStream> {
        let (tx, rx) = mpsc::channel(1024);
        let (live_tx, live_rx) = tokio::sync::oneshot::channel();
        let cri = self.clone();
        let task = tokio::spawn(async move { cri.event_loop(tx, Some(live_tx)).await });
        match tokio::time::timeout(Duration::from_secs(10), live_rx).await {
            Ok(Ok(Ok(()))) => Ok(EventStream { rx, task }),
            Ok(Ok(Err(e))) => {
                task.abort();
                Err(e)
            }
            _ => {
                task.abort();
                Err(CriError::Timeout {
                    what: "the event subscription".into(),
                    secs: 10,
                })
            }
        }
    }

    async fn event_loop(
        self,
        tx: mpsc::Sender<CriEvent>,
        mut live: Option<tokio::sync::oneshot::Sender<Result<()>>>,
    ) {
        let mut first = true;
        loop {
            let result = self.subscribe_once(&tx, &mut live, first).await;
            if tx.is_closed() {
                return;
            }
            if let Err(e) = &result {
                if let Some(l) = live.take() {
                    let _ = l.send(Err(CriError::Shared(std::sync::Arc::new(
                        CriError::content("event subscription", e),
                    ))));
                    return;
                }
                tracing::warn!(error = %e, "event stream broke; waiting for containerd");
            }
            first = false;
            // Forever, with backoff: containerd may be down for a while.
            while self.wait_ready(Duration::from_secs(30)).await.is_err() {
                if tx.is_closed() {
                    return;
                }
            }
        }
    }

    /// One subscription until it breaks.
    async fn subscribe_once(
        &self,
        tx: &mpsc::Sender<CriEvent>,
        live: &mut Option<tokio::sync::oneshot::Sender<Result<()>>>,
        first: bool,
    ) -> std::result::Result<(), String> {
        let ns = self.namespace();
        let filters = vec![
            format!("namespace=={ns},topic~=\"^/tasks/\""),
            format!("namespace=={ns},topic==\"{MARKER_TOPIC}\""),
        ];
        let marker = format!("orca-marker-{:016x}", rand::random::<u64>());
        let mut events = self.events();
        let request = self.req(SubscribeRequest { filters });
        let subscribe = tokio::spawn(async move { events.subscribe(request).await });

        // Publish markers until one comes back through the stream.
        let publisher = {
            let cri = self.clone();
            let marker = marker.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let event = prost_types::Any {
                        type_url: "containerd.events.ContainerDelete".into(),
                        value: ContainerDelete { id: marker.clone() }.encode_to_vec(),
                    };
                    let _ = cri
                        .events()
                        .publish(cri.req(PublishRequest {
                            topic: MARKER_TOPIC.into(),
                            event: Some(event),
                        }))
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let stream = subscribe.await.map_err(|e| e.to_string());
        let mut stream = match stream {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(status)) => {
                publisher.abort();
                return Err(status.to_string());
            }
            Err(e) => {
                publisher.abort();
                return Err(e);
            }
        };
        let mut marked = false;
        loop {
            let envelope = match stream.message().await {
                Ok(Some(e)) => e,
                Ok(None) => {
                    publisher.abort();
                    return Err("event stream ended".into());
                }
                Err(status) => {
                    publisher.abort();
                    return Err(status.to_string());
                }
            };
            if envelope.topic == MARKER_TOPIC {
                let is_ours = envelope
                    .event
                    .as_ref()
                    .and_then(|a| ContainerDelete::decode(a.value.as_slice()).ok())
                    .is_some_and(|d| d.id == marker);
                if is_ours && !marked {
                    marked = true;
                    publisher.abort();
                    if let Some(l) = live.take() {
                        let _ = l.send(Ok(()));
                    }
                    if !first && tx.send(CriEvent::Resubscribed).await.is_err() {
                        return Ok(());
                    }
                }
                continue;
            }
            let Some(any) = envelope.event else { continue };
            if let Some(event) = decode_event(&any) {
                if tx.send(event).await.is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// Decodes a task event by its (bare) type name.
pub fn decode_event(any: &prost_types::Any) -> Option<CriEvent> {
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    let bytes = any.value.as_slice();
    match name {
        "containerd.events.TaskStart" => {
            TaskStart::decode(bytes).ok().map(|e| CriEvent::TaskStart {
                container_id: e.container_id,
                pid: e.pid,
            })
        }
        "containerd.events.TaskExit" => TaskExit::decode(bytes).ok().map(|e| CriEvent::TaskExit {
            // For the init process containerd sets id to the container id.
            exec_id: if e.id == e.container_id {
                String::new()
            } else {
                e.id
            },
            container_id: e.container_id,
            pid: e.pid,
            exit_status: e.exit_status,
            exited_at: timestamp_to_system(e.exited_at),
        }),
        "containerd.events.TaskOOM" => TaskOom::decode(bytes).ok().map(|e| CriEvent::TaskOom {
            container_id: e.container_id,
        }),
        "containerd.events.TaskDelete" => {
            TaskDelete::decode(bytes)
                .ok()
                .map(|e| CriEvent::TaskDelete {
                    container_id: e.container_id,
                    exit_status: e.exit_status,
                })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_bare_type_names() {
        let exit = TaskExit {
            container_id: "web-1".into(),
            id: "web-1".into(),
            pid: 42,
            exit_status: 3,
            exited_at: None,
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskExit".into(),
            value: exit.encode_to_vec(),
        };
        assert_eq!(
            decode_event(&any),
            Some(CriEvent::TaskExit {
                container_id: "web-1".into(),
                exec_id: String::new(),
                pid: 42,
                exit_status: 3,
                exited_at: None
            })
        );
        let oom = TaskOom {
            container_id: "hog".into(),
        };
        let any = prost_types::Any {
            type_url: "containerd.events.TaskOOM".into(),
            value: oom.encode_to_vec(),
        };
        assert_eq!(
            decode_event(&any),
            Some(CriEvent::TaskOom {
                container_id: "hog".into()
            })
        );
        let any = prost_types::Any {
            type_url: "containerd.events.TaskPaused".into(),
            value: vec![],
        };
        assert_eq!(decode_event(&any), None);
    }
}
