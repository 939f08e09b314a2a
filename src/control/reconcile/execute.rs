//! Carrying out a plan: each action on the node it names (a start) or on
//! the node that runs the replica (a restart or a removal), with the
//! outcome recorded in the state. Removals run in the background so that
//! draining a replica out of rotation never holds up a rollout.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use crate::agent::{Instance, InstanceSpec, ProcessState};
use crate::control::plan::Action;
use crate::control::worker::wake;
use crate::control::{Inner, DEFAULT_STOP_GRACE};
use crate::store::ServiceRecord;

/// Replicas started or removed at once.
const PARALLEL: usize = 16;
/// How long a replica leaving rotation keeps running for requests in flight.
const DRAIN: Duration = Duration::from_millis(1000);
/// How long a removal waits for every node to stop routing to the replica.
const PUSH_WAIT: Duration = Duration::from_secs(5);
/// How long a failed removal waits before it may be tried again.
const REMOVE_RETRY: Duration = Duration::from_secs(2);

/// An action, with the key of the resources reserved for it (a start).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Placed {
    pub action: Action,
    pub reservation: Option<u64>,
}

impl From<Action> for Placed {
    fn from(action: Action) -> Self {
        Placed {
            action,
            reservation: None,
        }
    }
}

fn grace_of(record: Option<&ServiceRecord>) -> Duration {
    record
        .and_then(|r| r.spec.stop_grace_secs)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_STOP_GRACE)
}

/// Carries out `actions` for `service` (at most [`PARALLEL`] at once),
/// each on the node it names or runs on, and records what happened.
pub(crate) async fn execute(
    inner: &Arc<Inner>,
    service: &str,
    record: Option<&ServiceRecord>,
    actions: Vec<Placed>,
) {
    let grace = grace_of(record);
    // A recreate's old replicas have no successor to take their requests:
    // they serve until they stop, with no drain before it.
    let recreate_old: std::collections::HashSet<String> = match record {
        Some(r) if r.spec.strategy() == api::spec::Strategy::Recreate => inner
            .state()
            .instances
            .get(service)
            .into_iter()
            .flatten()
            .filter(|i| i.version != r.version)
            .map(|i| i.id.clone())
            .collect(),
        _ => Default::default(),
    };
    let recreate_old = &recreate_old;
    futures::stream::iter(actions)
        .for_each_concurrent(PARALLEL, |placed| async move {
            match placed.action {
                Action::Remove { id } => {
                    let drain = !recreate_old.contains(&id);
                    remove(inner, service, id, grace, drain).await
                }
                Action::Restart { id } => restart(inner, service, &id).await,
                Action::Start { slot, node } => {
                    if let Some(record) = record {
                        start(inner, service, record, slot, &node, placed.reservation).await;
                    }
                }
            }
        })
        .await;
}

/// Removes a replica in the background: draining and the stop grace
/// period must not hold up the rest of a rollout. Planning skips replicas
/// being removed; the worker is woken when done. With `drain`, it leaves
/// rotation and serves its requests in flight first.
async fn remove(inner: &Arc<Inner>, service: &str, id: String, grace: Duration, drain: bool) {
    if !inner.state.removing(&id).await {
        return;
    }
    tracing::info!(service, instance = %id, "removing a replica");
    let inner = inner.clone();
    let service = service.to_string();
    inner.clone().spawn(async move {
        if drain && inner.routed(&id) {
            // Out of rotation first, on every node; let requests in flight
            // finish.
            let generation = crate::control::publish::publish_routes(&inner);
            if !crate::control::push::delivered(&inner, generation, PUSH_WAIT).await {
                tracing::warn!(instance = %id, "not every node took the replica out of its routes in time");
            }
            tokio::time::sleep(DRAIN).await;
        }
        let removed = match inner.agent_of(&id) {
            Ok(agent) => agent.remove(&id, grace).await,
            Err(e) => Err(e),
        };
        if let Err(e) = removed {
            tracing::warn!(instance = %id, error = %e, "remove failed");
            // Not again at once: the next round may retry.
            tokio::time::sleep(REMOVE_RETRY).await;
        }
        inner.state.removed(&id).await;
        wake(&inner, &service);
        // Its reservation is free: whoever waits for room may go on.
        crate::control::worker::wake_waiting_for_room(&inner);
    });
}

/// Starts an exited replica again in place, on its node.
async fn restart(inner: &Arc<Inner>, service: &str, id: &str) {
    let restarted = match inner.agent_of(id) {
        Ok(agent) => agent.restart(id).await,
        Err(e) => Err(e),
    };
    match restarted {
        Ok(pid) => {
            inner.metrics.restarts.with_label_values(&[service]).inc();
            let count = inner.state.restarted(id, pid).await;
            inner.tell_replica(
                api::events::EventKind::ReplicaRestarted,
                id,
                None,
                format!("{id} restarted (restart {count}, pid {pid})"),
            );
        }
        Err(e) => {
            tracing::warn!(instance = %id, error = %e, "restart failed");
            let failed = inner
                .state
                .restart_failed(service, id, format!("restart of {id} failed: {e}"))
                .await;
            // A replica the runtime refuses to start again (its parts half
            // gone after a crash) is replaced by a new one in its slot; one
            // whose container or secret files are gone, at once.
            let gone = matches!(e, crate::agent::AgentError::NotFound(_));
            if (gone || failed >= REPLACE_AFTER_FAILED_RESTARTS) && !e.is_unavailable() {
                tracing::warn!(instance = %id, failed, "replacing a replica that does not restart");
                remove(inner, service, id.to_string(), Duration::ZERO, true).await;
            }
        }
    }
}

