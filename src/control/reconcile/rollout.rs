//! When a rollout fails: a replica of the new version crashed, or it was
//! not ready by the deadline. Then the service goes back to the version
//! before, whose replicas still serve, and status says why.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::Inner;
use crate::store::{Reverted, ServiceRecord};

/// How long a rollout may take before it is reverted, by default.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Why the rollout to `record`'s version must stop, if it must: a replica
/// of the new version crashed, or the deadline passed.
pub(crate) fn failure(
    inner: &Arc<Inner>,
    record: &ServiceRecord,
    instances: &[crate::agent::Instance],
    rolling: bool,
    now: Instant,
) -> Option<String> {
    // Only a rollout that has something to go back to is rolled back.
    if !rolling {
        return None;
    }
    record.history.iter().rev().nth(1)?;
    let st = inner.state();
    // Since when this version has not settled (kept by the worker).
    let started = st
        .services
        .get(&record.spec.name)
        .and_then(|s| s.unsettled_since)
        .filter(|(v, _)| *v == record.version)
        .map_or(now, |(_, t)| t);
    let deadline = Duration::from_secs(crate::control::progress::deadline_secs(record));
    let crashed = instances
        .iter()
        .filter(|i| i.version == record.version)
        .find_map(|i| {
            st.replicas
                .get(&i.id)
                .and_then(|r| r.last_exit.as_ref())
                .map(|e| (i.id.clone(), e.code))
        });
    if let Some((id, code)) = crashed {
        return Some(format!(
            "replica {id} of version {} exited with {code}",
            record.version
        ));
    }
    if now.duration_since(started) > deadline {
        return Some(format!(
            "version {} was not ready within {}s",
            record.version,
            deadline.as_secs()
        ));
    }
    None
}

/// Goes back to the version before `record`'s, marking the deploy failed.
pub(crate) async fn revert(inner: &Arc<Inner>, record: &ServiceRecord, reason: &str) {
    let lock = inner.service_lock(&record.spec.name);
    let _held = lock.lock().await;
    let Ok(Some(mut current)) = inner.repo.service(&record.spec.name) else {
        return;
    };
    if current.version != record.version {
        return;
    }
    let Some(previous) = current.history.iter().rev().nth(1).cloned() else {
        return;
    };
    tracing::warn!(service = %record.spec.name, failed = record.version, back_to = previous.version, reason, "rollout failed; reverting");
    let replicas = current.spec.replicas;
    current.spec = previous.spec.clone();
    current.spec.replicas = replicas;
    current.version = previous.version;
    current.image_digest = previous.image_digest.clone();
    let message = format!(
        "deploy of version {} failed: {reason}; reverted to version {}",
        record.version, previous.version
    );
    if let Some(entry) = current
        .history
        .iter_mut()
        .find(|v| v.version == record.version)
    {
        entry.note = Some(match entry.note.take() {
            Some(n) => format!("{n}; reverted: {reason}"),
            None => format!("reverted: {reason}"),
        });
    }
    current.reverted = Some(Reverted {
        version: record.version,
        message,
    });
    current.changed_at(crate::control::deploy::now_rfc3339());
    if let Err(e) = inner.repo.put_service(&current) {
        tracing::error!(service = %record.spec.name, error = %e, "could not save the revert");
        return;
    }
    let notes = inner.state.put_record(current).await;
    inner.tell(notes);
}
