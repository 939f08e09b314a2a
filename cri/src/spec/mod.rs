//! The OCI runtime spec of an orca container, built with `oci-spec`: the
//! process from the image config with overrides, the standard mounts,
//! namespaces (network joined by path), cgroup limits and hardening like
//! Docker's defaults (its capability set, no_new_privileges, masked and
//! read-only paths, a deny-all device list with the standard devices, and
//! its default seccomp filter).
//!
//! Pure: no containerd here, so every rule is unit-tested.

use std::collections::HashMap;
use std::path::PathBuf;

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResourcesBuilder, Mount, MountBuilder, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

use crate::error::{CriError, Result};
use crate::image::ImageConfig;
use crate::resources::Resources;
use crate::user::UserDb;

pub use args::process_args;
pub use caps::{capabilities, parse_capability, DEFAULT_CAPABILITIES};
pub use extra::{DeviceNode, TmpfsMount};

/// Where the container's network comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetworkMode {
    /// A fresh namespace with only loopback.
    #[default]
    Isolated,
    /// Join a namespace prepared elsewhere (by `network/`), by path.
    Join(PathBuf),
    /// The host's network (no network namespace).
    Host,
}

/// A bind mount into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// What orca decides about a container beyond its image.
#[derive(Debug, Clone, Default)]
pub struct ContainerConfig {
    /// containerd container id (validated by [`validate_id`]).
    pub id: String,
    /// Hostname inside the UTS namespace (defaults to the id).
    pub hostname: Option<String>,
    /// Replaces the image's Entrypoint and Cmd.
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (and drops its Cmd), as Docker's
    /// `--entrypoint` does.
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd: the arguments after the Entrypoint.
    pub args: Option<Vec<String>>,
    /// Merged over the image's environment.
    pub env: Vec<(String, String)>,
    /// Overrides the image's WorkingDir.
    pub working_dir: Option<String>,
    /// Overrides the image's User (`uid`, `uid:gid` or `root`).
    pub user: Option<String>,
    /// Memory and CPU limits.
    pub resources: Resources,
    /// Network namespace.
    pub network: NetworkMode,
    /// Extra bind mounts (resolv.conf, hosts, volumes).
    pub mounts: Vec<BindMount>,
    /// tmpfs mounts (`volumes` of type tmpfs).
    pub tmpfs: Vec<TmpfsMount>,
    /// Device nodes of the host (`devices`).
    pub devices: Vec<DeviceNode>,
    /// containerd labels.
    pub labels: HashMap<String, String>,
    /// Capabilities added to [`DEFAULT_CAPABILITIES`], by Linux name
    /// (`NET_RAW` or `CAP_NET_RAW`), or `ALL`.
    pub cap_add: Vec<String>,
    /// Capabilities taken away, likewise; applied before `cap_add`.
    pub cap_drop: Vec<String>,
    /// No seccomp filter (the default profile otherwise, see [`seccomp`]).
    pub seccomp_unconfined: bool,
    /// The root filesystem is read-only; `/tmp` is a fresh tmpfs.
    pub read_only_rootfs: bool,
}

/// Paths hidden from the container, as Docker does.
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths the container sees read-only, as Docker does.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Whether `s` is a name containerd takes for ids and namespaces, and one
/// safe in paths and cgroup names: `[A-Za-z0-9][A-Za-z0-9_.-]*`, at most
/// 76 characters.
pub(crate) fn is_containerd_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 76
        && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Container ids: see [`is_containerd_name`].
pub fn validate_id(id: &str) -> Result<()> {
    if is_containerd_name(id) {
        Ok(())
    } else {
        Err(CriError::InvalidConfig {
            field: "container id",
            reason: format!("{id:?} must be letters, digits, '_', '.', '-' (at most 76)"),
        })
    }
}

/// The cgroup path of a container: `/<namespace>/<id>`, as containerd's
/// own clients use.
pub fn cgroup_path(namespace: &str, id: &str) -> String {
    format!("/{namespace}/{id}")
}

fn spec_err(e: oci_spec::OciSpecError) -> CriError {
    CriError::InvalidConfig {
        field: "runtime spec",
        reason: e.to_string(),
    }
}

/// The environment: the image's, then the overrides by key, with PATH and
/// HOSTNAME filled in when missing. Order is kept stable.
pub fn merged_env(
    image: &ImageConfig,
    overrides: &[(String, String)],
    hostname: &str,
) -> Result<Vec<String>> {
    // Ordered pairs: the image's order, new keys appended.
    let mut vars: Vec<(String, String)> = Vec::new();
    fn set(vars: &mut Vec<(String, String)>, k: &str, v: &str) {
        match vars.iter_mut().find(|(key, _)| key == k) {
            Some(entry) => entry.1 = v.to_string(),
            None => vars.push((k.to_string(), v.to_string())),
        }
    }
    for entry in image.env.iter().flatten() {
        let (k, v) = entry.split_once('=').unwrap_or((entry.as_str(), ""));
        set(&mut vars, k, v);
    }
    for (k, v) in overrides {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(CriError::InvalidConfig {
                field: "env",
                reason: format!("{k:?} is not a valid variable name"),
            });
        }
        set(&mut vars, k, v);
    }
    if !vars.iter().any(|(k, _)| k == "PATH") {
        vars.insert(0, ("PATH".to_string(), DEFAULT_PATH.to_string()));
    }
    if !vars.iter().any(|(k, _)| k == "HOSTNAME") {
        vars.push(("HOSTNAME".to_string(), hostname.to_string()));
    }
    Ok(vars.into_iter().map(|(k, v)| format!("{k}={v}")).collect())
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(spec_err)
}