/// Failed restarts in a row after which a replica is replaced.
const REPLACE_AFTER_FAILED_RESTARTS: u32 = 2;

/// Starts a new replica for `slot` on `node`, then frees the resources
/// held for it (it counts where it runs from now on).
async fn start(
    inner: &Inner,
    service: &str,
    record: &ServiceRecord,
    slot: u32,
    node: &str,
    reservation: Option<u64>,
) {
    tracing::info!(service, slot, node, "starting a replica");
    let spec = match instance_spec(inner, record, slot) {
        Ok(spec) => claim_volumes(inner, &spec, node).await.map(|()| spec),
        Err(e) => Err(e),
    };
    let started = match &spec {
        Ok(spec) => match inner.node_agent(node) {
            Ok(agent) => agent.start(spec).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.clone()),
    };
    match (started, spec) {
        (Ok(started), Ok(spec)) => {
            let pid = started.pid;
            let instance = Instance {
                id: spec.id.clone(),
                node: node.to_string(),
                service: spec.service.clone(),
                project: spec.project.clone(),
                version: spec.version,
                slot,
                pid: Some(pid),
                state: ProcessState::Running,
                ip: started.ip,
                run: spec.run,
                restart: spec.restart,
            };
            inner.nodes.started(instance.clone()).await;
            // Counted where it runs until the next listing; what its start
            // held is freed at the same time.
            inner.state.started_new(instance, pid, reservation).await;
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(service, slot, node, error = %e, "start failed");
            let error = format!("start failed: {e}");
            inner.state.start_failed(service, error, reservation).await;
        }
    }
}

/// Claims the named volumes of a start for `node`, durably, before the
/// start: from then on they live there.
async fn claim_volumes(inner: &Inner, spec: &InstanceSpec, node: &str) -> Result<(), String> {
    let keys: Vec<String> = spec
        .mounts
        .iter()
        .filter_map(|m| match m {
            crate::agent::volumes::MountSpec::Volume { name, .. } => {
                Some(format!("{}/{name}", spec.project))
            }
            _ => None,
        })
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    let new = inner.state.claim_volumes(keys, node).await?;
    for v in &new {
        if let Err(e) = inner.repo.put_volume(v) {
            for v in &new {
                inner.state.set_volume(&v.key(), None).await;
            }
            return Err(format!("storing volume {}: {e}", v.key()));
        }
        tracing::info!(volume = %v.key(), node, "volume claimed");
    }
    Ok(())
}

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
    let open = |name: &str| {
        let (key, sealed) =
            crate::control::cluster::sealed_secret(&inner.repo, &spec.project, name).ok()??;
        inner
            .settings
            .secrets
            .as_ref()?
            .open_value(&key, &sealed)
            .ok()
    };
    let mut env = Vec::with_capacity(spec.env.len());
    for (k, v) in &spec.env {
        let resolved = crate::secrets::substitute(v, &mut |name| open(name))
            .map_err(|e| format!("env {k}: {e}"))?;
        env.push((k.clone(), resolved));
    }
    let mut files = Vec::with_capacity(spec.files.len());
    for f in &spec.files {
        let content = match (&f.content, &f.secret) {
            (_, Some(name)) => open(name)
                .map(|v| v.to_string())
                .ok_or_else(|| format!("files {}: secret {name} cannot be opened", f.target))?,
            (Some(c), None) => c.clone(),
            (None, None) => String::new(),
        };
        files.push(crate::agent::files::FileMount {
            target: f.target.clone(),
            content,
            mode: f.mode_bits(),
            secret: f.secret.is_some(),
        });
    }
    Ok(InstanceSpec {
        id: InstanceSpec::new_id(&spec.name, slot),
        service: spec.name.clone(),
        project: spec.project.clone(),
        version: record.version,
        slot,
        image: spec.image.clone(),
        image_digest: record.image_digest.clone(),
        pull_never: spec.pull_policy() == api::spec::PullPolicy::Never,
        command: spec.command.clone(),
        entrypoint: spec.entrypoint.clone(),
        args: spec.args.clone(),
        working_dir: spec.working_dir.clone(),
        labels: spec.labels.clone(),
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
        seccomp_unconfined: security.seccomp == Some(api::spec::SeccompMode::Unconfined),
        read_only_rootfs: security.read_only_rootfs,
        user: spec.user.clone(),
        mounts: crate::volumes::mounts_of(spec, slot),
        files,
        devices: spec
            .devices
            .iter()
            .map(|d| {
                let (host, container) = d.split_once(':').unwrap_or((d, d));
                crate::agent::files::DeviceSpec {
                    host: host.to_string(),
                    container: container.to_string(),
                }
            })
            .collect(),
        run: record.job.run,
        restart: spec.restart_policy(),
    })
}
