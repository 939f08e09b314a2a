//! Where a drained node's volumes go: a node every service using the
//! volume may run on (up, not drained, its `placement` node and labels
//! matched), the one holding the fewest volumes first. Pure.

use std::collections::BTreeMap;

use api::spec::ServiceSpec;

/// A node as the choice sees it.
#[derive(Debug, Clone)]
pub struct NodeView {
    pub id: String,
    pub labels: BTreeMap<String, String>,
    /// Up and not drained.
    pub usable: bool,
    /// Volumes it holds now.
    pub volumes: usize,
}

/// The node for a volume leaving `from` and used by `users`, or why none.
pub fn target(from: &str, users: &[&ServiceSpec], nodes: &[NodeView]) -> Result<String, String> {
    let fits = |n: &NodeView| {
        n.usable
            && n.id != from
            && users.iter().all(|s| {
                let Some(p) = &s.placement else { return true };
                p.node.as_deref().is_none_or(|want| want == n.id)
                    && p.labels.iter().all(|(k, v)| n.labels.get(k) == Some(v))
            })
    };
    nodes
        .iter()
        .filter(|n| fits(n))
        .min_by_key(|n| (n.volumes, n.id.clone()))
        .map(|n| n.id.clone())
        .ok_or_else(|| {
            "no other node that is up, not drained, and fits its services' placement".into()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, zone: &str, usable: bool, volumes: usize) -> NodeView {
        NodeView {
            id: id.into(),
            labels: BTreeMap::from([("zone".to_string(), zone.to_string())]),
            usable,
            volumes,
        }
    }

    #[test]
    fn a_volume_goes_where_its_services_may_run() {
        let nodes = [
            node("n1", "a", true, 0),
            node("n2", "b", true, 3),
            node("n3", "b", true, 1),
            node("n4", "b", false, 0),
        ];
        let any: ServiceSpec =
            serde_json::from_value(serde_json::json!({"name": "db", "image": "x"})).unwrap();
        assert_eq!(target("n1", &[&any], &nodes).unwrap(), "n3");
        let zone_b: ServiceSpec = serde_json::from_value(
            serde_json::json!({"name": "db", "image": "x", "placement": {"labels": {"zone": "a"}}}),
        )
        .unwrap();
        // Only n1 is in zone a, and it is the one being left.
        assert!(target("n1", &[&zone_b], &nodes).is_err());
        assert_eq!(target("n2", &[&zone_b], &nodes).unwrap(), "n1");
    }
}
