//! Status: each service's state from what the node last reported (kept
//! current by containerd's events and every convergence), never from what
//! was hoped for.

use std::time::Instant;

use api::status::{
    InstanceState, InstanceStatus, ServiceState, ServiceStatus, StatusResponse, VersionInfo,
};
use api::{ApiError, ApiResponse};

use crate::agent::ProcessState;
use crate::control::progress;
use crate::control::state::State;
use crate::control::ControlPlane;
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// What a service's replicas add up to.
#[derive(Debug, Default)]
struct Tally {
    /// Replicas of the current version, in a wanted slot, serving.
    running: u32,
    /// Replicas of an older version still serving (mid-rollout).
    old_serving: u32,
    /// Canary replicas running.
    canary_running: usize,
    /// A replica of the current version is crash-looping.
    looping: bool,
    /// Replicas on nodes that cannot be reached.
    unknown: u32,
}

/// The status of one service as `state` knows it.
pub(crate) fn service_status(
    st: &State,
    record: &ServiceRecord,
    nodes: &Table,
    now: Instant,
) -> ServiceStatus {
    let name = &record.spec.name;
    let desired = record.desired_replicas();
    let (instances, tally) = instances(st, record, nodes, now);
    let service_rt = st.services.get(name);
    let start_failing = service_rt.is_some_and(|s| s.start_failures >= 2);
    let status = overall(record, desired, &tally, start_failing);
    let notes = Notes {
        last_error: service_rt.and_then(|s| s.last_error.as_deref()),
        unplaced: service_rt.and_then(|s| s.unplaced.as_deref()),
        tls_problem: service_rt.and_then(|s| s.tls_problem.as_deref()),
        pull_note: service_rt.and_then(|s| s.pull_note.as_deref()),
        in_place: service_rt.and_then(|s| s.in_place.as_deref()),
    };
    let mut message = message(record, status, desired, &tally, &notes);
    let replicas = st.rollout_replicas(record, &|n| nodes.reachable(n), now);
    let mut rollout = progress::rollout(&progress::Facts {
        record,
        replicas: &replicas,
        problem: rollout_problem(st, record, nodes, now),
        note: notes.in_place.map(str::to_string),
    });
    let mut status = status;
    let job = crate::control::jobs::want_of(record).map(|want| {
        let listed = st
            .instances
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let (s, m, r, job) = crate::control::jobs::outcome::parts(
            record,
            &want,
            listed,
            notes.unplaced,
            progress::deadline_secs(record),
            crate::control::jobs::runs::unix_now(),
        );
        (status, message, rollout) = (s, m, r);
        job
    });
    ServiceStatus {
        name: name.clone(),
        project: record.spec.project.clone(),
        status,
        replicas: desired,
        running_replicas: tally.running,
        image: record.spec.image.clone(),
        domain: record.spec.domain.clone(),
        version: record.version,
        message,
        instances,
        rollout,
        ports: record
            .spec
            .published_ports()
            .into_iter()
            .map(Into::into)
            .collect(),
        job,
    }
}

