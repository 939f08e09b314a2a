//! Prometheus metrics: counters and histograms updated as things happen,
//! gauges filled from the control plane's state at each scrape.

use api::status::InstanceState;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::control::ControlPlane;

/// What the ingress answered, from its own counters: responses by domain
/// and status class, failed attempts to reach replicas, and requests for
/// hosts no service claims (one series, whatever the Host said).
fn ingress_traffic(routes: &network::proxy::Routes) -> String {
    let traffic = routes.traffic();
    let mut out = String::new();
    out.push_str(
        "# HELP orca_ingress_responses_total Ingress responses by domain and status class.\n",
    );
    out.push_str("# TYPE orca_ingress_responses_total counter\n");
    for (domain, t) in &traffic {
        let domain = label_value(domain);
        for (i, n) in t.responses().iter().enumerate() {
            out.push_str(&format!(
                "orca_ingress_responses_total{{code=\"{}xx\",domain=\"{domain}\"}} {n}\n",
                i + 1
            ));
        }
    }
    out.push_str("# HELP orca_ingress_upstream_errors_total Ingress attempts to reach a replica that failed.\n");
    out.push_str("# TYPE orca_ingress_upstream_errors_total counter\n");
    for (domain, t) in &traffic {
        out.push_str(&format!(
            "orca_ingress_upstream_errors_total{{domain=\"{}\"}} {}\n",
            label_value(domain),
            t.upstream_errors()
        ));
    }
    out.push_str(
        "# HELP orca_ingress_unrouted_total Ingress requests for a host no service claims.\n",
    );
    out.push_str("# TYPE orca_ingress_unrouted_total counter\n");
    out.push_str(&format!(
        "orca_ingress_unrouted_total {}\n",
        routes.unrouted()
    ));
    out
}

/// A label value escaped for the text format.
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The contract's `orca_services_total`, `orca_instances_total` and
/// `orca_nodes_total`. Their values can go down, but Prometheus lints any
/// non-counter whose name ends in `_total`, so they are typed `counter` to
/// keep `promtool check metrics` clean; `orca_services`, `orca_instances`
/// and `orca_nodes` carry the same numbers as gauges for dashboards.
fn contract_totals(status: &api::status::StatusResponse, nodes: usize) -> String {
    let mut out = String::new();
    out.push_str("# HELP orca_services_total Services known to the control plane (see the gauge orca_services).\n");
    out.push_str("# TYPE orca_services_total counter\n");
    out.push_str(&format!("orca_services_total {}\n", status.services.len()));
    out.push_str("# HELP orca_instances_total Replicas by service, project and state (see the gauge orca_instances).\n");
    out.push_str("# TYPE orca_instances_total counter\n");
    let mut counts: std::collections::BTreeMap<(&str, &str, &str), u64> =
        std::collections::BTreeMap::new();
    for s in &status.services {
        for i in &s.instances {
            *counts
                .entry((&s.name, &s.project, i.state.as_str()))
                .or_default() += 1;
        }
    }
    // Names are DNS labels and states fixed words: nothing to escape.
    for ((service, project, state), n) in counts {
        out.push_str(&format!(
            "orca_instances_total{{project=\"{project}\",service=\"{service}\",status=\"{state}\"}} {n}\n"
        ));
    }
    out.push_str("# HELP orca_nodes_total Nodes in the cluster (see the gauge orca_nodes).\n");
    out.push_str("# TYPE orca_nodes_total counter\n");
    out.push_str(&format!("orca_nodes_total {nodes}\n"));
    out
}

