//! `volumes`: what a replica mounts besides its image. Compose's short
//! syntax (`"pgdata:/var/lib/postgresql/data"`, `"/srv/media:/media:ro"`)
//! or an object (`{ source, target, per_replica = true }`,
//! `{ type = "tmpfs", target, size }`), kept as written and read into a
//! [`Mount`] by [`VolumeSpec::mount`]; [`check_volumes`] refuses what no
//! node should mount.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::names::is_dns_label;

/// One entry of `volumes`, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum VolumeSpec {
    /// `"NAME:/path[:ro]"` or `"/host/path:/path[:ro]"`.
    Short(String),
    Long(VolumeObject),
}

/// `volumes` entry as an object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeObject {
    /// `volume` (the default with a source that is a name), `bind` (a
    /// source that is an absolute path) or `tmpfs`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub kind: Option<VolumeType>,
    /// The volume's name, or the host path of a bind mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the replica sees it: an absolute path.
    pub target: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// A new volume starts empty instead of with the image's content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nocopy: bool,
    /// One volume per replica slot, `<source>-<slot>`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub per_replica: bool,
    /// tmpfs only: its largest size, a quantity ("64Mi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<String>,
}

/// `volumes[].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VolumeType {
    Volume,
    Bind,
    Tmpfs,
}

impl<'de> Deserialize<'de> for VolumeSpec {
    /// A string or a table, with an error that says which it may be.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = VolumeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    r#""NAME:/path[:ro]", "/host/path:/path[:ro]" or { source, target, ... }"#,
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VolumeSpec, E> {
                Ok(VolumeSpec::Short(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<VolumeSpec, A::Error> {
                VolumeObject::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(VolumeSpec::Long)
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What a `volumes` entry mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// A named volume of the service's project.
    Volume {
        name: String,
        target: String,
        read_only: bool,
        nocopy: bool,
        per_replica: bool,
    },
    /// A host path (privileged; under the node's `[volumes] host_paths`).
    Bind {
        source: String,
        target: String,
        read_only: bool,
    },
    /// Memory, counted towards the replica's.
    Tmpfs {
        target: String,
        size: Option<String>,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Volume { target, .. }
            | Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. } => target,
        }
    }

    /// Whether the replica may write to it (a tmpfs is its own alone).
    pub fn writable_storage(&self) -> bool {
        match self {
            Mount::Volume { read_only, .. } | Mount::Bind { read_only, .. } => !read_only,
            Mount::Tmpfs { .. } => false,
        }
    }

    /// The name of the volume slot `slot` uses, for a named volume.
    pub fn volume_name(&self, slot: u32) -> Option<String> {
        match self {
            Mount::Volume {
                name, per_replica, ..
            } => Some(if *per_replica {
                format!("{name}-{slot}")
            } else {
                name.clone()
            }),
            _ => None,
        }
    }
}

fn bad(entry: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("invalid volumes entry {entry:?}: {why}"))
}

/// An absolute, plain path: no `.` or `..`, no empty part, no NUL or
/// `:`, at most 4096 bytes.
fn is_plain_path(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 4096
        && !p.contains(['\0', ':'])
        && (p == "/"
            || p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != ".."))
}

/// Where nothing may be mounted: the kernel's views and what orca itself
/// puts in every replica.
const RESERVED_TARGETS: [&str; 3] = ["/proc", "/sys", "/dev"];
const ORCA_FILES: [&str; 2] = ["/etc/hosts", "/etc/resolv.conf"];

/// A mount target a replica may have.
pub fn check_target(entry: &str, target: &str) -> Result<(), ApiError> {
    if !is_plain_path(target) {
        return Err(bad(
            entry,
            format!("target {target:?} must be an absolute path without '.', '..' or ':'"),
        ));
    }
    if target == "/" {
        return Err(bad(entry, "the target cannot be /"));
    }
    let over = |root: &str| target == root || target.starts_with(&format!("{root}/"));
    if let Some(root) = RESERVED_TARGETS.iter().find(|r| over(r)) {
        return Err(bad(entry, format!("the target cannot be on {root}")));
    }
    if ORCA_FILES.contains(&target) {
        return Err(bad(
            entry,
            format!("{target} is orca's own in every replica"),
        ));
    }
    Ok(())
}

