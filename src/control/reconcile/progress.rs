//! Where a service's rollout stands, as status shows it and clients wait on
//! it: decided from the record and the replicas as last seen, with no side
//! effects, so every path (rolling, canary, promote, rollback, revert, a
//! first version that cannot start) is tested without containerd.

use api::status::{Rollout, RolloutPhase};

use crate::control::rollout::DEFAULT_DEADLINE;
use crate::store::ServiceRecord;

/// One replica as the rollout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Replica {
    pub version: u64,
    pub slot: u32,
    /// Runs and is not being removed.
    pub serving: bool,
    /// Takes traffic (its readiness check passed, or it settled).
    pub ready: bool,
}

/// What the rollout is decided from.
#[derive(Debug, Clone)]
pub(crate) struct Facts<'a> {
    pub record: &'a ServiceRecord,
    pub replicas: &'a [Replica],
    /// Why replicas of the version do not come up, when they keep failing
    /// (failed starts, a crash loop, the deadline passed).
    pub problem: Option<String>,
    /// How the rollout goes when not as usual (replacing in place).
    pub note: Option<String>,
}

/// The progress deadline of a record's current version.
pub(crate) fn deadline_secs(record: &ServiceRecord) -> u64 {
    record
        .spec
        .deploy
        .as_ref()
        .and_then(|d| d.progress_deadline_secs)
        .unwrap_or(DEFAULT_DEADLINE.as_secs())
}

/// True when every wanted replica of the current version (and of a
/// canary beside it) runs and is ready, and nothing else is left.
pub(crate) fn settled(record: &ServiceRecord, replicas: &[Replica]) -> bool {
    if record.spec.is_job() {
        // A job's replicas end: only another version's count as unsettled.
        return replicas.iter().all(|r| r.version == record.version);
    }
    let desired = record.desired_replicas();
    let canary = record
        .canary
        .as_ref()
        .map_or((0, 0), |c| (c.version, canary_total(c, desired)));
    updated(replicas, record.version, desired) == desired
        && updated(replicas, canary.0, canary.1) == canary.1
        && replicas.len() == (desired + canary.1) as usize
}

/// Canary replicas wanted beside `desired` stable ones.
fn canary_total(canary: &crate::store::Canary, desired: u32) -> u32 {
    if desired == 0 {
        0
    } else {
        canary.replicas(desired)
    }
}

/// Replicas of `version` in a wanted slot that run and are ready.
fn updated(replicas: &[Replica], version: u64, desired: u32) -> u32 {
    replicas
        .iter()
        .filter(|r| r.version == version && r.slot < desired && r.serving && r.ready)
        .count() as u32
}

