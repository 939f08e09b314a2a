//! Health checks of replicas, on their own addresses: readiness (the
//! `readiness` probe, else `health`, else a TCP connect to `port`) gates
//! routing; liveness failures past the threshold kill the replica, which
//! the reconciler then restarts with its backoff. The server checks its
//! own node's replicas; other nodes check theirs (`cluster::checks`).

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use api::spec::{Probe, ServiceSpec};

use crate::agent::ProcessState;
use crate::control::Inner;

pub use crate::agent::probe::{probe_replica, Check};

fn check_from(probe: Option<&Probe>, path: Option<String>, port: u16) -> Check {
    Check {
        path,
        port,
        exec: probe.and_then(|p| p.exec.clone()),
        interval: Duration::from_secs(probe.and_then(|p| p.interval_secs).unwrap_or(2)),
        timeout: Duration::from_secs(probe.and_then(|p| p.timeout_secs).unwrap_or(1)),
        failure_threshold: probe.and_then(|p| p.failure_threshold).unwrap_or(3),
        initial_delay: Duration::from_secs(probe.and_then(|p| p.initial_delay_secs).unwrap_or(0)),
    }
}

/// The readiness check of a service, if it has a port to check or a
/// command to run.
pub fn readiness(spec: &ServiceSpec) -> Option<Check> {
    let exec = spec.readiness.as_ref().is_some_and(|p| p.exec.is_some());
    let port = match spec.port {
        Some(p) => u16::try_from(p).ok()?,
        None if exec => 0,
        None => return None,
    };
    let path = spec
        .readiness
        .as_ref()
        .and_then(|p| p.path.clone())
        .or_else(|| spec.health.clone());
    Some(check_from(spec.readiness.as_ref(), path, port))
}

/// The liveness check of a service, if it has one.
pub fn liveness(spec: &ServiceSpec) -> Option<Check> {
    let probe = spec.liveness.as_ref()?;
    let port = match spec.port {
        Some(p) => u16::try_from(p).ok()?,
        None if probe.exec.is_some() => 0,
        None => return None,
    };
    Some(check_from(
        Some(probe),
        probe.path.clone().or_else(|| spec.health.clone()),
        port,
    ))
}

/// When a replica's checks start (the shortest initial delay) and how
/// often they run (the shortest interval, 2 s without checks).
pub fn pacing(ready: Option<&Check>, live: Option<&Check>) -> (Duration, Duration) {
    let both = || ready.into_iter().chain(live);
    let first = both().map(|c| c.initial_delay).min().unwrap_or_default();
    let interval = both()
        .map(|c| c.interval)
        .min()
        .unwrap_or(Duration::from_secs(2));
    (first, interval)
}

/// Starts a checker for every running replica that needs one and has none.
pub(crate) async fn ensure_checkers(inner: &Arc<Inner>, service: &str) {
    let (spec, ids) = {
        let st = inner.state();
        let Some(record) = st.records.get(service) else {
            return;
        };
        if readiness(&record.spec).is_none() && liveness(&record.spec).is_none() {
            return;
        }
        let ids: Vec<(String, String, Ipv4Addr)> = st
            .instances
            .get(service)
            .into_iter()
            .flatten()
            .filter(|i| matches!(i.state, ProcessState::Running))
            .filter(|i| !st.checkers.contains(&i.id))
            .filter_map(|i| i.ip.map(|ip| (i.id.clone(), i.node.clone(), ip)))
            .collect();
        (record.spec.clone(), ids)
    };
    let local = inner.local_node();
    for (id, node, ip) in ids {
        if !inner.state.checker_started(&id).await {
            continue;
        }
        if Some(&node) == local.as_ref() {
            inner.spawn(run_checker(
                inner.clone(),
                service.to_string(),
                spec.clone(),
                id,
                ip,
            ));
        } else {
            inner.spawn(check_on_node(inner.clone(), spec.clone(), id, node));
        }
    }
}

/// Has the node that runs replica `id` check it; its readiness comes back
/// as events. If the node cannot be asked now, the next round asks again.
async fn check_on_node(inner: Arc<Inner>, spec: ServiceSpec, id: String, node: String) {
    let asked = match inner.node_agent(&node) {
        Ok(agent) => agent.check(&id, readiness(&spec), liveness(&spec)).await,
        Err(e) => Err(e),
    };
    if let Err(e) = asked {
        tracing::debug!(instance = %id, node, error = %e, "cannot have the node check the replica");
        inner.state.checker_ended(&id, false).await;
    }
}

/// Readiness after one probe (`ok`), with `failures` failed probes in a
/// row before it: unknown counts as not ready; a ready replica needs
/// `threshold` failures in a row to lose its traffic. The new readiness
/// and failure count.
pub fn next_readiness(
    before: Option<bool>,
    failures: u32,
    ok: bool,
    threshold: u32,
) -> (Option<bool>, u32) {
    let failures = if ok { 0 } else { failures + 1 };
    let after = if ok {
        Some(true)
    } else if before.is_none() || failures >= threshold {
        Some(false)
    } else {
        before
    };
    (after, failures)
}

