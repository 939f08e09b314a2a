//! The label keys orca puts on everything it creates in containerd (see the
//! contract), so a restarted server adopts what runs instead of recreating it.

/// The service a container belongs to.
pub const SERVICE: &str = "orca.service";
/// The project of that service.
pub const PROJECT: &str = "orca.project";
/// The service version the container runs.
pub const VERSION: &str = "orca.version";
/// The instance (replica) id.
pub const INSTANCE: &str = "orca.instance";
/// Where the container's log file is (so logs are found after a restart).
pub const LOG_PATH: &str = "orca.log-path";

/// A containerd list filter matching `key == value`.
pub fn filter(key: &str, value: &str) -> String {
    format!("labels.\"{key}\"=={value}")
}

/// A containerd list filter matching containers that have `key` at all.
pub fn has(key: &str) -> String {
    format!("labels.\"{key}\"")
}
