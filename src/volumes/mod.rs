//! Named volumes as the control plane decides about them, pure: what a
//! replica slot mounts ([`mounts_of`]), which volumes it needs and where
//! they pin it ([`pin_of`]: a replica runs only on the node that holds its
//! data, and a lost node's replicas wait for it instead of starting empty
//! elsewhere), which services use a volume ([`used_by`]), and the claim a
//! first start makes ([`claim`]). The node side is `agent::volumes`.

use std::collections::BTreeMap;

use api::spec::{Mount, ServiceSpec};

use crate::agent::volumes::MountSpec;
use crate::store::{ServiceRecord, VolumeRecord};

/// What slot `slot` of `spec` mounts, per-replica volumes named for it.
pub fn mounts_of(spec: &ServiceSpec, slot: u32) -> Vec<MountSpec> {
    spec.mounts()
        .into_iter()
        .map(|m| {
            let name = m.volume_name(slot);
            match m {
                Mount::Volume {
                    target,
                    read_only,
                    nocopy,
                    ..
                } => MountSpec::Volume {
                    name: name.unwrap_or_default(),
                    target,
                    read_only,
                    nocopy,
                },
                Mount::Bind {
                    source,
                    target,
                    read_only,
                } => MountSpec::Bind {
                    source: source.into(),
                    target,
                    read_only,
                },
                Mount::Tmpfs { target, size } => MountSpec::Tmpfs {
                    target,
                    // Validated at deploy.
                    size_bytes: size.as_deref().and_then(|s| cri::tmpfs_size(s).ok()),
                },
            }
        })
        .collect()
}

/// The keys (`project/name`) of the named volumes slot `slot` mounts.
pub fn volumes_of(spec: &ServiceSpec, slot: u32) -> Vec<String> {
    spec.mounts()
        .iter()
        .filter_map(|m| m.volume_name(slot))
        .map(|n| format!("{}/{n}", spec.project))
        .collect()
}

/// Where a slot may run, by its volumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pin {
    /// No volume of it exists yet: anywhere the scheduler likes (the first
    /// start claims them there).
    Free,
    /// Only on `node`, which holds `volume`.
    Node { node: String, volume: String },
    /// Nowhere: its volumes are on different nodes, or the spec asks for
    /// another node than its data's.
    Nowhere(String),
}

/// See [`Pin`]. `held` maps `project/name` to the node holding it.
pub fn pin_of(spec: &ServiceSpec, slot: u32, held: &dyn Fn(&str) -> Option<String>) -> Pin {
    let mut pin: Option<(String, String)> = None;
    for key in volumes_of(spec, slot) {
        let Some(node) = held(&key) else { continue };
        match &pin {
            Some((n, first)) if *n != node => {
                return Pin::Nowhere(format!(
                    "volume {first} is on node {n} and volume {key} on node {node}: move one with `orca volume mv`"
                ))
            }
            Some(_) => {}
            None => pin = Some((node, key)),
        }
    }
    let Some((node, volume)) = pin else {
        return Pin::Free;
    };
    if let Some(asked) = spec.placement.as_ref().and_then(|p| p.node.as_deref()) {
        if asked != node {
            return Pin::Nowhere(format!(
                "volume {volume} is on node {node}, and placement.node asks for {asked}: move it with `orca volume mv {volume} --to {asked}`"
            ));
        }
    }
    Pin::Node { node, volume }
}

/// The message of a replica that waits for its volume's node.
pub fn waiting_message(node: &str, volume: &str) -> String {
    format!("waiting for node {node}, which holds volume {volume}")
}

/// Claims the volumes `keys` for `node` in `held`: the new records, or
/// why not (a volume already on another node).
pub fn claim(
    held: &BTreeMap<String, VolumeRecord>,
    keys: &[String],
    node: &str,
    now_unix: u64,
) -> Result<Vec<VolumeRecord>, String> {
    let mut new = Vec::new();
    for key in keys {
        match held.get(key) {
            Some(v) if v.node != node => {
                return Err(format!("volume {key} is on node {}, not {node}", v.node))
            }
            Some(_) => {}
            None => {
                let (project, name) = key.split_once('/').unwrap_or(("", key));
                new.push(VolumeRecord {
                    project: project.to_string(),
                    name: name.to_string(),
                    node: node.to_string(),
                    created: now_unix,
                });
            }
        }
    }
    Ok(new)
}

/// The services (not stopped) whose replicas mount `project/name`: any
/// version kept (current, canary), any slot wanted.
pub fn used_by<'a>(
    records: impl IntoIterator<Item = &'a ServiceRecord>,
    project: &str,
    name: &str,
) -> Vec<String> {
    let key = format!("{project}/{name}");
    let mut out: Vec<String> = records
        .into_iter()
        .filter(|r| !r.stopped && r.spec.project == project)
        .filter(|r| {
            let specs = std::iter::once(&r.spec).chain(r.canary.as_ref().map(|c| &c.spec));
            let slots = r.desired_replicas().max(1);
            specs
                .into_iter()
                .any(|s| (0..slots).any(|slot| volumes_of(s, slot).contains(&key)))
        })
        .map(|r| r.spec.name.clone())
        .collect();
    out.sort();
    out
}

pub mod targets;
#[cfg(test)]
mod tests;
