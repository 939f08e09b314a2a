//! The reconciler's moving parts: one worker per service converging it
//! (woken by API writes, node events, backoff timers and a slow resync), the
//! event loop feeding crashes and starts into the state, and the start-up
//! adoption of what already runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::Notify;

use super::plan::{self, plan, Action, Desired};
use super::{Inner, DEFAULT_STOP_GRACE, RESYNC};
use crate::agent::{service_of, AgentEvent, InstanceSpec};
use crate::store::ServiceRecord;

/// Replicas started or removed at once.
const PARALLEL: usize = 16;
/// How long a replica leaving rotation keeps running for requests in flight.
const DRAIN: Duration = Duration::from_millis(1000);
/// Rounds of one convergence before waiting for the next wake-up.
const MAX_ROUNDS: usize = 5;

/// Starts the event loop, then a worker for every service and orphan.
pub(super) async fn start(inner: Arc<Inner>) -> anyhow::Result<()> {
    let events = inner.agent.events().await?;
    tokio::spawn(event_loop(inner.clone(), events));
    let mut names: std::collections::BTreeSet<String> =
        inner.state().records.keys().cloned().collect();
    for instance in inner.agent.list().await? {
        names.insert(instance.service.clone());
    }
    for name in names {
        wake(&inner, &name);
    }
    tokio::spawn(janitor(inner.clone()));
    tokio::spawn(super::health::apply_isolation(inner.clone()));
    Ok(())
}

/// Wakes the worker of `service`, starting one if needed.
pub(crate) fn wake(inner: &Arc<Inner>, service: &str) {
    let mut workers = inner.workers.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = workers.get(service) {
        n.notify_one();
        return;
    }
    let notify = Arc::new(Notify::new());
    workers.insert(service.to_string(), notify.clone());
    tokio::spawn(run_worker(inner.clone(), service.to_string(), notify));
}

/// Wakes every worker (after a resync event or a drain).
pub(crate) fn wake_all(inner: &Arc<Inner>) {
    for n in watched(inner) {
        wake(inner, &n);
    }
}

/// The services that have a worker.
fn watched(inner: &Inner) -> Vec<String> {
    inner
        .workers
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .keys()
        .cloned()
        .collect()
}

async fn run_worker(inner: Arc<Inner>, service: String, notify: Arc<Notify>) {
    loop {
        let outcome = converge(&inner, &service).await;
        let wake_at = match outcome {
            Converged::Gone => {
                // Unregister, unless an API write raced in meanwhile.
                let mut workers = inner.workers.lock().unwrap_or_else(|p| p.into_inner());
                if inner.state().records.contains_key(&service) {
                    drop(workers);
                    continue;
                }
                workers.remove(&service);
                return;
            }
            Converged::WakeAt(at) => at,
        };
        let deadline = wake_at.unwrap_or_else(|| Instant::now() + RESYNC);
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => {}
        }
    }
}

enum Converged {
    /// Nothing of the service is left, nor wanted.
    Gone,
    /// Look again at this time (or at the next resync).
    WakeAt(Option<Instant>),
}

fn desired_of(record: Option<&ServiceRecord>, drained: bool, node: &str) -> Option<Desired> {
    let r = record?;
    let pinned_elsewhere = r
        .spec
        .placement
        .as_ref()
        .and_then(|p| p.node.as_deref())
        .is_some_and(|n| n != node);
    Some(Desired {
        version: r.version,
        replicas: r.desired_replicas(),
        schedulable: !drained && !pinned_elsewhere,
        max_unavailable: r
            .spec
            .deploy
            .as_ref()
            .and_then(|d| d.max_unavailable)
            .unwrap_or(0)
            .clamp(0, i64::from(u32::MAX)) as u32,
    })
}

