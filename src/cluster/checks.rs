//! A worker node's checks of its own replicas, asked for by the server:
//! readiness probes whose changes go up as events, and liveness probes
//! that kill a replica failing them (the server then restarts it). The
//! probes and the readiness rule are the server's own (`control::health`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::wire::Up;
use crate::agent::probe::{probe_replica, Check};
use crate::agent::{service_of, AgentEvent, NodeAgent, ProcessState};
use crate::control::health::{next_readiness, pacing};

/// Probes at most this often until the first success, so that a new
/// replica takes traffic as soon as it answers.
const EAGER: Duration = Duration::from_millis(100);

/// The replica's address while it runs.
async fn running_ip(local: &dyn NodeAgent, id: &str) -> Option<std::net::Ipv4Addr> {
    let list = local.list_service(service_of(id)).await.ok()?;
    let i = list.into_iter().find(|i| i.id == id)?;
    matches!(i.state, ProcessState::Running)
        .then_some(i.ip)
        .flatten()
}

/// Checks replica `id` until it stops running or the connection ends.
pub async fn run(
    local: Arc<dyn NodeAgent>,
    up: mpsc::Sender<Up>,
    id: String,
    readiness: Option<Check>,
    liveness: Option<Check>,
) {
    let (first, interval) = pacing(readiness.as_ref(), liveness.as_ref());
    tokio::time::sleep(first).await;
    let (mut ready, mut failures, mut live_failures) = (None::<bool>, 0u32, 0u32);
    let mut last_live: Option<Instant> = None;
    let mut probes = 0u32;
    loop {
        let Some(ip) = running_ip(local.as_ref(), &id).await else {
            return;
        };
        if let Some(check) = &readiness {
            let ok = probe_replica(local.as_ref(), &id, ip, check).await;
            let (after, f) = next_readiness(ready, failures, ok, check.failure_threshold);
            failures = f;
            if after != ready {
                tracing::info!(instance = %id, ready = after == Some(true), "readiness changed");
                ready = after;
                let event = AgentEvent::Health {
                    id: id.clone(),
                    ready: after == Some(true),
                };
                if up.send(Up::Event(event)).await.is_err() {
                    return;
                }
            }
        }
        let live_due = liveness
            .as_ref()
            .is_some_and(|c| last_live.is_none_or(|t| t.elapsed() >= c.interval));
        if let (Some(check), true) = (&liveness, live_due) {
            last_live = Some(Instant::now());
            if probe_replica(local.as_ref(), &id, ip, check).await {
                live_failures = 0;
            } else {
                live_failures += 1;
                if live_failures >= check.failure_threshold {
                    tracing::warn!(instance = %id, "liveness failed; killing the replica");
                    let _ = local.kill(&id).await;
                    live_failures = 0;
                }
            }
        }
        probes += 1;
        let eager = readiness.is_some() && ready != Some(true) && probes < 50;
        tokio::time::sleep(if eager { EAGER } else { interval }).await;
    }
}
