//! While an agent has no server, it keeps its replicas itself: every
//! second it restarts those that exited, with the same backoff the
//! server uses (1 s, 2 s, 4 s ... 5 min), except a job's replica that is
//! over for good by its restart policy. It never stops or removes one.
//! Once connected, the server decides again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::agent::{NodeAgent, ProcessState};
use crate::control::plan::{backoff, HEALTHY_RESET};

/// A replica's crashes while offline, when it may start again, and since
/// when it has run without crashing.
#[derive(Debug, Clone, Copy)]
struct Crashes {
    count: u32,
    next: Instant,
    running_since: Option<Instant>,
}

/// The exited replicas to restart now, given every replica listed (id,
/// exited); notes each crash once. A replica's crashes are forgotten only
/// after [`HEALTHY_RESET`] of running, as the server does, so one that
/// crashes every few seconds keeps backing off.
fn due(
    listed: &[(String, bool)],
    crashes: &mut HashMap<String, Crashes>,
    now: Instant,
) -> Vec<String> {
    crashes.retain(|id, _| listed.iter().any(|(l, _)| l == id));
    let mut out = Vec::new();
    for (id, exited) in listed {
        if !exited {
            if let Some(entry) = crashes.get_mut(id) {
                let since = *entry.running_since.get_or_insert(now);
                if now.duration_since(since) >= HEALTHY_RESET {
                    crashes.remove(id);
                }
            }
            continue;
        }
        let entry = crashes.entry(id.clone()).or_insert_with(|| Crashes {
            count: 0,
            next: now,
            running_since: None,
        });
        entry.running_since = None;
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
        // A job's replica that is over for good stays over.
        let listed: Vec<(String, bool)> = list
            .iter()
            .map(|i| {
                let exited = match i.state {
                    ProcessState::Exited { code } => !i.restart.finished(code),
                    _ => false,
                };
                (i.id.clone(), exited)
            })
            .collect();
        for id in due(&listed, &mut crashes, Instant::now()) {
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
        let id = "web.0.a".to_string();
        let exited = vec![(id.clone(), true)];
        let running = vec![(id.clone(), false)];
        let once = vec![id.clone()];
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(due(&exited, &mut crashes, t0), once, "first crash: at once");
        assert!(due(&exited, &mut crashes, at(500)).is_empty());
        assert_eq!(due(&exited, &mut crashes, at(1_000)), once);
        // Seen running between crashes: the count stands, the second wait
        // is 2 s and the third 4 s.
        assert!(due(&running, &mut crashes, at(1_500)).is_empty());
        assert!(due(&exited, &mut crashes, at(2_000)).is_empty());
        assert_eq!(due(&exited, &mut crashes, at(3_000)), once);
        assert!(due(&running, &mut crashes, at(4_000)).is_empty());
        assert!(due(&exited, &mut crashes, at(6_000)).is_empty());
        assert_eq!(due(&exited, &mut crashes, at(7_000)), once);
        assert_eq!(crashes[&id].count, 4);
        // Ten minutes of running: forgotten; the next crash restarts at once.
        assert!(due(&running, &mut crashes, at(8_000)).is_empty());
        let later = at(8_000) + HEALTHY_RESET;
        assert!(due(&running, &mut crashes, later).is_empty());
        assert!(crashes.is_empty());
        assert_eq!(due(&exited, &mut crashes, later), once);
        // Gone from the node: forgotten.
        assert!(due(&[], &mut crashes, later).is_empty());
        assert!(crashes.is_empty());
    }

    #[test]
    fn a_replica_crashing_every_two_seconds_backs_off() {
        // Crashes 2 s after each start, for 5 minutes: the old rule
        // restarted it about 100 times; with backoff it is a handful.
        let mut crashes = HashMap::new();
        let t0 = Instant::now();
        let id = "web.0.a".to_string();
        let mut restarts = 0;
        let mut exits_at = t0;
        for s in 0..300u64 {
            let now = t0 + Duration::from_secs(s);
            let exited = now >= exits_at;
            let listed = vec![(id.clone(), exited)];
            if !due(&listed, &mut crashes, now).is_empty() {
                restarts += 1;
                exits_at = now + Duration::from_secs(2);
            }
        }
        assert!(restarts <= 10, "{restarts} restarts in 5 minutes");
        assert!(restarts >= 5, "{restarts}");
    }
}