async fn converge(inner: &Arc<Inner>, service: &str) -> Converged {
    for _ in 0..MAX_ROUNDS {
        let instances = match inner.agent.list_service(service).await {
            Ok(list) => {
                inner.set_containerd_up(true);
                list
            }
            Err(e) => {
                inner.set_containerd_up(false);
                tracing::warn!(service, error = %e, "cannot list replicas; retrying");
                return Converged::WakeAt(Some(Instant::now() + Duration::from_secs(2)));
            }
        };
        let now = Instant::now();
        // Only a real change counts as one (status answers are cached by epoch).
        if inner.state().instances.get(service) != Some(&instances) {
            let mut st = inner.state_mut();
            st.record_listed_exits(&instances, now);
            st.instances.insert(service.to_string(), instances.clone());
        }
        let settles_at = track_settling(inner, service, now);
        let p = {
            let st = inner.state();
            let record = st.records.get(service).cloned();
            let desired = desired_of(record.as_ref(), st.drained, inner.agent.node_id());
            let start_at = st.services.get(service).and_then(|s| s.next_start);
            let replicas = &st.replicas;
            let restart_at = |id: &str| replicas.get(id).and_then(|r| r.next_start);
            let has_check = record
                .as_ref()
                .is_some_and(|r| super::health::readiness(&r.spec).is_some());
            let ready = |i: &crate::agent::Instance| st.ready(has_check, &i.id, now);
            // A canary's replicas are planned on their own, beside the stable ones.
            let canary = record.as_ref().and_then(|r| r.canary.as_ref());
            let (canary_list, stable_list): (Vec<_>, Vec<_>) = instances
                .iter()
                .filter(|i| !st.removing.contains(&i.id))
                .cloned()
                .partition(|i| canary.is_some_and(|c| c.version == i.version));
            let stable_plan = plan(desired, &stable_list, &restart_at, start_at, &ready, now);
            let canary_plan = canary.zip(desired).map(|(c, d)| {
                let want = Desired {
                    version: c.version,
                    replicas: if d.replicas == 0 {
                        0
                    } else {
                        c.replicas(d.replicas)
                    },
                    schedulable: d.schedulable,
                    max_unavailable: 0,
                };
                plan(Some(want), &canary_list, &restart_at, start_at, &ready, now)
            });
            (record, stable_plan, canary_plan, stable_list)
        };
        let (record, p, canary_plan, stable_list) = p;
        let rolling = record
            .as_ref()
            .is_some_and(|r| stable_list.iter().any(|i| i.version != r.version));
        if let Some(r) = &record {
            if let Some(reason) = super::rollout::failure(inner, r, &instances, rolling, now) {
                super::rollout::revert(inner, r, &reason).await;
                continue;
            }
        }
        super::health::ensure_checkers(inner, service);
        super::health::publish_routes(inner);
        let canary_wake = canary_plan.as_ref().and_then(|c| c.wake_at);
        if let (Some(cp), Some(r)) = (canary_plan, &record) {
            if let Some(c) = &r.canary {
                if !cp.actions.is_empty() {
                    let canary_record = ServiceRecord {
                        spec: c.spec.clone(),
                        version: c.version,
                        image_digest: c.image_digest.clone(),
                        canary: None,
                        ..r.clone()
                    };
                    execute(inner, service, Some(&canary_record), cp.actions).await;
                    continue;
                }
            }
        }
        if p.actions.is_empty() {
            if rolling {
                // Waiting on readiness: look again soon.
                return Converged::WakeAt(Some(now + Duration::from_millis(250)));
            }
            if record.is_none() && instances.is_empty() {
                let mut st = inner.state_mut();
                st.instances.remove(service);
                st.services.remove(service);
                return Converged::Gone;
            }
            return Converged::WakeAt(
                [p.wake_at, canary_wake, settles_at]
                    .into_iter()
                    .flatten()
                    .min(),
            );
        }
        execute(inner, service, record.as_ref(), p.actions).await;
    }
    Converged::WakeAt(Some(Instant::now() + Duration::from_secs(1)))
}

