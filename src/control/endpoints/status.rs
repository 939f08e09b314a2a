//! Status: each service's state from what the node last reported (kept
//! current by containerd's events and every convergence), never from what
//! was hoped for.

use std::time::Instant;

use api::status::{InstanceStatus, ServiceState, ServiceStatus, StatusResponse, VersionInfo};
use api::{ApiError, ApiResponse};

use crate::agent::ProcessState;
use crate::control::progress;
use crate::control::state::State;
use crate::control::ControlPlane;
use crate::store::ServiceRecord;

/// The status of one service as `state` knows it.
pub(crate) fn service_status(st: &State, record: &ServiceRecord, now: Instant) -> ServiceStatus {
    let name = &record.spec.name;
    let desired = record.desired_replicas();
    let empty = Vec::new();
    let instances = st.instances.get(name).unwrap_or(&empty);
    let mut running = 0;
    let mut old_serving = 0;
    let mut looping = false;
    let mut out = Vec::new();
    for i in instances {
        let rt = st.replicas.get(&i.id);
        let is_current = i.version == record.version && i.slot < desired;
        let is_canary = record
            .canary
            .as_ref()
            .is_some_and(|c| c.version == i.version);
        // An older version's replica serves until a rollout retires it.
        let is_old = i.version != record.version && !record.stopped && !is_canary;
        let crash_looping = st.crash_looping(&i.id, now);
        let state = match i.state {
            ProcessState::Running
                if st.removing.contains(&i.id) || !(is_current || is_old || is_canary) =>
            {
                "stopping"
            }
            ProcessState::Running => "running",
            ProcessState::Created => "starting",
            ProcessState::Exited { .. }
                if rt.and_then(|r| r.next_start).is_some_and(|t| t > now) =>
            {
                "backoff"
            }
            ProcessState::Exited { .. } => "exited",
        };
        let serving = matches!(i.state, ProcessState::Running) && !st.removing.contains(&i.id);
        if is_old && serving {
            old_serving += 1;
        }
        if is_current && serving {
            running += 1;
        }
        if is_current && crash_looping {
            looping = true;
        }
        out.push(InstanceStatus {
            id: i.id.clone(),
            node: i.node.clone(),
            ip: i.ip.map(|ip| ip.to_string()),
            state: state.to_string(),
            healthy: rt.and_then(|r| r.healthy),
            restarts: rt.map(|r| r.restarts).unwrap_or(0),
            last_exit: rt.and_then(|r| r.last_exit.clone()),
            canary: is_canary,
            version: i.version,
            pid: i.pid,
        });
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    let service_rt = st.services.get(name);
    let start_failing = service_rt.is_some_and(|s| s.start_failures >= 2);
    let status = if record.stopped {
        ServiceState::Stopped
    } else if desired == 0 || (running >= desired && !looping) {
        ServiceState::Running
    } else if old_serving > 0 && running + old_serving >= desired && !looping {
        // Mid-rollout: full capacity, some of it still the old version.
        ServiceState::Running
    } else if running == 0 && (looping || start_failing) {
        ServiceState::Failed
    } else if running == 0 {
        ServiceState::Pending
    } else {
        ServiceState::Degraded
    };
    let mut message = service_rt.and_then(|s| s.last_error.clone());
    if let Some(unplaced) = service_rt.and_then(|s| s.unplaced.as_ref()) {
        message = Some(match message {
            Some(m) => format!("{unplaced}; {m}"),
            None => unplaced.clone(),
        });
    }
    if status == ServiceState::Running {
        message = None;
    }
    if old_serving > 0 {
        message = Some(format!(
            "rolling out version {}: {running} of {desired} new replicas running, {old_serving} old still serving",
            record.version
        ));
    }
    if let Some(c) = &record.canary {
        let serving = out
            .iter()
            .filter(|i| i.canary && i.state == "running")
            .count();
        let note = format!(
            "canary version {} at {}%: {serving} replica(s) running",
            c.version, c.weight
        );
        message = Some(match message {
            Some(m) => format!("{m}; {note}"),
            None => note,
        });
    }
    if let Some(problem) = service_rt.and_then(|s| s.tls_problem.as_ref()) {
        message = Some(match message {
            Some(m) => format!("{m}; {problem}"),
            None => problem.clone(),
        });
    }
    if let Some(note) = service_rt.and_then(|s| s.pull_note.as_ref()) {
        message = Some(match message {
            Some(m) => format!("{m}; {note}"),
            None => note.clone(),
        });
    }
    if let Some(reverted) = &record.reverted {
        message = Some(match message {
            Some(m) => format!("{}; {m}", reverted.message),
            None => reverted.message.clone(),
        });
    }
    let replicas = st.rollout_replicas(record, now);
    let rollout = progress::rollout(&progress::Facts {
        record,
        replicas: &replicas,
        problem: rollout_problem(st, record, now),
    });
    ServiceStatus {
        name: name.clone(),
        project: record.spec.project.clone(),
        status,
        replicas: desired,
        running_replicas: running,
        image: record.spec.image.clone(),
        domain: record.spec.domain.clone(),
        version: record.version,
        message,
        instances: out,
        rollout,
    }
}

/// Why the replicas of the version being rolled out do not come up, if
/// they keep failing to: failed starts, a crash loop, or the deadline.
fn rollout_problem(st: &State, record: &ServiceRecord, now: Instant) -> Option<String> {
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
            if version == record.version && now.duration_since(since).as_secs() >= deadline =>
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
        let mut services: Vec<ServiceStatus> = st
            .records
            .values()
            .filter(|r| project.is_none_or(|p| r.spec.project == p))
            .map(|r| service_status(&st, r, now))
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
