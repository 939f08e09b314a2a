//! What the nodes serve from the server's view of the cluster: the
//! isolation groups of every project, the DNS names and the ingress routes,
//! rebuilt from the state whenever readiness or placement can have changed,
//! applied in place on the server's own node and pushed to every other.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use super::health::routable;
use super::Inner;
use crate::agent::ProcessState;

impl Inner {
    /// True if the ingress routes to replica `id` now.
    pub(crate) fn routed(&self, id: &str) -> bool {
        let Some(routes) = &self.routes else {
            return false;
        };
        let service = crate::agent::service_of(id);
        let st = self.state();
        let Some(domain) = st.records.get(service).and_then(|r| r.spec.domain.clone()) else {
            return false;
        };
        drop(st);
        routes
            .backends(&domain)
            .is_some_and(|b| b.iter().any(|b| b.id == id))
    }
}

/// Who may talk to whom: replica addresses per project, and those of
/// internal services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Isolation {
    pub projects: std::collections::BTreeMap<String, Vec<Ipv4Addr>>,
    pub internal: Vec<Ipv4Addr>,
}

/// What every node serves from the server's view: isolation groups, DNS
/// names and ingress routes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Published {
    pub isolation: Isolation,
    pub names: network::dns::Names,
    pub routes: HashMap<String, Vec<network::proxy::Backend>>,
}

/// Gives every ready node the latest of what it serves, in order, as it
/// changes and as nodes connect: the server's own node its isolation (its
/// DNS and ingress are updated in place), every other node all three. Each
/// node's replicas have addresses of its own /24, so one view serves every
/// node.
pub(crate) async fn push_to_nodes(inner: Arc<Inner>) {
    let mut published = inner.published.subscribe();
    let mut nodes = inner.nodes.changes();
    // What each node was given last: its session and the view.
    let mut applied: HashMap<String, (u64, Published)> = HashMap::new();
    loop {
        let wanted = published.borrow_and_update().clone();
        let table = nodes.borrow_and_update().clone();
        applied.retain(|id, _| table.nodes.contains_key(id));
        for node in table.nodes.values() {
            let Some(agent) = node.ready_agent() else {
                continue;
            };
            let now = (node.session, wanted.clone());
            if applied.get(node.id()) == Some(&now) {
                continue;
            }
            let iso = &wanted.isolation;
            let mut done = agent.set_isolation(&iso.projects, &iso.internal).await;
            if done.is_ok() && !node.local {
                done = agent.serve(&wanted.names, &wanted.routes).await;
            }
            match done {
                Ok(()) => {
                    applied.insert(node.id().to_string(), now);
                }
                Err(e) => {
                    tracing::warn!(node = node.id(), error = %e, "cannot give the node its isolation, names and routes");
                    applied.remove(node.id());
                }
            }
        }
        tokio::select! {
            changed = published.changed() => if changed.is_err() { return },
            changed = nodes.changed() => if changed.is_err() { return },
        }
    }
}

/// Rebuilds the server's ingress table and DNS names, and the isolation
/// groups of the cluster, from the state. The ingress and DNS take ready
/// replicas on every node that is connected (nodes route to each other's
/// replicas).
pub(crate) fn publish_routes(inner: &Arc<Inner>) {
    let mut isolation = Isolation::default();
    let table = inner.nodes.snapshot();
    let reachable = |i: &&crate::agent::Instance| table.get(&i.node).is_some_and(|n| n.ready());
    {
        let st = inner.state();
        for record in st.records.values() {
            let ips = st
                .instances
                .get(&record.spec.name)
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip);
            let group = isolation
                .projects
                .entry(record.spec.project.clone())
                .or_default();
            for ip in ips {
                group.push(ip);
                if record.spec.internal {
                    isolation.internal.push(ip);
                }
            }
        }
    }
    for ips in isolation.projects.values_mut() {
        ips.sort();
    }
    isolation.internal.sort();
    let names = dns_names(&inner.state(), &reachable);
    let routes = ingress_routes(&inner.state(), &reachable);
    if let Some(dns) = &inner.dns {
        dns.replace(names.clone());
    }
    if let Some(table) = &inner.routes {
        table.replace(routes.clone());
    }
    let view = Published {
        isolation,
        names,
        routes,
    };
    inner.published.send_if_modified(|current| {
        if *current == view {
            false
        } else {
            *current = view;
            true
        }
    });
}

