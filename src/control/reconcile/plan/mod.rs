//! The reconciler's decision, pure: given what a service should be and
//! what runs on every node, which replicas to remove, restart or start (and
//! where, as the scheduler's `place` closure says), and when to look again.
//! Tested without containerd.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::agent::{Instance, ProcessState};

/// First restart delay; doubles per consecutive crash.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Running this long without a crash resets the backoff.
pub const HEALTHY_RESET: Duration = Duration::from_secs(600);

/// The restart delay after `consecutive` crashes in a row (1, 2, 4 ... 300 s).
pub fn backoff(consecutive: u32) -> Duration {
    let exp = consecutive.saturating_sub(1).min(16);
    (BACKOFF_START * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// The delay before restarting a replica after `consecutive` crashes in
/// a row: none after the first (as Kubernetes restarts at once), then
/// [`backoff`] from the second (1, 2, 4 ... 300 s).
pub fn crash_backoff(consecutive: u32) -> Duration {
    match consecutive {
        0 | 1 => Duration::ZERO,
        n => backoff(n - 1),
    }
}

/// What the service should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desired {
    pub version: u64,
    pub replicas: u32,
    /// Replacing an older version: how many of the wanted replicas may be
    /// missing (not ready) meanwhile. Replacing in place (no room for a
    /// surge) takes at least 1.
    pub max_unavailable: u32,
    /// Replacing an older version: how many replicas beyond the wanted
    /// count may run meanwhile (at least 1), so that many new ones start
    /// at once.
    pub max_surge: u32,
    /// `deploy.strategy = "recreate"`: every replica of another version
    /// is gone before one of this version starts.
    pub recreate: bool,
}

/// One step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Remove { id: String },
    Restart { id: String },
    Start { slot: u32, node: String },
}

/// The steps, and when to look again if something waits on a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub wake_at: Option<Instant>,
    /// Replicas wanted now that no node could take.
    pub unplaced: u32,
    /// A rollout found no room for a surge on any node and replaces old
    /// replicas in place: this many at a time.
    pub in_place: Option<u32>,
}

/// What planning asks of the world beside the replicas.
pub struct Rules<'r> {
    /// Replicas that must move (their node is drained): replaced like an
    /// old version's, each new one ready before one of them goes.
    pub leaving: &'r dyn Fn(&Instance) -> bool,
    /// When an exited replica may restart (None: now).
    pub restart_at: &'r dyn Fn(&str) -> Option<Instant>,
    /// When new replicas may be tried again after a failed start (None: now).
    pub start_at: Option<Instant>,
    /// Whether a running replica takes traffic (health check passed, or
    /// up long enough).
    pub ready: &'r dyn Fn(&Instance) -> bool,
    /// Replicas that were given up for lost and came back: where a slot
    /// has two, these go and the ones that served meanwhile stay.
    pub stale: &'r dyn Fn(&Instance) -> bool,
    /// Whether removing this old replica leaves room for a new one.
    pub frees_room: &'r dyn Fn(&Instance) -> bool,
    /// Replicas of another version are still being stopped (they are not
    /// among the instances planned).
    pub old_stopping: bool,
    pub now: Instant,
}