/// The per-node gauges: name, help, and the value from a node's status.
type NodeValue = fn(&api::status::NodeStatus) -> f64;
const NODE_GAUGES: [(&str, &str, NodeValue); 6] = [
    (
        "orca_node_ready",
        "1 while the node is connected and heard from",
        |n| f64::from(u8::from(n.state == "ready")),
    ),
    ("orca_node_capacity_cpu", "CPUs the node reports", |n| {
        n.resources.cpu
    }),
    (
        "orca_node_capacity_memory_bytes",
        "Memory the node reports",
        |n| n.resources.memory_bytes as f64,
    ),
    (
        "orca_node_allocated_cpu",
        "CPUs reserved by the replicas placed on the node",
        |n| n.allocated.cpu,
    ),
    (
        "orca_node_allocated_memory_bytes",
        "Memory reserved by the replicas placed on the node",
        |n| n.allocated.memory_bytes as f64,
    ),
    ("orca_node_instances", "Replicas running on the node", |n| {
        f64::from(n.instances)
    }),
];

/// All of orca's metrics, cheap to clone.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    pub restarts: IntCounterVec,
    pub oom_kills: IntCounterVec,
    pub pull_seconds: Histogram,
    pub deploy_seconds: Histogram,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    services_total: IntGauge,
    instances_total: IntGaugeVec,
    nodes_total: IntGauge,
    /// One gauge per [`NODE_GAUGES`] entry, labelled by node.
    node_gauges: Vec<prometheus::GaugeVec>,
    memory_bytes: IntGaugeVec,
    cpu_seconds: prometheus::GaugeVec,
}

