//! Container capabilities: Docker's default set less `NET_RAW`, and the
//! `cap_add` / `cap_drop` names a service gives, by Linux name or `ALL`.

use oci_spec::runtime::Capability;

use crate::error::{CriError, Result};

/// Docker's default capability set without `NET_RAW` (Docker dropped it
/// too after CVE-2020-13401: raw sockets forge ARP and IPv6 router
/// advertisements on a shared bridge). `cap_add` brings it back.
pub const DEFAULT_CAPABILITIES: [Capability; 13] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// A capability by its Linux name, with or without `CAP_`, any case.
pub fn parse_capability(name: &str) -> Result<Capability> {
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    bare.parse().map_err(|_| CriError::InvalidConfig {
        field: "capabilities",
        reason: format!("{name:?} is not a Linux capability"),
    })
}

/// Every capability, for `ALL`.
const ALL_CAPABILITIES: [Capability; 41] = [
    Capability::AuditControl,
    Capability::AuditRead,
    Capability::AuditWrite,
    Capability::BlockSuspend,
    Capability::Bpf,
    Capability::CheckpointRestore,
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::Kill,
    Capability::Lease,
    Capability::LinuxImmutable,
    Capability::MacAdmin,
    Capability::MacOverride,
    Capability::Mknod,
    Capability::NetAdmin,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetRaw,
    Capability::Perfmon,
    Capability::Setgid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::Setuid,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysChroot,
    Capability::SysModule,
    Capability::SysNice,
    Capability::SysPacct,
    Capability::SysPtrace,
    Capability::SysRawio,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Syslog,
    Capability::WakeAlarm,
];

/// The container's capabilities: the defaults, less `drop`, plus `add`.
pub fn capabilities(add: &[String], drop: &[String]) -> Result<oci_spec::runtime::Capabilities> {
    let mut caps: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    for name in drop {
        if name.eq_ignore_ascii_case("ALL") {
            caps.clear();
        } else {
            caps.remove(&parse_capability(name)?);
        }
    }
    for name in add {
        if name.eq_ignore_ascii_case("ALL") {
            caps.extend(ALL_CAPABILITIES);
        } else {
            caps.insert(parse_capability(name)?);
        }
    }
    Ok(caps)
}
