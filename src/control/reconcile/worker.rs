//! The reconciler's loop: one worker per service converging it (woken by
//! API writes, node events and changes, backoff timers and a slow resync):
//! gather what every node runs, decide (plan and schedule), execute.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::control::decide::Decided;
use crate::control::execute::execute;
use crate::control::gather::{gather, LocalDown};
use crate::control::{Inner, RESYNC};
use crate::store::ServiceRecord;

/// Rounds of one convergence before waiting for the next wake-up.
const MAX_ROUNDS: usize = 5;

/// Starts following the nodes' events, then a worker for every service
/// and orphan.
pub(crate) async fn start(inner: Arc<Inner>) -> anyhow::Result<()> {
    let known = crate::control::events::start(inner.clone()).await?;
    let mut names: std::collections::BTreeSet<String> =
        inner.state().records.keys().cloned().collect();
    names.extend(known);
    for name in names {
        wake(&inner, &name);
    }
    inner.spawn(crate::control::push::push_to_nodes(inner.clone()));
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
    inner.spawn(run_worker(inner.clone(), service.to_string(), notify));
}

/// Wakes every worker (after a resync event or a drain).
pub(crate) fn wake_all(inner: &Arc<Inner>) {
    for n in watched(inner) {
        wake(inner, &n);
    }
}

/// Wakes the workers of services with replicas that found no room (or a
/// rollout replacing in place), after room was freed.
pub(crate) fn wake_waiting_for_room(inner: &Arc<Inner>) {
    let st = inner.state();
    let waiting: Vec<String> = st
        .services
        .iter()
        .filter(|(_, s)| s.unplaced.is_some() || s.in_place.is_some())
        .map(|(name, _)| name.clone())
        .collect();
    drop(st);
    for name in waiting {
        wake(inner, &name);
    }
}

/// The services that have a worker.
pub(crate) fn watched(inner: &Inner) -> Vec<String> {
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

async fn converge(inner: &Arc<Inner>, service: &str) -> Converged {
    for _ in 0..MAX_ROUNDS {
        let instances = match gather(inner, service).await {
            Ok(g) => {
                inner.set_containerd_up(true);
                g.instances
            }
            Err(LocalDown(e)) => {
                inner.set_containerd_up(false);
                tracing::warn!(service, error = %e, "cannot list replicas; retrying");
                return Converged::WakeAt(Some(Instant::now() + Duration::from_secs(2)));
            }
        };
        let now = Instant::now();
        // Only a real change counts as one (status answers are cached by epoch).
        if inner.state().instances.get(service) != Some(&instances) {
            inner.state.listed(service, instances.clone(), now).await;
        }
        crate::control::jobs::runs::check_end(inner, service, &instances).await;
        let settles_at = track_settling(inner, service, now).await;
        let Decided {
            record,
            stable,
            canary,
            rolling,
            wake_at,
            no_room,
            canary_no_room,
        } = inner
            .state
            .decide(
                inner.nodes.snapshot(),
                inner.settings.reschedule_after,
                service,
                instances.clone(),
                now,
            )
            .await;
        if let Some(r) = &record {
            if let Some(reason) = crate::control::rollout::failure(
                inner,
                r,
                &instances,
                rolling,
                no_room.as_deref(),
                now,
            ) {
                crate::control::rollout::revert(inner, r, &reason).await;
                continue;
            }
            if let Some(reason) = &canary_no_room {
                crate::control::rollout::fail_canary(inner, r, reason).await;
                continue;
            }
        }
        crate::control::health::ensure_checkers(inner, service).await;
        crate::control::publish::publish_routes(inner);
        if let (Some(actions), Some(r)) = (canary, &record) {
            if let Some(c) = r.canary.as_ref().filter(|_| !actions.is_empty()) {
                let canary_record = ServiceRecord {
                    spec: c.spec.clone(),
                    version: c.version,
                    image_digest: c.image_digest.clone(),
                    canary: None,
                    ..r.clone()
                };
                execute(inner, service, Some(&canary_record), actions).await;
                continue;
            }
        }
        if stable.is_empty() {
            if rolling {
                // Waiting on readiness: look again soon.
                return Converged::WakeAt(Some(now + Duration::from_millis(250)));
            }
            if record.is_none() && instances.is_empty() && inner.state.forget_service(service).await
            {
                return Converged::Gone;
            }
            return Converged::WakeAt([wake_at, settles_at].into_iter().flatten().min());
        }
        execute(inner, service, record.as_ref(), stable).await;
    }
    Converged::WakeAt(Some(Instant::now() + Duration::from_secs(1)))
}

/// Keeps since when the service's version has been unsettled (the
/// rollout deadline, for reverts and status); returns when a replica without a readiness
/// check will have run long enough to count as ready, since only time
/// changes that (events, readiness and removals wake the worker).
async fn track_settling(inner: &Inner, service: &str, now: Instant) -> Option<Instant> {
    let st = inner.state();
    let record = st.records.get(service)?;
    let table = inner.nodes.snapshot();
    let reachable = |node: &str| table.reachable(node);
    let replicas = st.rollout_replicas(record, &reachable, now);
    let settled = st.settled(record, &reachable, now);
    let facts = crate::control::progress::Facts {
        record,
        replicas: &replicas,
        problem: None,
        note: st.services.get(service).and_then(|s| s.in_place.clone()),
    };
    let announced = st.services.get(service).and_then(|s| s.announced);
    let (note, announce) = match crate::control::progress::rollout(&facts) {
        Some(r) => crate::feed::rollout_note(service, &record.spec.project, announced, &r),
        None => (None, announced),
    };
    let version = record.version;
    let current = st.services.get(service).and_then(|s| s.unsettled_since);
    // Waiting on dependencies is not a rollout running late: its clock
    // starts once they hold.
    let waiting = crate::control::jobs::deps::waiting(&record.spec, &|n| {
        crate::control::jobs::deps::facts(&st, n, now)
    })
    .is_some();
    let wanted = match current {
        _ if settled => None,
        _ if waiting => Some((version, now)),
        Some((v, since)) if v == version => Some((v, since)),
        _ => Some((version, now)),
    };
    let settles_at = if settled || crate::control::health::readiness(&record.spec).is_some() {
        None
    } else {
        st.instances
            .get(service)
            .into_iter()
            .flatten()
            .filter_map(|i| st.replicas.get(&i.id).and_then(|r| r.started_at))
            .map(|t| t + crate::control::state::SETTLE)
            .filter(|t| *t > now)
            .min()
    };
    drop(st);
    if wanted != current || announce != announced {
        inner.state.settling(service, wanted, announce).await;
    }
    inner.tell(note);
    settles_at
}
