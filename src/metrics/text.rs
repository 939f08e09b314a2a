//! Parts of the scrape written as text: the ingress's own counters, and
//! the contract's `_total` families, which the gauges' registry cannot
//! type as the contract wants.

/// What the ingress answered, from its own counters: responses by domain
/// and status class, failed attempts to reach replicas, and requests for
/// hosts no service claims (one series, whatever the Host said).
pub(super) fn ingress_traffic(routes: &network::proxy::Routes) -> String {
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
pub(super) fn contract_totals(status: &api::status::StatusResponse, nodes: usize) -> String {
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
pub(super) type NodeValue = fn(&api::status::NodeStatus) -> f64;
pub(super) const NODE_GAUGES: [(&str, &str, NodeValue); 7] = [
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
        "orca_node_reserved_cpu",
        "CPUs reserved (resources.reserve) by the replicas placed on the node; not usage",
        |n| n.reserved.cpu,
    ),
    (
        "orca_node_reserved_memory_bytes",
        "Memory reserved (resources.reserve, else the memory limit) by the replicas placed on the node; not usage",
        |n| n.reserved.memory_bytes as f64,
    ),
    (
        "orca_node_cpu_limits",
        "CPU limits of the replicas placed on the node, summed (may exceed its CPUs)",
        |n| n.cpu_limits,
    ),
    ("orca_node_instances", "Replicas running on the node", |n| {
        f64::from(n.instances)
    }),
];
