//! Published ports: what every node forwards where (the ready replicas of
//! each published port, [`rules`]), and which ports a deploy may take
//! ([`claims`]: 409 for a port another service or orca itself holds).
//! The kernel side is `network::ports`.

pub(crate) mod claims;

use network::ports::{PortRule, Protocol};

use crate::control::health::serves;
use crate::control::State;

/// The wire's protocol of the spec's.
pub(crate) fn protocol(p: api::spec::Protocol) -> Protocol {
    match p {
        api::spec::Protocol::Tcp => Protocol::Tcp,
        api::spec::Protocol::Udp => Protocol::Udp,
    }
}

/// Every published port of the cluster with its ready replicas on nodes
/// that are reachable, sorted. A stopped service's ports are published to
/// nothing (they refuse).
pub(crate) fn rules(
    st: &State,
    reachable: &dyn Fn(&&crate::agent::Instance) -> bool,
) -> Vec<PortRule> {
    let mut out = Vec::new();
    for record in st.records.values() {
        let spec = &record.spec;
        let ports = spec.published_ports();
        if ports.is_empty() {
            continue;
        }
        let mut backends = Vec::new();
        for i in st
            .instances
            .get(&spec.name)
            .into_iter()
            .flatten()
            .filter(reachable)
        {
            if let (Some(ip), false) = (i.ip, record.stopped) {
                if serves(st, record, i) {
                    backends.push((ip, i.node.clone()));
                }
            }
        }
        backends.sort();
        for p in ports {
            out.push(PortRule {
                published: p.published,
                protocol: protocol(p.protocol),
                mesh: p.mode == api::spec::PortMode::Mesh,
                host_ip: p.host_ip,
                target: p.target,
                service: spec.name.clone(),
                backends: backends.clone(),
            });
        }
    }
    out.sort_by_key(|r| (r.published, r.protocol, r.service.clone()));
    out
}