fn short(entry: &str) -> Result<Mount, ApiError> {
    let parts: Vec<&str> = entry.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [s, t] => (*s, *t, None),
        [s, t, m] => (*s, *t, Some(*m)),
        [_] => {
            return Err(bad(
                entry,
                "anonymous volumes are not supported: name it, as NAME:/path",
            ))
        }
        _ => return Err(bad(entry, "must be SOURCE:TARGET or SOURCE:TARGET:ro")),
    };
    let read_only = match mode {
        None | Some("rw") => false,
        Some("ro") => true,
        Some(other) => return Err(bad(entry, format!("mode {other:?} must be ro or rw"))),
    };
    if source.starts_with('/') {
        return Ok(Mount::Bind {
            source: source.to_string(),
            target: target.to_string(),
            read_only,
        });
    }
    if source.starts_with('.') || source.starts_with('~') {
        return Err(bad(
            entry,
            "a bind mount's source must be an absolute path on the node",
        ));
    }
    Ok(Mount::Volume {
        name: source.to_string(),
        target: target.to_string(),
        read_only,
        nocopy: false,
        per_replica: false,
    })
}

fn long(o: &VolumeObject) -> Result<Mount, ApiError> {
    let entry = &o.target;
    let kind = match (o.kind, o.source.as_deref()) {
        (Some(k), _) => k,
        (None, Some(s)) if s.starts_with('/') => VolumeType::Bind,
        (None, _) => VolumeType::Volume,
    };
    let only_volume = |set: bool, key: &str| {
        if set && kind != VolumeType::Volume {
            Err(bad(entry, format!("{key} is for named volumes only")))
        } else {
            Ok(())
        }
    };
    only_volume(o.nocopy, "nocopy")?;
    only_volume(o.per_replica, "per_replica")?;
    if o.size.is_some() && kind != VolumeType::Tmpfs {
        return Err(bad(entry, "size is for tmpfs only"));
    }
    let source = || o.source.clone().ok_or_else(|| bad(entry, "needs a source"));
    Ok(match kind {
        VolumeType::Volume => Mount::Volume {
            name: source()?,
            target: o.target.clone(),
            read_only: o.read_only,
            nocopy: o.nocopy,
            per_replica: o.per_replica,
        },
        VolumeType::Bind => Mount::Bind {
            source: source()?,
            target: o.target.clone(),
            read_only: o.read_only,
        },
        VolumeType::Tmpfs => {
            if o.source.is_some() || o.read_only {
                return Err(bad(entry, "a tmpfs takes a target and a size only"));
            }
            Mount::Tmpfs {
                target: o.target.clone(),
                size: o.size.clone(),
            }
        }
    })
}

impl VolumeSpec {
    /// What the entry mounts, with every name and path checked.
    pub fn mount(&self) -> Result<Mount, ApiError> {
        let (entry, m) = match self {
            VolumeSpec::Short(s) => (s.as_str(), short(s)?),
            VolumeSpec::Long(o) => (o.target.as_str(), long(o)?),
        };
        check_target(entry, m.target())?;
        match &m {
            Mount::Volume {
                name, per_replica, ..
            } => {
                // Room for "-<slot>" within a DNS label.
                let max = if *per_replica { 59 } else { 63 };
                if !is_dns_label(name) || name.len() > max {
                    return Err(bad(
                        entry,
                        format!(
                            "volume name {name:?} must be a DNS label (a-z, 0-9, '-'; at most {max})"
                        ),
                    ));
                }
            }
            Mount::Bind { source, .. } => {
                if !is_plain_path(source) {
                    return Err(bad(
                        entry,
                        format!("source {source:?} must be an absolute path without '.' or '..'"),
                    ));
                }
            }
            Mount::Tmpfs { size, .. } => {
                if size.as_deref().is_some_and(|s| s.trim().is_empty()) {
                    return Err(bad(entry, "size must be a quantity like \"64Mi\""));
                }
            }
        }
        Ok(m)
    }
}

/// Every entry mounts something, and no two at one target.
pub(super) fn check_volumes(volumes: &[VolumeSpec]) -> Result<Vec<Mount>, ApiError> {
    let mut out: Vec<Mount> = Vec::with_capacity(volumes.len());
    for v in volumes {
        let m = v.mount()?;
        if out.iter().any(|o| o.target() == m.target()) {
            return Err(ApiError::bad_request(format!(
                "invalid volumes: two entries mount {}",
                m.target()
            )));
        }
        out.push(m);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
