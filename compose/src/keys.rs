//! The compose keys orca refuses and those it ignores, each with why, and
//! how a compose file mode reads.

use serde_yaml_ng::Value;

use crate::mapping::text;

/// Keys refused, with why.
pub const REFUSED: &[(&str, &str)] = &[
    (
        "network_mode",
        "orca gives every replica its project's network",
    ),
    (
        "privileged",
        "orca runs no privileged replica; add capabilities with cap_add",
    ),
    ("pid", "replicas do not share process namespaces"),
    ("ipc", "replicas do not share IPC namespaces"),
    ("extends", "not supported; write the service out"),
    ("volumes_from", "name the volumes instead"),
    ("external_links", "not supported"),
    ("userns_mode", "not supported"),
    ("cgroup_parent", "orca places replicas in its own cgroups"),
    ("sysctls", "not supported"),
    (
        "security_opt",
        "not supported (orca applies its own seccomp profile)",
    ),
    ("runtime", "orca runs runc"),
    ("isolation", "not supported"),
    ("mac_address", "not supported"),
    ("storage_opt", "not supported"),
];

/// Keys ignored, with why.
pub const IGNORED: &[(&str, &str)] = &[
    ("container_name", "orca names replicas itself"),
    (
        "expose",
        "every service of a project reaches every other's ports",
    ),
    (
        "links",
        "every service of a project reaches every other by name",
    ),
    ("hostname", "a replica's host name is its service and slot"),
    ("domainname", "not kept"),
    (
        "stdin_open",
        "replicas run without a terminal (orca exec -it gives one)",
    ),
    (
        "tty",
        "replicas run without a terminal (orca exec -it gives one)",
    ),
    ("init", "not kept"),
    (
        "logging",
        "orca keeps every replica's logs itself (orca logs)",
    ),
    ("platform", "the node's platform is pulled"),
    ("profiles", "every service of the file is deployed"),
    ("dns", "replicas use orca's service DNS"),
    ("dns_search", "replicas use orca's service DNS"),
    ("extra_hosts", "not kept"),
    ("shm_size", "not kept"),
    ("ulimits", "not kept"),
    ("stop_signal", "orca stops replicas with SIGTERM"),
];

/// A compose file mode (`0440`, or 288 when YAML read it as octal) as text.
pub fn file_mode(v: &Value) -> String {
    match v {
        Value::Number(n) => {
            let digits = n.to_string();
            if digits.bytes().all(|b| (b'0'..=b'7').contains(&b)) && digits.len() <= 4 {
                format!("{digits:0>4}")
            } else {
                format!("{:04o}", n.as_u64().unwrap_or(0o444))
            }
        }
        other => text(other).unwrap_or_default(),
    }
}
