//! What a container gets beyond the standard set: the caller's bind
//! mounts and tmpfs (a mount inside another after it), and host device
//! nodes with the cgroup rules that let the container use them.

use oci_spec::runtime::{
    LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    Mount,
};

use super::{mount, spec_err, ContainerConfig};
use crate::error::{CriError, Result};

/// A device node of the host given to the container, with a cgroup rule
/// that lets it use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNode {
    /// Where the container sees it.
    pub path: String,
    /// `c` or `b`.
    pub kind: char,
    pub major: i64,
    pub minor: i64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A tmpfs in the container: memory, charged to the container's cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TmpfsMount {
    pub destination: String,
    /// Its largest size (none: the kernel's default, half the memory).
    pub size_bytes: Option<u64>,
}

/// The bind mounts and tmpfs of `config`, parents first.
pub(super) fn user_mounts(config: &ContainerConfig) -> Result<Vec<Mount>> {
    // A mount inside another comes after it, whatever the order given.
    let mut extra: Vec<(usize, Mount)> = Vec::new();
    let depth = |d: &str| d.split('/').filter(|c| !c.is_empty()).count();
    for bind in &config.mounts {
        if !bind.destination.starts_with('/') {
            return Err(CriError::InvalidConfig {
                field: "mounts",
                reason: format!("{:?} is not an absolute path", bind.destination),
            });
        }
        let mut options = vec!["rbind", "rprivate"];
        options.push(if bind.read_only { "ro" } else { "rw" });
        extra.push((
            depth(&bind.destination),
            mount(
                &bind.destination,
                "bind",
                &bind.source.to_string_lossy(),
                &options,
            )?,
        ));
    }
    for t in &config.tmpfs {
        if !t.destination.starts_with('/') {
            return Err(CriError::InvalidConfig {
                field: "tmpfs",
                reason: format!("{:?} is not an absolute path", t.destination),
            });
        }
        let size = t.size_bytes.map(|b| format!("size={b}"));
        let mut options = vec!["nosuid", "nodev", "mode=1777"];
        options.extend(size.as_deref());
        extra.push((
            depth(&t.destination),
            mount(&t.destination, "tmpfs", "tmpfs", &options)?,
        ));
    }
    extra.sort_by_key(|(d, _)| *d);
    Ok(extra.into_iter().map(|(_, m)| m).collect())
}

/// The device nodes and their cgroup rules.
pub(super) fn devices(nodes: &[DeviceNode]) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>)> {
    let mut out = Vec::new();
    let mut rules = Vec::new();
    for d in nodes {
        let typ = match d.kind {
            'c' => LinuxDeviceType::C,
            'b' => LinuxDeviceType::B,
            other => {
                return Err(CriError::InvalidConfig {
                    field: "devices",
                    reason: format!("{}: device kind {other:?}", d.path),
                })
            }
        };
        out.push(
            LinuxDeviceBuilder::default()
                .path(d.path.clone())
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .file_mode(d.mode & 0o777)
                .uid(d.uid)
                .gid(d.gid)
                .build()
                .map_err(spec_err)?,
        );
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(d.major)
                .minor(d.minor)
                .access("rwm")
                .build()
                .map_err(spec_err)?,
        );
    }
    Ok((out, rules))
}
