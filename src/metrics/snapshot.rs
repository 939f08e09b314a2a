//! What a scrape shows of the state: one [`Snapshot`] taken when the scrape
//! comes (status, nodes, and each running replica's usage as the per-node
//! [`UsageCache`] holds it), and its gauges rendered from it alone into a
//! registry of the scrape's own ([`render`]). Scrapes at once each render
//! their own snapshot: nothing shared is reset under another.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use api::status::{ClusterInfo, InstanceState, StatusResponse};
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use super::text::{contract_totals, NODE_GAUGES};
use crate::agent::NodeAgent;

/// How long a node's usage figures serve scrapes before they are read
/// again.
pub const USAGE_TTL: Duration = Duration::from_secs(5);

/// One replica's usage: (service, instance, usage).
pub type ReplicaUsage = (String, String, cri::metrics::Usage);

/// Everything one scrape's gauges come from.
pub struct Snapshot {
    pub status: StatusResponse,
    pub info: ClusterInfo,
    pub usages: Vec<ReplicaUsage>,
}

/// The gauges of `snapshot` in the text format, with the contract's
/// `_total` families: a pure function of the snapshot.
pub fn render(snapshot: &Snapshot) -> Result<String, prometheus::Error> {
    let registry = Registry::new();
    let services = IntGauge::new("orca_services", "Services known to the control plane")?;
    let instances = IntGaugeVec::new(
        Opts::new("orca_instances", "Replicas by service, project and state"),
        &["service", "project", "status"],
    )?;
    let nodes = IntGauge::new("orca_nodes", "Nodes in the cluster")?;
    let memory = IntGaugeVec::new(
        Opts::new(
            "orca_instance_memory_bytes",
            "Memory used by a running replica",
        ),
        &["service", "instance"],
    )?;
    let cpu = prometheus::GaugeVec::new(
        Opts::new(
            "orca_instance_cpu_seconds",
            "CPU time used by a running replica since it started",
        ),
        &["service", "instance"],
    )?;
    registry.register(Box::new(services.clone()))?;
    registry.register(Box::new(instances.clone()))?;
    registry.register(Box::new(nodes.clone()))?;
    registry.register(Box::new(memory.clone()))?;
    registry.register(Box::new(cpu.clone()))?;
    let mut labelled: Vec<(String, String)> = Vec::new();
    for (name, help, value) in NODE_GAUGES {
        let gauge = prometheus::GaugeVec::new(Opts::new(name, help), &["node"])?;
        registry.register(Box::new(gauge.clone()))?;
        for n in &snapshot.info.nodes {
            gauge.with_label_values(&[n.id.as_str()]).set(value(n));
        }
        labelled.push((name.to_string(), help.to_string()));
    }
    services.set(snapshot.status.services.len() as i64);
    nodes.set(snapshot.info.nodes.len() as i64);
    for s in &snapshot.status.services {
        for i in &s.instances {
            instances
                .with_label_values(&[&s.name, &s.project, i.state.as_str()])
                .inc();
        }
    }
    for (service, id, u) in &snapshot.usages {
        memory
            .with_label_values(&[service, id])
            .set(u.memory_bytes as i64);
        cpu.with_label_values(&[service, id])
            .set(u.cpu_nanos as f64 / 1e9);
    }
    for (name, help) in [
        ("orca_instances", "Replicas by service, project and state"),
        (
            "orca_instance_memory_bytes",
            "Memory used by a running replica",
        ),
        (
            "orca_instance_cpu_seconds",
            "CPU time used by a running replica since it started",
        ),
    ] {
        labelled.push((name.to_string(), help.to_string()));
    }
    let families = registry.gather();
    let mut out = Vec::new();
    TextEncoder::new().encode(&families, &mut out)?;
    let mut text = String::from_utf8_lossy(&out).into_owned();
    // Labelled families with no series are left out by the encoder;
    // declare them anyway so that every name is always there.
    for (name, help) in labelled {
        if !families.iter().any(|f| f.name() == name) {
            text.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        }
    }
    text.push_str(&contract_totals(
        &snapshot.status,
        snapshot.info.nodes.len(),
    ));
    Ok(text)
}

/// The running replicas of a status, by node: (service, instance).
pub fn running_by_node(status: &StatusResponse) -> HashMap<String, Vec<(String, String)>> {
    let mut out: HashMap<String, Vec<(String, String)>> = HashMap::new();
    for s in &status.services {
        for i in s
            .instances
            .iter()
            .filter(|i| i.state == InstanceState::Running)
        {
            out.entry(i.node.clone())
                .or_default()
                .push((s.name.clone(), i.id.clone()));
        }
    }
    out
}

/// A node's replica usage and when it was read.
type NodeUsage = (Instant, Arc<Vec<ReplicaUsage>>);

/// Each node's replica usage, read at most once per [`USAGE_TTL`]
/// whatever the scrape rate; scrapes at once wait for one reading.
#[derive(Default)]
pub struct UsageCache {
    nodes: tokio::sync::Mutex<HashMap<String, NodeUsage>>,
}