/// The rollout of `facts.record`; `None` for a stopped service.
pub(crate) fn rollout(facts: &Facts<'_>) -> Option<Rollout> {
    let record = facts.record;
    if record.stopped {
        return None;
    }
    let desired = record.desired_replicas();
    let deadline_secs = deadline_secs(record);
    if record.spec.is_job() {
        // Status tells a job's runs precisely (see `jobs::outcome`).
        let old = facts
            .replicas
            .iter()
            .filter(|r| r.version != record.version)
            .count() as u32;
        return Some(Rollout {
            version: record.version,
            phase: if old == 0 {
                RolloutPhase::Complete
            } else {
                RolloutPhase::Progressing
            },
            message: format!("version {}: job run {}", record.version, record.job.run),
            updated: facts.replicas.len() as u32 - old,
            total: desired,
            old,
            deadline_secs,
            weight: None,
        });
    }
    if let Some(canary) = &record.canary {
        let total = canary_total(canary, desired);
        let ready = updated(facts.replicas, canary.version, total);
        let (phase, message) = match canary.failed.as_ref().or(facts.problem.as_ref()) {
            Some(problem) => (
                RolloutPhase::Failed,
                format!("canary version {}: {problem}", canary.version),
            ),
            None => (
                RolloutPhase::Canary,
                format!(
                    "canary version {} at {}%: {ready} of {total} replicas ready",
                    canary.version, canary.weight
                ),
            ),
        };
        return Some(Rollout {
            version: canary.version,
            phase,
            message,
            updated: ready,
            total,
            old: 0,
            deadline_secs,
            weight: Some(canary.weight),
        });
    }
    if let Some(reverted) = &record.reverted {
        return Some(Rollout {
            version: reverted.version,
            phase: RolloutPhase::Reverted,
            message: reverted.message.clone(),
            updated: updated(facts.replicas, reverted.version, desired),
            total: desired,
            old: 0,
            deadline_secs,
            weight: None,
        });
    }
    let version = record.version;
    let ready = updated(facts.replicas, version, desired);
    let old = facts
        .replicas
        .iter()
        .filter(|r| r.version != version || r.slot >= desired)
        .count() as u32;
    let old_serving = facts
        .replicas
        .iter()
        .any(|r| r.version != version && r.serving);
    let (phase, message) = if settled(record, facts.replicas) {
        (
            RolloutPhase::Complete,
            format!("version {version}: {ready} of {desired} replicas ready"),
        )
    } else if let (Some(problem), false) = (&facts.problem, old_serving) {
        (
            RolloutPhase::Failed,
            format!("version {version}: {problem}"),
        )
    } else {
        let mut m = format!("version {version}: {ready} of {desired} replicas updated and ready");
        if old > 0 {
            m.push_str(&format!(", {old} old still there"));
        }
        if let Some(note) = &facts.note {
            m.push_str(&format!("; {note}"));
        }
        if let Some(problem) = &facts.problem {
            m.push_str(&format!("; {problem}"));
        }
        (RolloutPhase::Progressing, m)
    };
    Some(Rollout {
        version,
        phase,
        message,
        updated: ready,
        total: desired,
        old,
        deadline_secs,
        weight: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Canary, Reverted};
    use api::spec::ServiceSpec;

    fn record(version: u64, replicas: i64) -> ServiceRecord {
        let mut spec: ServiceSpec =
            serde_json::from_str(r#"{"name":"web","image":"web:v1"}"#).unwrap();
        spec.replicas = replicas;
        ServiceRecord::for_tests(spec, version)
    }

    fn replica(version: u64, slot: u32, serving: bool, ready: bool) -> Replica {
        Replica {
            version,
            slot,
            serving,
            ready,
        }
    }

    fn phase_of(record: &ServiceRecord, replicas: &[Replica], problem: Option<&str>) -> Rollout {
        rollout(&Facts {
            record,
            replicas,
            problem: problem.map(str::to_string),
            note: None,
        })
        .unwrap()
    }

    #[test]
    fn rolling_update_progresses_until_no_old_replica_is_left() {
        let r = record(2, 2);
        // Start: the old version serves, nothing new yet.
        let p = phase_of(
            &r,
            &[replica(1, 0, true, true), replica(1, 1, true, true)],
            None,
        );
        assert_eq!(
            (p.phase, p.version, p.updated, p.total, p.old),
            (RolloutPhase::Progressing, 2, 0, 2, 2)
        );
        // New replicas up but one not ready yet.
        let p = phase_of(
            &r,
            &[
                replica(1, 0, true, true),
                replica(2, 0, true, true),
                replica(2, 1, true, false),
            ],
            None,
        );
        assert_eq!(
            (p.phase, p.updated, p.old),
            (RolloutPhase::Progressing, 1, 1)
        );
        // All new ready, one old still draining: not done.
        let p = phase_of(
            &r,
            &[
                replica(1, 1, false, true),
                replica(2, 0, true, true),
                replica(2, 1, true, true),
            ],
            None,
        );
        assert_eq!(
            (p.phase, p.updated, p.old),
            (RolloutPhase::Progressing, 2, 1)
        );
        assert!(p.message.contains("1 old still there"), "{}", p.message);
        let p = phase_of(
            &r,
            &[replica(2, 0, true, true), replica(2, 1, true, true)],
            None,
        );
        assert_eq!((p.phase, p.updated, p.old), (RolloutPhase::Complete, 2, 0));
        assert_eq!(p.deadline_secs, 60);
    }

    #[test]
    fn scaling_is_progress_of_the_same_version() {
        let r = record(3, 3);
        let p = phase_of(&r, &[replica(3, 0, true, true)], None);
        assert_eq!(
            (p.phase, p.version, p.updated, p.total),
            (RolloutPhase::Progressing, 3, 1, 3)
        );
        // Scaled down: the surplus counts until it is gone.
        let r = record(3, 1);
        let p = phase_of(
            &r,
            &[replica(3, 0, true, true), replica(3, 1, true, true)],
            None,
        );
        assert_eq!((p.phase, p.old), (RolloutPhase::Progressing, 1));
        let r = record(3, 0);
        assert_eq!(phase_of(&r, &[], None).phase, RolloutPhase::Complete);
    }

    #[test]
    fn a_first_version_that_cannot_start_fails_and_recovers_when_it_does() {
        let r = record(1, 2);
        let p = phase_of(
            &r,
            &[replica(1, 0, false, false)],
            Some("replica web-0 keeps exiting"),
        );
        assert_eq!(p.phase, RolloutPhase::Failed);
        assert!(p.message.contains("keeps exiting"), "{}", p.message);
        let p = phase_of(
            &r,
            &[replica(1, 0, true, true), replica(1, 1, true, true)],
            None,
        );
        assert_eq!(p.phase, RolloutPhase::Complete);
    }

    #[test]
    fn a_problem_while_the_old_version_serves_is_still_progress() {
        // The reconciler reverts such a rollout; until then it progresses.
        let r = record(2, 1);
        let p = phase_of(
            &r,
            &[replica(1, 0, true, true), replica(2, 0, false, false)],
            Some("start failed: x"),
        );
        assert_eq!(p.phase, RolloutPhase::Progressing);
        assert!(p.message.contains("start failed"), "{}", p.message);
    }

    #[test]
    fn a_reverted_rollout_names_the_failed_version_until_the_next_change() {
        let mut r = record(2, 2);
        r.reverted = Some(Reverted {
            version: 3,
            message:
                "deploy of version 3 failed: replica web-x exited with 3; reverted to version 2"
                    .into(),
        });
        let p = phase_of(
            &r,
            &[replica(2, 0, true, true), replica(2, 1, true, true)],
            None,
        );
        assert_eq!(
            (p.phase, p.version, p.updated),
            (RolloutPhase::Reverted, 3, 0)
        );
        assert!(p.message.contains("reverted to version 2"));
    }

    #[test]
    fn canary_has_its_own_phase_with_the_weight() {
        let mut r = record(1, 4);
        r.canary = Some(Canary {
            version: 2,
            spec: r.spec.clone(),
            image_digest: None,
            weight: 25,
            failed: None,
        });
        let stable = [
            replica(1, 0, true, true),
            replica(1, 1, true, true),
            replica(1, 2, true, true),
            replica(1, 3, true, true),
        ];
        let mut all = stable.to_vec();
        let p = phase_of(&r, &all, None);
        assert_eq!(
            (p.phase, p.version, p.updated, p.total, p.weight),
            (RolloutPhase::Canary, 2, 0, 1, Some(25))
        );
        all.push(replica(2, 0, true, true));
        let p = phase_of(&r, &all, None);
        assert_eq!((p.phase, p.updated, p.total), (RolloutPhase::Canary, 1, 1));
        // Ready on both sides: settled, so no deadline runs against it.
        assert!(settled(&r, &all));
        assert!(!settled(&r, &stable));
        let p = phase_of(&r, &all, Some("replica web-c keeps exiting"));
        assert_eq!(p.phase, RolloutPhase::Failed);
        assert_eq!(p.weight, Some(25));
    }

    #[test]
    fn promote_rolls_the_canary_version_over_the_stable_replicas() {
        // After promote the record's version is the canary's; the canary
        // replica keeps its slot, the stable ones are old.
        let r = record(2, 2);
        let p = phase_of(
            &r,
            &[
                replica(1, 0, true, true),
                replica(1, 1, true, true),
                replica(2, 0, true, true),
            ],
            None,
        );
        assert_eq!(
            (p.phase, p.version, p.updated, p.old),
            (RolloutPhase::Progressing, 2, 1, 2)
        );
        let p = phase_of(
            &r,
            &[replica(2, 0, true, true), replica(2, 1, true, true)],
            None,
        );
        assert_eq!(p.phase, RolloutPhase::Complete);
    }

    #[test]
    fn rollback_is_a_new_version_rolled_out_like_any_other() {
        // Version 3 is "rollback to 1": replicas of version 2 are old.
        let r = record(3, 1);
        let p = phase_of(&r, &[replica(2, 0, true, true)], None);
        assert_eq!(
            (p.phase, p.version, p.old),
            (RolloutPhase::Progressing, 3, 1)
        );
        let p = phase_of(&r, &[replica(3, 0, true, true)], None);
        assert_eq!(p.phase, RolloutPhase::Complete);
    }

    #[test]
    fn a_stopped_service_has_no_rollout() {
        let mut r = record(1, 1);
        r.stopped = true;
        assert!(rollout(&Facts {
            record: &r,
            replicas: &[],
            problem: None,
            note: None,
        })
        .is_none());
    }
}
