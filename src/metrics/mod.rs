//! Prometheus metrics: counters and histograms updated as things happen
//! (here), gauges rendered from one snapshot of the control plane's state
//! per scrape ([`snapshot`]), and the parts written as text ([`text`]).

mod snapshot;
mod text;

use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

use crate::control::ControlPlane;

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
    /// 1 while this server leads the control plane.
    pub leader: prometheus::IntGauge,
    /// Leaderships this server took or lost.
    pub leader_changes: prometheus::IntCounter,
    /// Replica usage per node, read at most every few seconds.
    usage: std::sync::Arc<snapshot::UsageCache>,
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
        let leader = prometheus::IntGauge::new(
            "orca_leader",
            "1 while this server leads the control plane, else 0",
        )?;
        let leader_changes = prometheus::IntCounter::new(
            "orca_leader_changes_total",
            "Times this server took or lost the leadership",
        )?;
        registry.register(Box::new(leader.clone()))?;
        registry.register(Box::new(leader_changes.clone()))?;
        registry.register(Box::new(restarts.clone()))?;
        registry.register(Box::new(oom_kills.clone()))?;
        registry.register(Box::new(pull_seconds.clone()))?;
        registry.register(Box::new(deploy_seconds.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_seconds.clone()))?;
        Ok(Self {
            registry,
            restarts,
            oom_kills,
            pull_seconds,
            deploy_seconds,
            requests,
            request_seconds,
            leader,
            leader_changes,
            usage: Default::default(),
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

    /// The text format: the counters as they stand, and the gauges of
    /// one snapshot of `control` taken now (replica usage at most
    /// [`snapshot::USAGE_TTL`] old).
    pub async fn render(&self, control: &ControlPlane) -> String {
        let status = control.status(None);
        let running = snapshot::running_by_node(&status);
        let nodes = control.nodes().snapshot();
        let usages = self
            .usage
            .usages(
                &running,
                |node| nodes.agent(node),
                std::time::Instant::now(),
            )
            .await;
        let snap = snapshot::Snapshot {
            status,
            info: control.cluster_info(),
            usages,
        };
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
        match snapshot::render(&snap) {
            Ok(gauges) => text.push_str(&gauges),
            Err(e) => tracing::error!(error = %e, "metrics encoding failed"),
        }
        if let Some(routes) = control.routes() {
            text.push_str(&text::ingress_traffic(routes));
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
