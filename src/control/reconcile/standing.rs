//! Where each gathered replica of a service stands with its node: lost
//! (its node gone past the reschedule delay), leaving a drained node,
//! overdue (past a drain's deadline, or on a volume being restored or
//! moved), or on a node that cannot be asked now.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use crate::agent::Instance;
use crate::control::gather::{draining, lost, reschedule_after};
use crate::control::state::State;
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// Where each gathered replica stands with its node.
pub(crate) struct Standing {
    /// On a node gone past the reschedule delay (or removed): planned as gone.
    pub lost: HashSet<String>,
    /// When the next replica becomes lost.
    pub lost_at: Option<Instant>,
    /// On a drained node, its service's turn to move: replaced first.
    pub leaving: HashSet<String>,
    /// On a drained node past the drain's deadline: stopped.
    pub overdue: HashSet<String>,
    /// On a node that cannot be asked now: it restarts them itself.
    pub unreachable: HashSet<String>,
}

pub(crate) fn standing(
    reschedule_after_default: Duration,
    table: &Table,
    st: &State,
    record: Option<&ServiceRecord>,
    service: &str,
    instances: &[Instance],
    now: Instant,
) -> Standing {
    let after = reschedule_after(record, reschedule_after_default);
    let (lost, lost_at) = lost(table, instances, after, now);
    let (leaving, mut overdue) = draining(
        table,
        service,
        instances,
        &|node, service| super::decide::earlier_on(st, node, service),
        SystemTime::now(),
    );
    // Replicas on a volume being restored or moved stop now.
    if let Some(r) = record.filter(|_| !st.busy.is_empty()) {
        for i in instances {
            let spec = crate::control::schedule::spec_of(r, i.version);
            if crate::volumes::volumes_of(spec, i.slot)
                .iter()
                .any(|k| st.busy.contains_key(k))
            {
                overdue.insert(i.id.clone());
            }
        }
    }
    let unreachable = instances
        .iter()
        .filter(|i| !table.reachable(&i.node))
        .map(|i| i.id.clone())
        .collect();
    Standing {
        lost,
        lost_at,
        leaving,
        overdue,
        unreachable,
    }
}
