//! The scheduler (the `scheduler` crate, pure) fed from service specs.

pub use scheduler::{unplaced_message, Candidate, Demand, Scheduler};

use std::collections::BTreeMap;

/// The demand of a replica of `spec`.
pub fn demand_of(spec: &api::spec::ServiceSpec) -> Demand<'_> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    let placement = spec.placement.as_ref();
    let resources = spec.resources.as_ref();
    Demand {
        node: placement.and_then(|p| p.node.as_deref()),
        labels: placement.map(|p| &p.labels).unwrap_or(&NONE),
        strategy: match placement.and_then(|p| p.strategy).unwrap_or_default() {
            api::spec::PlacementStrategy::Spread => scheduler::PlacementStrategy::Spread,
            api::spec::PlacementStrategy::Binpack => scheduler::PlacementStrategy::Binpack,
        },
        cpu: resources.and_then(|r| r.cpu).unwrap_or(0.0),
        memory_bytes: resources
            .and_then(|r| r.memory.as_deref())
            .and_then(|m| cri::MemoryLimit::parse(m).ok())
            .map(|m| m.bytes())
            .unwrap_or(0),
    }
}