/// Keeps since when the service's version has been unsettled (the
/// rollout deadline, for reverts and status); returns when a replica without a readiness
/// check will have run long enough to count as ready, since only time
/// changes that (events, readiness and removals wake the worker).
fn track_settling(inner: &Inner, service: &str, now: Instant) -> Option<Instant> {
    let st = inner.state();
    let record = st.records.get(service)?;
    let replicas = st.rollout_replicas(record, now);
    let settled = super::progress::settled(record, &replicas);
    let version = record.version;
    let current = st.services.get(service).and_then(|s| s.unsettled_since);
    let wanted = match current {
        _ if settled => None,
        Some((v, since)) if v == version => Some((v, since)),
        _ => Some((version, now)),
    };
    let settles_at = if settled || super::health::readiness(&record.spec).is_some() {
        None
    } else {
        st.instances
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|i| st.replicas.get(&i.id).and_then(|r| r.started_at))
            .map(|t| t + super::state::SETTLE)
            .filter(|t| *t > now)
            .min()
    };
    drop(st);
    if wanted != current {
        inner
            .state_mut()
            .services
            .entry(service.to_string())
            .or_default()
            .unsettled_since = wanted;
    }
    settles_at
}

fn grace_of(record: Option<&ServiceRecord>) -> Duration {
    record
        .and_then(|r| r.spec.stop_grace_secs)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STOP_GRACE)
}

async fn execute(
    inner: &Arc<Inner>,
    service: &str,
    record: Option<&ServiceRecord>,
    actions: Vec<Action>,
) {
    let grace = grace_of(record);
    futures::stream::iter(actions)
        .for_each_concurrent(PARALLEL, |action| async move {
            match action {
                Action::Remove { id } => {
                    // In the background: draining and the stop grace period
                    // must not hold up the rest of a rollout. Planning skips
                    // replicas being removed; the worker is woken when done.
                    if !inner.state_mut().removing.insert(id.clone()) {
                        return;
                    }
                    let inner = inner.clone();
                    let service = service.to_string();
                    tokio::spawn(async move {
                        if inner.routed(&id) {
                            // Out of rotation first; let requests in flight finish.
                            super::health::publish_routes(&inner);
                            tokio::time::sleep(DRAIN).await;
                        }
                        if let Err(e) = inner.agent.remove(&id, grace).await {
                            tracing::warn!(instance = %id, error = %e, "remove failed");
                        }
                        {
                            let mut st = inner.state_mut();
                            st.removing.remove(&id);
                            st.replicas.remove(&id);
                        }
                        wake(&inner, &service);
                    });
                }
                Action::Restart { id } => match inner.agent.restart(&id).await {
                    Ok(pid) => {
                        inner.metrics.restarts.with_label_values(&[service]).inc();
                        let mut st = inner.state_mut();
                        st.record_start(&id, pid, Instant::now());
                        if let Some(r) = st.replicas.get_mut(&id) {
                            r.restarts += 1;
                            r.next_start = None;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(instance = %id, error = %e, "restart failed");
                        let mut st = inner.state_mut();
                        let r = st.replicas.entry(id.clone()).or_default();
                        r.consecutive += 1;
                        r.next_start = Some(Instant::now() + plan::backoff(r.consecutive));
                        st.services
                            .entry(service.to_string())
                            .or_default()
                            .last_error = Some(format!("restart of {id} failed: {e}"));
                    }
                },
                Action::Start { slot } => {
                    let Some(record) = record else { return };
                    let started = match instance_spec(inner, record, slot) {
                        Ok(spec) => {
                            let id = spec.id.clone();
                            inner
                                .agent
                                .start(&spec)
                                .await
                                .map(|pid| (id, pid))
                                .map_err(|e| e.to_string())
                        }
                        Err(e) => Err(e),
                    };
                    match started {
                        Ok((id, pid)) => {
                            let mut st = inner.state_mut();
                            st.record_start(&id, pid, Instant::now());
                            let s = st.services.entry(service.to_string()).or_default();
                            s.start_failures = 0;
                            s.next_start = None;
                            s.last_error = None;
                        }
                        Err(e) => {
                            tracing::warn!(service, slot, error = %e, "start failed");
                            let mut st = inner.state_mut();
                            let s = st.services.entry(service.to_string()).or_default();
                            s.start_failures += 1;
                            s.next_start = Some(Instant::now() + plan::backoff(s.start_failures));
                            s.last_error = Some(format!("start failed: {e}"));
                        }
                    }
                }
            }
        })
        .await;
}

/// What to run for `slot` of the record's current version.
/// What to run for `slot` of the record's current version, with
/// `${secrets.KEY}` in env replaced by the decrypted values. Errors name the
/// secret, never a value.
pub(crate) fn instance_spec(
    inner: &Inner,
    record: &ServiceRecord,
    slot: u32,
) -> Result<InstanceSpec, String> {
    let spec = &record.spec;
    let resources = spec.resources.clone().unwrap_or_default();
    let security = spec.security.clone().unwrap_or_default();
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let resolved = crate::secrets::substitute(v, &mut |name| {
            let (key, sealed) =
                super::cluster::sealed_secret(&inner.repo, &spec.project, name).ok()??;
            inner
                .settings
                .secrets
                .as_ref()?
                .open_value(&key, &sealed)
                .ok()
        })
        .map_err(|e| format!("env {k}: {e}"))?;
        env.push((k.clone(), resolved));
    }
    Ok(InstanceSpec {
        id: InstanceSpec::new_id(&spec.name, slot),
        service: spec.name.clone(),
        project: spec.project.clone(),
        version: record.version,
        slot,
        image: spec.image.clone(),
        command: spec.command.clone(),
        env,
        // Validated at deploy time.
        memory_bytes: resources
            .memory
            .as_deref()
            .and_then(|m| cri::MemoryLimit::parse(m).ok())
            .map(|m| m.bytes()),
        cpu: resources.cpu,
        pids: resources.pids.unwrap_or(api::spec::DEFAULT_PIDS),
        cap_add: security.cap_add,
        cap_drop: security.cap_drop,
    })
}