impl UsageCache {
    /// The usage of the replicas in `running` (by node), from figures at
    /// most [`USAGE_TTL`] old; `agent` finds a node's agent.
    pub async fn usages(
        &self,
        running: &HashMap<String, Vec<(String, String)>>,
        agent: impl Fn(&str) -> Option<Arc<dyn NodeAgent>>,
        now: Instant,
    ) -> Vec<ReplicaUsage> {
        let mut nodes = self.nodes.lock().await;
        nodes.retain(|node, _| running.contains_key(node));
        for (node, replicas) in running {
            let fresh = nodes
                .get(node)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) < USAGE_TTL);
            if fresh {
                continue;
            }
            let read = match agent(node) {
                Some(agent) => read_node(agent, replicas).await,
                None => Vec::new(),
            };
            nodes.insert(node.clone(), (now, Arc::new(read)));
        }
        let wanted: std::collections::HashSet<&str> = running
            .values()
            .flatten()
            .map(|(_, id)| id.as_str())
            .collect();
        nodes
            .values()
            .flat_map(|(_, read)| read.iter())
            .filter(|(_, id, _)| wanted.contains(id.as_str()))
            .cloned()
            .collect()
    }
}

/// Reads the usage of `replicas` on one node, 16 at once.
async fn read_node(agent: Arc<dyn NodeAgent>, replicas: &[(String, String)]) -> Vec<ReplicaUsage> {
    use futures::StreamExt;
    futures::stream::iter(replicas.iter().cloned().map(|(service, id)| {
        let agent = agent.clone();
        async move { agent.usage(&id).await.ok().map(|u| (service, id, u)) }
    }))
    .buffer_unordered(16)
    .filter_map(|x| async move { x })
    .collect()
    .await
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::agent::fake::FakeAgent;

    /// A status with `service`'s replicas `ids`, all running on `node`.
    fn status(service: &str, node: &str, ids: &[&str]) -> StatusResponse {
        let instances: Vec<serde_json::Value> = ids
            .iter()
            .map(|id| {
                serde_json::json!({ "id": id, "node": node, "ip": null, "state": "running",
                    "healthy": null, "restarts": 0, "last_exit": null, "canary": false,
                    "version": 1, "pid": 7 })
            })
            .collect();
        serde_json::from_value(serde_json::json!({ "services": [{
            "name": service, "project": "default", "status": "running",
            "replicas": ids.len(), "running_replicas": ids.len(), "image": "x",
            "domain": null, "version": 1, "instances": instances }] }))
        .unwrap()
    }

    fn snapshot(service: &str, ids: &[&str]) -> Snapshot {
        Snapshot {
            status: status(service, "n1", ids),
            info: ClusterInfo {
                cluster: "c".into(),
                version: "v".into(),
                nodes: Vec::new(),
                servers: Vec::new(),
            },
            usages: ids
                .iter()
                .map(|id| {
                    let usage = cri::metrics::Usage {
                        memory_bytes: 1024,
                        ..Default::default()
                    };
                    (service.to_string(), id.to_string(), usage)
                })
                .collect(),
        }
    }

    #[test]
    fn a_render_is_a_function_of_its_snapshot_alone() {
        let (a, b) = (
            snapshot("web", &["web.0.a", "web.1.b"]),
            snapshot("db", &["db.0.c"]),
        );
        let first = render(&a).unwrap();
        // Another scrape's snapshot in between changes nothing of it.
        let other = render(&b).unwrap();
        assert_eq!(render(&a).unwrap(), first);
        assert!(
            first.contains("orca_instance_memory_bytes{instance=\"web.0.a\",service=\"web\"} 1024"),
            "{first}"
        );
        assert!(!first.contains("db.0.c"), "{first}");
        assert!(
            other.contains("db.0.c") && !other.contains("web.0.a"),
            "{other}"
        );
        assert!(first.contains("orca_services 1\n") && first.contains("orca_services_total 1\n"));
        // Empty labelled families are still declared.
        let empty = render(&snapshot("none", &[])).unwrap();
        assert!(
            empty.contains("# TYPE orca_instance_cpu_seconds gauge"),
            "{empty}"
        );
        assert!(empty.contains("# TYPE orca_node_ready gauge"), "{empty}");
    }

    #[tokio::test]
    async fn usage_is_read_once_per_node_per_interval() {
        let cache = UsageCache::default();
        let agent = Arc::new(FakeAgent::named("n1"));
        let dyn_agent: Arc<dyn NodeAgent> = agent.clone();
        let running = running_by_node(&status("web", "n1", &["web.0.a", "web.1.b"]));
        let find = |node: &str| (node == "n1").then(|| dyn_agent.clone());
        let t0 = Instant::now();
        let first = cache.usages(&running, find, t0).await;
        assert_eq!(first.len(), 2);
        assert_eq!(agent.usage_calls.load(Ordering::SeqCst), 2);
        // Ten scrapes within the interval: no more calls.
        for i in 0..10 {
            let again = cache
                .usages(&running, find, t0 + Duration::from_millis(100 * i))
                .await;
            assert_eq!(again.len(), 2);
        }
        assert_eq!(agent.usage_calls.load(Ordering::SeqCst), 2);
        // After it: read again, and a replica gone is not shown.
        let fewer = running_by_node(&status("web", "n1", &["web.0.a"]));
        let later = cache.usages(&fewer, find, t0 + USAGE_TTL).await;
        assert_eq!(agent.usage_calls.load(Ordering::SeqCst), 3);
        assert_eq!(later.len(), 1);
        assert_eq!(later[0].1, "web.0.a");
    }
}