/// Decides. `place(slot)` names the node for a new replica (None: none fits).
///
/// A new version rolls: at most `max_surge` replicas beyond the wanted
/// count run at once and at most `max_unavailable` wanted ones are not
/// ready, as Kubernetes counts them; old replicas stay until new ones are
/// ready. When no surge replica fits on any node, old replicas are
/// replaced in place instead: `max(1, max_unavailable)` of them are
/// stopped and their successors start once they are gone.
///
/// `recreate` stops every replica of another version first (its grace
/// honoured) and starts the new version only once none is left.
pub fn plan(
    desired: Option<Desired>,
    instances: &[Instance],
    rules: &Rules<'_>,
    place: &mut dyn FnMut(u32) -> Option<String>,
) -> Plan {
    let now = rules.now;
    let ready = rules.ready;
    let mut out = Plan::default();
    let wake = |at: Instant, out: &mut Plan| {
        out.wake_at = Some(out.wake_at.map_or(at, |w| w.min(at)));
    };
    let Some(desired) = desired else {
        out.actions = instances
            .iter()
            .map(|i| Action::Remove { id: i.id.clone() })
            .collect();
        return out;
    };
    let running = |i: &Instance| matches!(i.state, ProcessState::Running);
    if desired.recreate
        && (rules.old_stopping || instances.iter().any(|i| i.version != desired.version))
    {
        // Old replicas go, all at once; nothing new starts beside them.
        out.actions = instances
            .iter()
            .filter(|i| i.version != desired.version)
            .map(|i| Action::Remove { id: i.id.clone() })
            .collect();
        return out;
    }
    // One keeper per slot of the current version: running first, then one
    // that did not come back from a lost node, then ready, then by id.
    let mut keep: BTreeMap<u32, &Instance> = BTreeMap::new();
    let mut removals = Vec::new();
    let mut sorted: Vec<&Instance> = instances.iter().collect();
    sorted.sort_by_key(|i| (i.slot, !running(i), (rules.stale)(i), !ready(i), &i.id));
    let mut old: Vec<&Instance> = Vec::new();
    for i in sorted {
        if i.version != desired.version || (rules.leaving)(i) {
            old.push(i);
        } else if i.slot >= desired.replicas || keep.contains_key(&i.slot) {
            removals.push(Action::Remove { id: i.id.clone() });
        } else {
            keep.insert(i.slot, i);
        }
    }
    // Old replicas that still serve, until new ones can take their place.
    let new_ready = keep.values().filter(|i| running(i) && ready(i)).count() as u32;
    let keep_old = desired
        .replicas
        .saturating_sub(desired.max_unavailable)
        .saturating_sub(new_ready) as usize;
    let mut old_running: Vec<&&Instance> = old.iter().filter(|i| running(i)).collect();
    old_running.sort_by_key(|i| (std::cmp::Reverse(ready(i)), i.slot));
    let mut kept_old: Vec<&Instance> = old_running.iter().take(keep_old).map(|i| **i).collect();
    for i in &old {
        if !kept_old.iter().any(|k| k.id == i.id) {
            removals.push(Action::Remove { id: i.id.clone() });
        }
    }
    let rolling = !kept_old.is_empty();
    let mut restarts = Vec::new();
    for i in keep.values() {
        if running(i) {
            continue;
        }
        match (rules.restart_at)(&i.id) {
            Some(at) if at > now => wake(at, &mut out),
            _ => restarts.push(Action::Restart { id: i.id.clone() }),
        }
    }
    let mut starts = Vec::new();
    let mut missing: Vec<u32> = (0..desired.replicas)
        .filter(|s| !keep.contains_key(s))
        .collect();
    if rolling {
        // At most `max_surge` beyond the wanted count, old and new together.
        let now_there = keep.len() + kept_old.len();
        let room = (desired.replicas + desired.max_surge.max(1)) as usize;
        missing.truncate(room.saturating_sub(now_there));
    }
    if !missing.is_empty() {
        match rules.start_at {
            Some(at) if at > now => wake(at, &mut out),
            _ => {
                for slot in missing {
                    match place(slot) {
                        Some(node) => starts.push(Action::Start { slot, node }),
                        None => out.unplaced += 1,
                    }
                }
            }
        }
    }
    let budget = desired.max_unavailable.max(1);
    if rolling && out.unplaced > 0 {
        out.in_place = Some(budget);
    }
    if rolling && starts.is_empty() && out.unplaced > 0 {
        // No room for a surge anywhere: replace in place, within the
        // unavailability budget (a replica being removed already used it).
        let available = new_ready + kept_old.iter().filter(|i| ready(i)).count() as u32;
        let floor = desired.replicas.saturating_sub(budget);
        let mut may_go = available.saturating_sub(floor).min(out.unplaced) as usize;
        kept_old.reverse();
        for i in kept_old {
            if may_go == 0 {
                break;
            }
            if (rules.frees_room)(i) {
                removals.push(Action::Remove { id: i.id.clone() });
                may_go -= 1;
            }
        }
    }
    out.actions = removals;
    out.actions.extend(restarts);
    out.actions.extend(starts);
    out
}

#[cfg(test)]
mod surge_tests;
#[cfg(test)]
mod tests;
