//! The scheduler (the `scheduler` crate, pure) fed from service specs:
//! what a replica reserves (`resources.reserve`, the memory limit by
//! default) and its CPU limit, which reserves nothing.

pub use scheduler::{unplaced_message, Candidate, Capacity, Demand, Load, Scheduler};

use std::collections::BTreeMap;

use api::spec::ServiceSpec;

/// What a replica of `spec` reserves on its node: `resources.reserve`,
/// whose memory defaults to the memory limit and whose CPU defaults to 0.
/// Values that do not parse (refused at deploy) reserve nothing.
pub fn reservation_of(spec: &ServiceSpec) -> Capacity {
    let Some(r) = spec.resources.as_ref() else {
        return Capacity::default();
    };
    let reserve = r.reserve.as_ref();
    let memory_limit = || {
        r.memory
            .as_deref()
            .and_then(|m| cri::MemoryLimit::parse(m).ok())
            .map(|m| m.bytes())
    };
    let memory = match reserve.and_then(|x| x.memory.as_deref()) {
        Some(m) => cri::memory_reservation(m).ok(),
        None => memory_limit(),
    };
    Capacity {
        cpu: reserve.and_then(|x| x.cpu).unwrap_or(0.0),
        memory_bytes: memory.unwrap_or(0),
    }
}

/// The CPU limit of a replica of `spec`, in cores (0: none).
pub fn cpu_limit_of(spec: &ServiceSpec) -> f64 {
    spec.resources.as_ref().and_then(|r| r.cpu).unwrap_or(0.0)
}

/// What one replica of `record`'s `version` holds: by that version's own
/// spec (an old version's mid-rollout, a canary's), so that nothing is
/// counted by a spec it does not run.
pub fn load_of(record: &crate::store::ServiceRecord, version: u64) -> Load {
    demand_of(spec_of(record, version)).load()
}

/// The spec replicas of `record`'s `version` run: the canary's, an older
/// version's from history, else the current one.
pub fn spec_of(record: &crate::store::ServiceRecord, version: u64) -> &ServiceSpec {
    record
        .canary
        .as_ref()
        .filter(|c| c.version == version)
        .map(|c| &c.spec)
        .or_else(|| {
            (record.version != version)
                .then(|| record.history.iter().find(|v| v.version == version))
                .flatten()
                .map(|v| &v.spec)
        })
        .unwrap_or(&record.spec)
}

/// The demand of a replica of `spec`.
pub fn demand_of(spec: &ServiceSpec) -> Demand<'_> {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    let placement = spec.placement.as_ref();
    Demand {
        node: placement.and_then(|p| p.node.as_deref()),
        labels: placement.map(|p| &p.labels).unwrap_or(&NONE),
        strategy: match placement.and_then(|p| p.strategy).unwrap_or_default() {
            api::spec::PlacementStrategy::Spread => scheduler::PlacementStrategy::Spread,
            api::spec::PlacementStrategy::Binpack => scheduler::PlacementStrategy::Binpack,
        },
        reserve: reservation_of(spec),
        cpu_limit: cpu_limit_of(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(resources: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web", "image": "web:v1", "resources": resources
        }))
        .unwrap()
    }

    #[test]
    fn limits_reserve_memory_only_and_reserve_says_otherwise() {
        let mi = 1u64 << 20;
        let r = reservation_of(&spec(serde_json::json!({"cpu": 1.0, "memory": "256Mi"})));
        assert_eq!((r.cpu, r.memory_bytes), (0.0, 256 * mi));
        let r = reservation_of(&spec(serde_json::json!({
            "cpu": 1.0, "memory": "256Mi", "reserve": {"cpu": 0.5, "memory": "0"}
        })));
        assert_eq!((r.cpu, r.memory_bytes), (0.5, 0));
        let r = reservation_of(&spec(serde_json::json!({"reserve": {"memory": "64Mi"}})));
        assert_eq!((r.cpu, r.memory_bytes), (0.0, 64 * mi));
        let capped = spec(serde_json::json!({"cpu": 1.5}));
        let d = demand_of(&capped);
        assert_eq!((d.cpu_limit, d.reserve.cpu), (1.5, 0.0));
    }
}
