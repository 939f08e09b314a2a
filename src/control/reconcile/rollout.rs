//! When a rollout fails: a replica of the new version crashed, it was not
//! ready by the deadline, or no node can take it even in place of an old
//! replica. Then the service goes back to the version before, whose
//! replicas still serve, and status says why. A canary that finds no room
//! fails at once and runs nothing until it is rolled back or replaced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control::Inner;
use crate::store::{Reverted, ServiceRecord};

/// How long a rollout may take before it is reverted, by default.
pub(crate) const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);

/// Why the rollout to `record`'s version must stop, if it must: no node
/// can take it (`no_room`), a replica of the new version crashed, or the
/// deadline passed.
pub(crate) fn failure(
    inner: &Arc<Inner>,
    record: &ServiceRecord,
    instances: &[crate::agent::Instance],
    rolling: bool,
    no_room: Option<&str>,
    now: Instant,
) -> Option<String> {
    // Only a rollout of the newest version that has something to go back
    // to is rolled back (a version reverted to is not reverted again).
    if !rolling || previous(record).is_none() {
        return None;
    }
    if let Some(why) = no_room {
        return Some(why.to_string());
    }
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
                .filter(|r| r.exit_witnessed)
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

/// The version a failed rollout of `record`'s version goes back to: the
/// one before it, when it is the newest.
fn previous(record: &ServiceRecord) -> Option<&crate::store::VersionRecord> {
    let mut newest_first = record.history.iter().rev();
    if newest_first.next()?.version != record.version {
        return None;
    }
    newest_first.next()
}

/// Marks `record`'s canary failed for `reason`: its replicas stop, the
/// stable version keeps serving, and status shows the canary failed.
pub(crate) async fn fail_canary(inner: &Arc<Inner>, record: &ServiceRecord, reason: &str) {
    let Some(canary) = record.canary.as_ref().filter(|c| c.failed.is_none()) else {
        return;
    };
    let lock = inner.service_lock(&record.spec.name);
    let _held = lock.lock().await;
    let Ok(Some(mut current)) = inner.repo.service(&record.spec.name) else {
        return;
    };
    let Some(c) = current
        .canary
        .as_mut()
        .filter(|c| c.version == canary.version && c.failed.is_none())
    else {
        return;
    };
    tracing::warn!(service = %record.spec.name, canary = c.version, reason, "canary failed");
    c.failed = Some(reason.to_string());
    current.changed_at(crate::control::deploy::now_rfc3339());
    if let Err(e) = inner.repo.put_service(&current) {
        tracing::error!(service = %record.spec.name, error = %e, "could not save the canary's failure");
        return;
    }
    let notes = inner.state.put_record(current).await;
    inner.tell(notes);
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
    let Some(previous) = previous(&current).cloned() else {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_version_goes_back_to_the_one_before() {
        let spec: api::spec::ServiceSpec =
            serde_json::from_value(serde_json::json!({"name": "web", "image": "busybox"})).unwrap();
        let mut record = ServiceRecord::for_tests(spec, 3);
        assert_eq!(previous(&record).map(|v| v.version), Some(2));
        // Reverted to 2: 3 is still the newest, and 2 is not reverted again.
        record.version = 2;
        assert!(previous(&record).is_none());
        // A first version has nothing to go back to.
        record.history.truncate(1);
        record.version = 1;
        assert!(previous(&record).is_none());
    }
}
