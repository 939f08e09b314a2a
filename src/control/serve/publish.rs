//! What the nodes serve from the server's view of the cluster: the
//! isolation groups of every project, the DNS names and the ingress routes,
//! rebuilt from the state whenever readiness or placement can have changed,
//! applied in place on the server's own node and pushed to every other
//! (see [`crate::control::push`]).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use crate::control::health::serves;
use crate::control::Inner;

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
    /// The certificates of the TLS domains.
    pub certs: crate::control::certs::Certs,
    /// ACME HTTP-01 answers in flight.
    pub challenges: HashMap<String, String>,
    /// Published ports and their ready replicas.
    pub ports: Vec<network::ports::PortRule>,
}

/// A view with its generation, counted up at each change, so that one
/// can wait until every node has been given a view (see [`crate::control::push`]).
#[derive(Debug, Clone, Default)]
pub struct View {
    pub generation: u64,
    pub published: Published,
}

/// Rebuilds the server's ingress table and DNS names, and the isolation
/// groups of the cluster, from the state. The ingress and DNS take ready
/// replicas on every node that is connected (nodes route to each other's
/// replicas). Returns the generation of the view the nodes are given now.
pub(crate) fn publish_routes(inner: &Arc<Inner>) -> u64 {
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
    let ports = crate::control::ports::rules(&inner.state(), &reachable);
    if let Some(dns) = &inner.dns {
        dns.replace(names.clone());
    }
    let certs = inner.certs.borrow().clone();
    let challenges = inner.challenges.borrow().clone();
    if let Some(table) = &inner.routes {
        table.replace(routes.clone());
        table.replace_challenges(challenges.clone());
        for (domain, e) in table.certs().replace(&certs) {
            tracing::warn!(domain, error = %e, "certificate not served");
        }
    }
    let view = Published {
        isolation,
        names,
        routes,
        certs,
        challenges,
        ports,
    };
    let mut generation = 0;
    inner.published.send_if_modified(|current| {
        let changed = current.published != view;
        if changed {
            current.generation += 1;
            current.published = view;
        }
        generation = current.generation;
        changed
    });
    generation
}

/// The ingress table: the ready replicas of each domain's path prefixes,
/// weighted for a canary.
fn ingress_routes(
    st: &crate::control::State,
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
            let keys: Vec<String> = api::spec::route_prefixes(&record.spec.routes)
                .into_iter()
                .map(|prefix| network::proxy::route_key(domain, prefix))
                .collect();
            for key in &keys {
                table.entry(key.clone()).or_default();
            }
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
                let Some(ip) = i.ip else { continue };
                if serves(st, record, i) {
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
                    let backend = network::proxy::Backend {
                        id,
                        addr,
                        weight,
                        strip_prefix: record.spec.strip_prefix,
                    };
                    for key in &keys {
                        table.entry(key.clone()).or_default().push(backend.clone());
                    }
                }
            }
        }
    }
    table
}

/// The names the DNS server answers: ready replicas by service and alias
/// in each project, internal services cluster-wide.
fn dns_names(
    st: &crate::control::State,
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
            if serves(st, record, i) {
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
