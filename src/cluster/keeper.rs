//! While an agent has no server, it keeps its replicas itself: every
//! second it restarts those that exited, with the same backoff the
//! server uses (1 s, 2 s, 4 s ... 5 min). It never stops or removes one.
//! Once connected, the server decides again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{NodeAgent, ProcessState};
use crate::control::plan::backoff;

/// A replica's crashes while offline, and when it may start again.
#[derive(Debug, Clone, Copy)]
struct Crashes {
    count: u32,
    next: Instant,
}

/// The exited replicas to restart now; notes each crash once.
fn due(exited: &[String], crashes: &mut HashMap<String, Crashes>, now: Instant) -> Vec<String> {
    crashes.retain(|id, _| exited.contains(id));
    let mut out = Vec::new();
    for id in exited {
        let entry = crashes.entry(id.clone()).or_insert_with(|| Crashes {
            count: 0,
            next: now,
        });
        if entry.next <= now {
            entry.count += 1;
            entry.next = now + backoff(entry.count);
            out.push(id.clone());
        }
    }
    out
}

/// See the module doc.
pub async fn run(local: Arc<dyn NodeAgent>, connected: Arc<AtomicBool>) {
    let mut crashes = HashMap::new();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if connected.load(Ordering::Relaxed) {
            crashes.clear();
            continue;
        }
        let Ok(list) = local.list().await else {
            continue;
        };
        let exited: Vec<String> = list
            .iter()
            .filter(|i| matches!(i.state, ProcessState::Exited { .. }))
            .map(|i| i.id.clone())
            .collect();
        for id in due(&exited, &mut crashes, Instant::now()) {
            match local.restart(&id).await {
                Ok(pid) => {
                    tracing::info!(instance = %id, pid, "restarted while the server is away")
                }
                Err(e) => tracing::warn!(instance = %id, error = %e, "restart failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_back_off_while_offline() {
        let mut crashes = HashMap::new();
        let t0 = Instant::now();
        let ids = vec!["web.0.a".to_string()];
        assert_eq!(due(&ids, &mut crashes, t0), ids, "first crash: at once");
        assert!(due(&ids, &mut crashes, t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(due(&ids, &mut crashes, t0 + Duration::from_secs(1)), ids);
        // The second wait is 2 s.
        assert!(due(&ids, &mut crashes, t0 + Duration::from_secs(2)).is_empty());
        assert_eq!(due(&ids, &mut crashes, t0 + Duration::from_secs(3)), ids);
        // Running again: forgotten.
        assert!(due(&[], &mut crashes, t0 + Duration::from_secs(4)).is_empty());
        assert!(crashes.is_empty());
    }
}