/// The ingress table: each domain's ready replicas, weighted for a canary.
fn ingress_routes(
    st: &super::State,
    reachable: &dyn Fn(&&crate::agent::Instance) -> bool,
) -> HashMap<String, Vec<network::proxy::Backend>> {
    let mut table: HashMap<String, Vec<network::proxy::Backend>> = HashMap::new();
    {
        for record in st.records.values() {
            let (Some(domain), Some(port)) = (&record.spec.domain, record.spec.port) else {
                continue;
            };
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            let backends = table.entry(domain.clone()).or_default();
            if record.stopped {
                continue;
            }
            let canary = record.canary.as_ref();
            let mut found: Vec<(String, SocketAddr, bool)> = Vec::new();
            for i in st
                .instances
                .get(&record.spec.name)
                .into_iter()
                .flatten()
                .filter(reachable)
            {
                // Old versions serve while a rollout keeps them.
                let current = i.version != record.version || i.slot < record.desired_replicas();
                if !current
                    || !matches!(i.state, ProcessState::Running)
                    || st.removing.contains(&i.id)
                {
                    continue;
                }
                let Some(ip) = i.ip else { continue };
                if routable(st, &record.spec, &i.id) {
                    let is_canary = canary.is_some_and(|c| c.version == i.version);
                    found.push((i.id.clone(), SocketAddr::from((ip, port)), is_canary));
                }
            }
            // A canary's share of requests is its weight, however many
            // replicas each side has.
            let canaries = found.iter().filter(|f| f.2).count() as u32;
            let stables = found.len() as u32 - canaries;
            for (id, addr, is_canary) in found {
                let weight = match canary {
                    Some(c) if canaries > 0 && stables > 0 => {
                        if is_canary {
                            c.weight * stables
                        } else {
                            (100 - c.weight.min(100)) * canaries
                        }
                    }
                    _ => 1,
                };
                if weight > 0 {
                    backends.push(network::proxy::Backend { id, addr, weight });
                }
            }
        }
    }
    table
}

/// The names the DNS server answers: ready replicas by service and alias
/// in each project, internal services cluster-wide.
fn dns_names(
    st: &super::State,
    reachable: &dyn Fn(&&crate::agent::Instance) -> bool,
) -> network::dns::Names {
    let mut names = network::dns::Names::default();
    for record in st.records.values() {
        let spec = &record.spec;
        let mut ready = Vec::new();
        for i in st
            .instances
            .get(&spec.name)
            .into_iter()
            .flatten()
            .filter(reachable)
        {
            let Some(ip) = i.ip else { continue };
            names.project_of.insert(ip, spec.project.clone());
            let current = i.version != record.version || i.slot < record.desired_replicas();
            if current
                && matches!(i.state, ProcessState::Running)
                && !st.removing.contains(&i.id)
                && routable(st, spec, &i.id)
            {
                ready.push(ip);
                if let Some(c) = record.canary.as_ref().filter(|c| c.version == i.version) {
                    names.canary_weight.insert(ip, c.weight);
                }
            }
        }
        ready.sort();
        if record.stopped {
            ready.clear();
        }
        let project = names.by_project.entry(spec.project.clone()).or_default();
        for name in std::iter::once(&spec.name).chain(spec.aliases.iter()) {
            project.insert(name.clone(), ready.clone());
        }
        if spec.internal {
            names
                .cluster
                .insert(format!("{}.{}", spec.name, spec.project), ready);
        }
    }
    names
}