/// The standard mounts of a Linux container.
fn standard_mounts() -> Result<Vec<Mount>> {
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
    ])
}

/// The user a container runs as: the override, else the image's.
pub fn user_of<'a>(image: &'a ImageConfig, config: &'a ContainerConfig) -> &'a str {
    config
        .user
        .as_deref()
        .or(image.user.as_deref())
        .unwrap_or("")
}

/// Builds the runtime spec for `config` running an image with `image`'s
/// settings; `users` holds the image's account files when the user is
/// given by name.
pub fn build_spec(
    namespace: &str,
    image: &ImageConfig,
    config: &ContainerConfig,
    users: &UserDb,
) -> Result<Spec> {
    validate_id(&config.id)?;
    let hostname = config.hostname.clone().unwrap_or_else(|| config.id.clone());
    let args = process_args(
        image,
        config.command.as_deref(),
        config.entrypoint.as_deref(),
        config.args.as_deref(),
    )?;
    let env = merged_env(image, &config.env, &hostname)?;
    let cwd = config
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone().filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".to_string());
    if !cwd.starts_with('/') {
        return Err(CriError::InvalidConfig {
            field: "working_dir",
            reason: format!("{cwd:?} is not an absolute path"),
        });
    }
    let ids = crate::user::resolve(user_of(image, config), users)?;

    let caps = capabilities(&config.cap_add, &config.cap_drop)?;
    let seccomp = if config.seccomp_unconfined {
        None
    } else {
        Some(seccomp::default_profile(&caps)?)
    };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .map_err(spec_err)?;
    let process = ProcessBuilder::default()
        .terminal(false)
        .user({
            let mut user = UserBuilder::default().uid(ids.uid).gid(ids.gid);
            if !ids.additional_gids.is_empty() {
                user = user.additional_gids(ids.additional_gids.clone());
            }
            user.build().map_err(spec_err)?
        })
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        // No rlimits: the process inherits the shim's, as under Docker.
        .no_new_privileges(true)
        .build()
        .map_err(spec_err)?;

    let mut mounts = standard_mounts()?;
    if config.read_only_rootfs && !config.mounts.iter().any(|b| b.destination == "/tmp") {
        // Somewhere to write that is not a volume, as programs expect.
        mounts.push(mount(
            "/tmp",
            "tmpfs",
            "tmpfs",
            &["nosuid", "nodev", "mode=1777"],
        )?);
    }
    mounts.extend(extra::user_mounts(config)?);

    let mut namespaces = Vec::new();
    for typ in [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(spec_err)?,
        );
    }
    match &config.network {
        NetworkMode::Host => {}
        NetworkMode::Isolated => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .build()
                .map_err(spec_err)?,
        ),
        NetworkMode::Join(path) => namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(spec_err)?,
        ),
    }

    let mut devices = vec![LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(spec_err)?];
    let (nodes, rules) = extra::devices(&config.devices)?;
    // null, zero, full, random, urandom, tty, ptmx, and the pty slaves.
    for (major, minor) in [
        (1, Some(3)),
        (1, Some(5)),
        (1, Some(7)),
        (1, Some(8)),
        (1, Some(9)),
        (5, Some(0)),
        (5, Some(2)),
        (136, None),
    ] {
        let mut rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(major)
            .access("rwm");
        if let Some(minor) = minor {
            rule = rule.minor(minor);
        }
        devices.push(rule.build().map_err(spec_err)?);
    }
    devices.extend(rules);
    let mut resources = LinuxResourcesBuilder::default().devices(devices);
    if let Some(limit) = config.resources.pids {
        resources = resources.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    if let Some(memory) = config.resources.memory {
        let bytes = memory.bytes() as i64;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(bytes)
                // Swap equal to the limit: no swap, so the limit means what it says.
                .swap(bytes)
                .build()
                .map_err(spec_err)?,
        );
    }
    if let Some(cpu) = config.resources.cpu {
        resources = resources.cpu(
            LinuxCpuBuilder::default()
                .quota(cpu.quota_us())
                .period(cpu.period_us())
                .shares(cpu.shares())
                .build()
                .map_err(spec_err)?,
        );
    }

    let mut linux = LinuxBuilder::default();
    if let Some(seccomp) = seccomp {
        linux = linux.seccomp(seccomp);
    }
    if !nodes.is_empty() {
        linux = linux.devices(nodes);
    }
    let linux = linux
        .namespaces(namespaces)
        .resources(resources.build().map_err(spec_err)?)
        .cgroups_path(cgroup_path(namespace, &config.id))
        .masked_paths(
            MASKED_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .readonly_paths(
            READONLY_PATHS
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(spec_err)?;

    SpecBuilder::default()
        .version("1.0.2")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(config.read_only_rootfs)
                .build()
                .map_err(spec_err)?,
        )
        .hostname(hostname)
        .mounts(mounts)
        .linux(linux)
        .build()
        .map_err(spec_err)
}

mod args;
mod caps;
mod extra;
pub mod seccomp;
#[cfg(test)]
mod seccomp_docker;
#[cfg(test)]
mod tests;