async fn event_loop(inner: Arc<Inner>, mut events: tokio::sync::mpsc::Receiver<AgentEvent>) {
    loop {
        while let Some(event) = events.recv().await {
            handle_event(&inner, event);
        }
        // The stream ended: containerd is gone for good or restarting.
        inner.set_containerd_up(false);
        tracing::warn!("node event stream ended; resubscribing");
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            match inner.agent.events().await {
                Ok(rx) => {
                    events = rx;
                    inner.set_containerd_up(true);
                    wake_all(&inner);
                    break;
                }
                Err(e) => tracing::debug!(error = %e, "resubscribe failed"),
            }
        }
    }
}

fn handle_event(inner: &Arc<Inner>, event: AgentEvent) {
    match event {
        AgentEvent::Started { id, pid } => {
            inner.state_mut().record_start(&id, pid, Instant::now());
        }
        AgentEvent::Exited {
            id,
            code,
            oom_killed,
            at,
        } => {
            let service = service_of(&id).to_string();
            {
                let mut st = inner.state_mut();
                if st.removing.contains(&id) {
                    return;
                }
                st.record_exit(&id, code, oom_killed, at, Instant::now());
            }
            if oom_killed {
                inner.metrics.oom_kills.with_label_values(&[&service]).inc();
            }
            tracing::info!(instance = %id, code, oom_killed, "replica exited");
            super::health::publish_routes(inner);
            wake(inner, &service);
        }
        AgentEvent::Resync => {
            inner.set_containerd_up(true);
            wake_all(inner);
        }
    }
}

/// Every resync period: wake workers for replicas of services nobody
/// watches (orphans left by a crash or an older orca), so they are removed.
async fn janitor(inner: Arc<Inner>) {
    loop {
        tokio::time::sleep(RESYNC).await;
        match inner.agent.list().await {
            Ok(list) => {
                inner.set_containerd_up(true);
                let watched: std::collections::HashSet<String> =
                    watched(&inner).into_iter().collect();
                for i in list {
                    if !watched.contains(&i.service) {
                        wake(&inner, &i.service);
                    }
                }
            }
            Err(e) => {
                inner.set_containerd_up(false);
                tracing::warn!(error = %e, "resync listing failed");
            }
        }
    }
}