impl Metrics {
    pub fn new() -> anyhow::Result<Self> {
        let registry = Registry::new();
        let restarts = IntCounterVec::new(
            Opts::new(
                "orca_container_restarts_total",
                "Replicas restarted after they exited",
            ),
            &["service"],
        )?;
        let oom_kills = IntCounterVec::new(
            Opts::new("orca_oom_kills_total", "Replicas killed by the OOM killer"),
            &["service"],
        )?;
        let pull_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orca_image_pull_duration_seconds",
                "Image pulls, including no-op re-pulls",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
        )?;
        let deploy_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "orca_deploy_duration_seconds",
                "Deploy requests, from receipt to acknowledgement",
            )
            .buckets(vec![
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
            ]),
        )?;
        let requests = IntCounterVec::new(
            Opts::new(
                "orca_api_requests_total",
                "API requests by route, method and status code",
            ),
            &["route", "method", "code"],
        )?;
        let request_seconds = HistogramVec::new(
            HistogramOpts::new(
                "orca_api_request_duration_seconds",
                "API request latency by route",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
            ]),
            &["route"],
        )?;
        let services_total = IntGauge::new("orca_services", "Services known to the control plane")?;
        let instances_total = IntGaugeVec::new(
            Opts::new("orca_instances", "Replicas by service, project and state"),
            &["service", "project", "status"],
        )?;
        let nodes_total = IntGauge::new("orca_nodes", "Nodes in the cluster")?;
        let node_gauges = NODE_GAUGES
            .iter()
            .map(|(name, help, _)| prometheus::GaugeVec::new(Opts::new(*name, *help), &["node"]))
            .collect::<Result<Vec<_>, _>>()?;
        let memory_bytes = IntGaugeVec::new(
            Opts::new(
                "orca_instance_memory_bytes",
                "Memory used by a running replica",
            ),
            &["service", "instance"],
        )?;
        let cpu_seconds = prometheus::GaugeVec::new(
            Opts::new(
                "orca_instance_cpu_seconds",
                "CPU time used by a running replica since it started",
            ),
            &["service", "instance"],
        )?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(oom_kills.clone()))?;
        registry.register(Box::new(pull_seconds.clone()))?;
        registry.register(Box::new(deploy_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        registry.register(Box::new(services_total.clone()))?;
        registry.register(Box::new(instances_total.clone()))?;
        registry.register(Box::new(nodes_total.clone()))?;
        for gauge in &node_gauges {
            registry.register(Box::new(gauge.clone()))?;
        }
        registry.register(Box::new(memory_bytes.clone()))?;
        registry.register(Box::new(cpu_seconds.clone()))?;
        Ok(Self {
            registry,
            restarts,
            oom_kills,
            pull_seconds,
            deploy_seconds,
            requests,
            request_seconds,
            services_total,
            instances_total,
            nodes_total,
            node_gauges,
            memory_bytes,
            cpu_seconds,
        })
    }

    pub fn observe_request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        self.requests
            .with_label_values(&[route, method_label(method), &status.to_string()])
            .inc();
        self.request_seconds
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    /// The text format, with gauges taken from `control` and the node now.
    pub async fn render(&self, control: &ControlPlane) -> String {
        let status = control.status(None);
        let running: Vec<(String, String)> = status
            .services
            .iter()
            .flat_map(|s| {
                s.instances
                    .iter()
                    .filter(|i| i.state == InstanceState::Running)
                    .map(|i| (s.name.clone(), i.id.clone()))
            })
            .collect();
        let usages: Vec<_> = futures::StreamExt::collect(futures::StreamExt::buffer_unordered(
            futures::stream::iter(running.into_iter().map(|(service, id)| {
                let agent = control.inner().agent_of(&id);
                async move {
                    let usage = match agent {
                        Ok(agent) => agent.usage(&id).await,
                        Err(e) => Err(e),
                    };
                    (service, id, usage)
                }
            })),
            16,
        ))
        .await;
        self.memory_bytes.reset();
        self.cpu_seconds.reset();
        for (service, id, usage) in usages {
            if let Ok(u) = usage {
                self.memory_bytes
                    .with_label_values(&[&service, &id])
                    .set(u.memory_bytes as i64);
                self.cpu_seconds
                    .with_label_values(&[&service, &id])
                    .set(u.cpu_nanos as f64 / 1e9);
            }
        }
        self.services_total.set(status.services.len() as i64);
        let info = control.cluster_info();
        self.nodes_total.set(info.nodes.len() as i64);
        for (gauge, (_, _, value)) in self.node_gauges.iter().zip(NODE_GAUGES) {
            gauge.reset();
            for n in &info.nodes {
                gauge.with_label_values(&[n.id.as_str()]).set(value(n));
            }
        }
        self.instances_total.reset();
        for s in &status.services {
            for i in &s.instances {
                self.instances_total
                    .with_label_values(&[&s.name, &s.project, i.state.as_str()])
                    .inc();
            }
        }
        let families = self.registry.gather();
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            tracing::error!(error = %e, "metrics encoding failed");
        }
        let mut text = String::from_utf8_lossy(&out).into_owned();
        // Labelled families with no series yet are left out by the encoder;
        // declare them anyway so that every name is always there.
        for desc in self.registry_descs() {
            if !families.iter().any(|f| f.name() == desc.0) {
                text.push_str(&format!(
                    "# HELP {} {}\n# TYPE {} {}\n",
                    desc.0, desc.1, desc.0, desc.2
                ));
            }
        }
        text.push_str(&contract_totals(&status, info.nodes.len()));
        if let Some(routes) = control.routes() {
            text.push_str(&ingress_traffic(routes));
        }
        text
    }

    /// Name, help and type of every labelled family.
    fn registry_descs(&self) -> Vec<(String, String, &'static str)> {
        use prometheus::core::Collector;
        let mut out = Vec::new();
        let mut add = |c: &dyn Collector, kind: &'static str| {
            for d in c.desc() {
                out.push((d.fq_name.clone(), d.help.clone(), kind));
            }
        };
        add(&self.restarts, "counter");
        add(&self.oom_kills, "counter");
        add(&self.requests, "counter");
        add(&self.request_seconds, "histogram");
        add(&self.instances_total, "gauge");
        add(&self.memory_bytes, "gauge");
        add(&self.cpu_seconds, "gauge");
        for gauge in &self.node_gauges {
            add(gauge, "gauge");
        }
        out
    }
}

/// The method label of a request: the methods HTTP defines, anything
/// else `other`, so that clients cannot mint series without end.
pub fn method_label(method: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
    ];
    KNOWN
        .iter()
        .find(|m| **m == method)
        .copied()
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_map_to_a_fixed_set() {
        assert_eq!(super::method_label("GET"), "GET");
        assert_eq!(super::method_label("DELETE"), "DELETE");
        assert_eq!(super::method_label("FOO"), "other");
        assert_eq!(super::method_label("get"), "other");
    }
}