/// Checks one replica until it stops running (or its service moves on).
async fn run_checker(
    inner: Arc<Inner>,
    service: String,
    spec: ServiceSpec,
    id: String,
    ip: Ipv4Addr,
) {
    let ready = readiness(&spec);
    let live = liveness(&spec);
    let (first, interval) = pacing(ready.as_ref(), live.as_ref());
    tokio::time::sleep(first).await;
    let mut live_failures = 0;
    // Until the first success, probe often: a new replica should take
    // traffic as soon as it answers, not an interval later.
    let mut eager = ready.is_some();
    let mut probes = 0u32;
    let mut last_live: Option<std::time::Instant> = None;
    loop {
        let still_here = {
            let st = inner.state();
            st.records.get(&service).is_some_and(|r| !r.stopped)
                && st
                    .instances
                    .get(&service)
                    .into_iter()
                    .flatten()
                    .any(|i| i.id == id && matches!(i.state, ProcessState::Running))
        };
        if !still_here {
            break;
        }
        let agent = inner.agent_of(&id).ok();
        let probed = async |check: &Check| match &agent {
            Some(a) => probe_replica(a.as_ref(), &id, ip, check).await,
            None => false,
        };
        if let Some(check) = &ready {
            let ok = probed(check).await;
            let (before, failures) = {
                let st = inner.state();
                st.replicas
                    .get(&id)
                    .map(|r| (r.healthy, r.ready_failures))
                    .unwrap_or((None, 0))
            };
            let (after, new_failures) =
                next_readiness(before, failures, ok, check.failure_threshold);
            if after != before || new_failures != failures {
                inner.state.readiness(&id, after, Some(new_failures)).await;
            }
            if before != after {
                tracing::info!(instance = %id, healthy = ?after, "readiness changed");
                if let Some(ready) = after {
                    inner.tell_replica(
                        crate::control::events::readiness_kind(ready),
                        &id,
                        None,
                        crate::control::events::readiness_message(&id, ready),
                    );
                }
                crate::control::publish::publish_routes(&inner);
                // A rollout may be waiting on this.
                crate::control::worker::wake(&inner, &service);
            }
        }
        // Liveness keeps its own pace, also while readiness probes eagerly.
        let live_due = live
            .as_ref()
            .is_some_and(|c| last_live.is_none_or(|t| t.elapsed() >= c.interval));
        if let (Some(check), true) = (&live, live_due) {
            last_live = Some(std::time::Instant::now());
            if probed(check).await {
                live_failures = 0;
            } else {
                live_failures += 1;
                if live_failures >= check.failure_threshold {
                    tracing::warn!(instance = %id, failures = live_failures, "liveness failed; killing the replica");
                    let killed = match inner.agent_of(&id) {
                        Ok(agent) => agent.kill(&id).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = killed {
                        tracing::warn!(instance = %id, error = %e, "kill failed");
                    }
                    live_failures = 0;
                }
            }
        }
        probes += 1;
        if eager
            && (probes >= 50
                || inner.state().replicas.get(&id).and_then(|r| r.healthy) == Some(true))
        {
            eager = false;
        }
        tokio::time::sleep(if eager {
            Duration::from_millis(100)
        } else {
            interval
        })
        .await;
    }
    inner.state.checker_ended(&id, true).await;
}

/// True if a replica may take traffic: running, and ready when the service
/// has a readiness check.
pub(crate) fn routable(st: &crate::control::State, spec: &ServiceSpec, id: &str) -> bool {
    readiness(spec).is_none() || st.replicas.get(id).and_then(|r| r.healthy) == Some(true)
}

/// True if replica `i` of `record` takes traffic now, through the ingress,
/// a published port or a service name: a slot the service keeps (old
/// versions serve while a rollout keeps them), running, not being removed,
/// and [`routable`].
pub(crate) fn serves(
    st: &crate::control::State,
    record: &crate::store::ServiceRecord,
    i: &crate::agent::Instance,
) -> bool {
    let current = i.version != record.version || i.slot < record.desired_replicas();
    current
        && matches!(i.state, ProcessState::Running)
        && !st.removing.contains(&i.id)
        && routable(st, &record.spec, &i.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::probe::probe;

    fn spec(json: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn checks_from_the_spec() {
        let s = spec(
            serde_json::json!({ "name": "a", "image": "x", "port": 8080, "health": "/healthz" }),
        );
        let r = readiness(&s).unwrap();
        assert_eq!(
            (r.path.as_deref(), r.port, r.failure_threshold),
            (Some("/healthz"), 8080, 3)
        );
        assert!(liveness(&s).is_none());
        let tcp = spec(serde_json::json!({ "name": "a", "image": "x", "port": 5432 }));
        assert_eq!(readiness(&tcp).unwrap().path, None);
        assert!(readiness(&spec(serde_json::json!({ "name": "a", "image": "x" }))).is_none());
        let live = spec(serde_json::json!({ "name": "a", "image": "x", "port": 80,
            "liveness": { "path": "/live", "interval_secs": 5, "failure_threshold": 2 } }));
        let l = liveness(&live).unwrap();
        assert_eq!(
            (l.path.as_deref(), l.interval, l.failure_threshold),
            (Some("/live"), Duration::from_secs(5), 2)
        );
    }

    #[tokio::test]
    async fn probes_http_and_tcp() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 256];
                let n = s.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let status = if req.starts_with("GET /ok ") {
                    "200 OK"
                } else {
                    "503 Unavailable"
                };
                let _ = s
                    .write_all(format!("HTTP/1.0 {status}\r\n\r\n").as_bytes())
                    .await;
            }
        });
        let ip = Ipv4Addr::LOCALHOST;
        let mk = |path: Option<&str>, port| Check {
            path: path.map(str::to_string),
            port,
            exec: None,
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            failure_threshold: 1,
            initial_delay: Duration::ZERO,
        };
        assert!(probe(ip, &mk(Some("/ok"), port)).await);
        assert!(!probe(ip, &mk(Some("/bad"), port)).await);
        assert!(probe(ip, &mk(None, port)).await);
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        assert!(!probe(ip, &mk(None, closed)).await);
    }
}
