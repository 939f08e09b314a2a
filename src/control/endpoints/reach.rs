//! Which nodes status may believe: a replica on a node that cannot be
//! reached now is `unknown`, with when its node was last heard from.

use std::collections::{HashMap, HashSet};

/// Where each node stands for status: those that cannot be reached now,
/// with when each was last heard from (RFC 3339, if since this server
/// started). A node missing from the table cannot be reached either.
pub(crate) struct Reach {
    known: HashSet<String>,
    away: HashMap<String, Option<String>>,
}

impl Reach {
    pub(crate) fn of(table: &crate::nodes::Table) -> Reach {
        Reach {
            known: table.nodes.keys().cloned().collect(),
            away: table
                .nodes
                .values()
                .filter(|n| !n.ready())
                .map(|n| {
                    let seen = n
                        .last_heartbeat
                        .map(|t| humantime::format_rfc3339_seconds(t).to_string());
                    (n.id().to_string(), seen)
                })
                .collect(),
        }
    }

    pub(crate) fn reachable(&self, node: &str) -> bool {
        self.known.contains(node) && !self.away.contains_key(node)
    }

    /// When an unreachable node was last heard from.
    pub(crate) fn last_seen(&self, node: &str) -> Option<String> {
        self.away.get(node).cloned().flatten()
    }
}