/// Each replica of the service as status shows it, sorted by id, and what
/// they add up to. A replica on a node that cannot be reached is
/// `unknown` and counts as nothing.
fn instances(
    st: &State,
    record: &ServiceRecord,
    nodes: &Table,
    now: Instant,
) -> (Vec<InstanceStatus>, Tally) {
    let desired = record.desired_replicas();
    let mut tally = Tally::default();
    let mut out = Vec::new();
    for i in st.instances.get(&record.spec.name).into_iter().flatten() {
        let rt = st.replicas.get(&i.id);
        let is_current = i.version == record.version && i.slot < desired;
        let is_canary = record
            .canary
            .as_ref()
            .is_some_and(|c| c.version == i.version);
        // An older version's replica serves until a rollout retires it.
        let is_old = i.version != record.version && !record.stopped && !is_canary;
        let removing = st.removing.contains(&i.id);
        let shown = match i.state {
            ProcessState::Running if removing || !(is_current || is_old || is_canary) => {
                InstanceState::Stopping
            }
            ProcessState::Running => InstanceState::Running,
            ProcessState::Created => InstanceState::Starting,
            ProcessState::Exited { code }
                if !i.restart.finished(code)
                    && rt.and_then(|r| r.next_start).is_some_and(|t| t > now) =>
            {
                InstanceState::Backoff
            }
            ProcessState::Exited { .. } => InstanceState::Exited,
        };
        let away = !nodes.reachable(&i.node);
        let (shown, last_state, last_seen) = if away {
            let seen = nodes.get(&i.node).and_then(|n| n.last_seen());
            (InstanceState::Unknown, Some(shown), seen)
        } else {
            (shown, None, None)
        };
        let serving = matches!(i.state, ProcessState::Running) && !removing && !away;
        tally.unknown += u32::from(away);
        tally.old_serving += u32::from(is_old && serving);
        tally.running += u32::from(is_current && serving);
        tally.canary_running += usize::from(is_canary && shown == InstanceState::Running);
        tally.looping |= is_current && st.crash_looping(&i.id, now);
        out.push(InstanceStatus {
            id: i.id.clone(),
            node: i.node.clone(),
            ip: i.ip.map(|ip| ip.to_string()),
            state: shown,
            healthy: rt.and_then(|r| r.healthy),
            restarts: rt.map(|r| r.restarts).unwrap_or(0),
            last_exit: rt.and_then(|r| r.last_exit.clone()),
            canary: is_canary,
            version: i.version,
            pid: i.pid,
            last_state,
            last_seen,
            exit_code: match i.state {
                ProcessState::Exited { code } => Some(code),
                _ => None,
            },
            run: (i.restart != api::spec::RestartPolicy::Always).then_some(i.run),
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    (out, tally)
}

/// The service's state from its replicas: running at full capacity (also
/// mid-rollout, with old replicas making up the count), failed when none
/// runs and they crash or fail to start, pending when none runs yet,
/// degraded otherwise (also when none is known to run because their nodes
/// cannot be reached).
fn overall(
    record: &ServiceRecord,
    desired: u32,
    tally: &Tally,
    start_failing: bool,
) -> ServiceState {
    let Tally {
        running,
        old_serving,
        looping,
        ..
    } = *tally;
    if record.stopped {
        ServiceState::Stopped
    } else if desired == 0 || (running + old_serving >= desired && !looping) {
        // Mid-rollout, old replicas still serving make up the count.
        ServiceState::Running
    } else if running == 0 && (looping || start_failing) {
        ServiceState::Failed
    } else if running == 0 && tally.unknown == 0 {
        ServiceState::Pending
    } else {
        ServiceState::Degraded
    }
}

/// What the node and the reconciler last said about a service.
struct Notes<'a> {
    last_error: Option<&'a str>,
    unplaced: Option<&'a str>,
    tls_problem: Option<&'a str>,
    pull_note: Option<&'a str>,
    in_place: Option<&'a str>,
}

/// The status message: why a service is not running (where it could not be
/// placed, the last error), or the rollout's progress, then the canary,
/// TLS and pull notes, with a revert's message first.
fn message(
    record: &ServiceRecord,
    status: ServiceState,
    desired: u32,
    tally: &Tally,
    notes: &Notes<'_>,
) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    if let Some(reverted) = &record.reverted {
        parts.push(reverted.message.clone());
    }
    if tally.old_serving > 0 {
        parts.push(format!(
            "rolling out version {}: {} of {desired} new replicas running, {} old still serving",
            record.version, tally.running, tally.old_serving
        ));
        parts.extend(notes.in_place.map(str::to_string));
    } else if status != ServiceState::Running {
        parts.extend(notes.unplaced.map(str::to_string));
        parts.extend(notes.last_error.map(str::to_string));
    }
    if let Some(c) = &record.canary {
        parts.push(format!(
            "canary version {} at {}%: {} replica(s) running",
            c.version, c.weight, tally.canary_running
        ));
    }
    match tally.unknown {
        0 => {}
        1 => parts.push("1 replica unknown: its node cannot be reached".into()),
        n => parts.push(format!(
            "{n} replicas unknown: their nodes cannot be reached"
        )),
    }
    parts.extend(notes.tls_problem.map(str::to_string));
    parts.extend(notes.pull_note.map(str::to_string));
    (!parts.is_empty()).then(|| parts.join("; "))
}

/// Why the replicas of the version being rolled out do not come up, if
/// they keep failing to: failed starts, a crash loop, or the deadline.
fn rollout_problem(
    st: &State,
    record: &ServiceRecord,
    nodes: &Table,
    now: Instant,
) -> Option<String> {
    let name = &record.spec.name;
    let service = st.services.get(name);
    if let Some(s) = service.filter(|s| s.start_failures >= 2) {
        return Some(
            s.last_error
                .clone()
                .unwrap_or_else(|| "replicas fail to start".into()),
        );
    }
    let version = record.canary.as_ref().map_or(record.version, |c| c.version);
    let looping = st
        .instances
        .get(name)
        .into_iter()
        .flatten()
        .filter(|i| i.version == version)
        .find(|i| st.crash_looping(&i.id, now));
    if let Some(i) = looping {
        let code = st
            .replicas
            .get(&i.id)
            .and_then(|r| r.last_exit.as_ref())
            .map(|e| format!(" (last exit code {})", e.code))
            .unwrap_or_default();
        return Some(format!("replica {} keeps exiting{code}", i.id));
    }
    let deadline = progress::deadline_secs(record);
    match service.and_then(|s| s.unsettled_since) {
        Some((version, since))
            if version == record.version
                && now.duration_since(since).as_secs() >= deadline
                && !st.settled(record, &|n| nodes.reachable(n), now) =>
        {
            Some(format!("not ready within {deadline}s"))
        }
        _ => None,
    }
}

/// How long an encoded status answer may be served while the state has
/// not changed: time alone moves replicas from `backoff` to `exited`.
pub const STATUS_CACHE_TTL: std::time::Duration = std::time::Duration::from_millis(500);

impl ControlPlane {
    /// `GET /api/v1/status`, encoded; rebuilt only when the state changed
    /// (or after [`STATUS_CACHE_TTL`]), since dashboards poll it hard.
    pub(crate) fn status_answer(&self, project: Option<&str>) -> Result<ApiResponse, ApiError> {
        let key = project.map(str::to_string);
        let epoch = self.inner().state().epoch;
        {
            let cache = self
                .inner()
                .status_cache
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if let Some((e, at, bytes)) = cache.get(&key) {
                if *e == epoch && at.elapsed() < STATUS_CACHE_TTL {
                    return Ok(ApiResponse::Json(200, bytes.clone()));
                }
            }
        }
        let bytes = bytes::Bytes::from(
            serde_json::to_vec(&self.status(project))
                .map_err(|e| ApiError::internal(e.to_string()))?,
        );
        let mut cache = self
            .inner()
            .status_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        // One entry per project filter asked for: keep that bounded.
        if cache.len() >= 64 {
            cache.clear();
        }
        cache.insert(key, (epoch, Instant::now(), bytes.clone()));
        Ok(ApiResponse::Json(200, bytes))
    }

    pub(crate) fn status(&self, project: Option<&str>) -> StatusResponse {
        let now = Instant::now();
        let st = self.inner().state();
        let nodes = self.inner().nodes.snapshot();
        let mut services: Vec<ServiceStatus> = st
            .records
            .values()
            .filter(|r| project.is_none_or(|p| r.spec.project == p))
            .map(|r| service_status(&st, r, &nodes, now))
            .collect();
        services.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        StatusResponse { services }
    }

    pub(crate) fn versions(&self, name: &str) -> Result<ApiResponse, ApiError> {
        let st = self.inner().state();
        let record = st
            .records
            .get(name)
            .ok_or_else(|| ApiError::service_not_found(name))?;
        let versions: Vec<VersionInfo> = record
            .history
            .iter()
            .rev()
            .map(|v| VersionInfo {
                version: v.version,
                image: v.spec.image.clone(),
                image_digest: v.image_digest.clone(),
                deployed_at: v.deployed_at.clone(),
                deployed_by: v.deployed_by.clone(),
                note: v.note.clone(),
            })
            .collect();
        ApiResponse::ok(
            &serde_json::json!({ "name": name, "current": record.version, "versions": versions }),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Canary, Reverted};
    use api::spec::ServiceSpec;

    fn record(replicas: i64) -> ServiceRecord {
        let mut spec: ServiceSpec =
            serde_json::from_str(r#"{"name":"web","image":"web:v2"}"#).unwrap();
        spec.replicas = replicas;
        ServiceRecord::for_tests(spec, 2)
    }

    fn tally(running: u32, old_serving: u32, looping: bool) -> Tally {
        Tally {
            running,
            old_serving,
            canary_running: 0,
            looping,
            unknown: 0,
        }
    }

    const NO_NOTES: Notes<'static> = Notes {
        last_error: None,
        unplaced: None,
        tls_problem: None,
        pull_note: None,
        in_place: None,
    };

    #[test]
    fn the_state_follows_the_replicas_that_serve() {
        let r = record(3);
        let state = |t: Tally, failing| overall(&r, 3, &t, failing);
        assert_eq!(state(tally(3, 0, false), false), ServiceState::Running);
        // Mid-rollout, the old version makes up the count.
        assert_eq!(state(tally(1, 2, false), false), ServiceState::Running);
        assert_eq!(state(tally(1, 1, false), false), ServiceState::Degraded);
        assert_eq!(state(tally(3, 0, true), false), ServiceState::Degraded);
        assert_eq!(state(tally(0, 0, false), false), ServiceState::Pending);
        assert_eq!(state(tally(0, 0, true), false), ServiceState::Failed);
        assert_eq!(state(tally(0, 0, false), true), ServiceState::Failed);
        let mut stopped = record(3);
        stopped.stopped = true;
        assert_eq!(
            overall(&stopped, 0, &tally(0, 0, false), false),
            ServiceState::Stopped
        );
        assert_eq!(
            overall(&record(0), 0, &tally(0, 0, false), false),
            ServiceState::Running
        );
    }

    #[test]
    fn the_message_says_why_and_what_goes_on() {
        let r = record(2);
        let notes = Notes {
            last_error: Some("pull failed"),
            unplaced: Some("1 replica unplaced: no node fits"),
            ..NO_NOTES
        };
        // Not running: where it could not go, then the last error.
        assert_eq!(
            message(&r, ServiceState::Degraded, 2, &tally(1, 0, false), &notes).as_deref(),
            Some("1 replica unplaced: no node fits; pull failed")
        );
        // Running: an old error is no news.
        assert_eq!(
            message(&r, ServiceState::Running, 2, &tally(2, 0, false), &notes),
            None
        );
        // A rollout's progress says more than its errors.
        assert_eq!(
            message(&r, ServiceState::Running, 2, &tally(1, 1, false), &notes).as_deref(),
            Some("rolling out version 2: 1 of 2 new replicas running, 1 old still serving")
        );
    }

    #[test]
    fn a_revert_comes_first_and_the_notes_last() {
        let mut r = record(2);
        r.reverted = Some(Reverted {
            version: 3,
            message: "deploy of version 3 failed; reverted to version 2".into(),
        });
        r.canary = Some(Canary {
            version: 4,
            spec: r.spec.clone(),
            image_digest: None,
            weight: 10,
            failed: None,
        });
        let t = Tally {
            canary_running: 1,
            ..tally(2, 0, false)
        };
        let notes = Notes {
            tls_problem: Some("served over HTTP only on n2"),
            pull_note: Some("image from the node's store"),
            ..NO_NOTES
        };
        assert_eq!(
            message(&r, ServiceState::Running, 2, &t, &notes).as_deref(),
            Some(
                "deploy of version 3 failed; reverted to version 2; \
                 canary version 4 at 10%: 1 replica(s) running; \
                 served over HTTP only on n2; image from the node's store"
            )
        );
    }
}
