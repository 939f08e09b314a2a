//! Containers and their tasks: create from an image and a
//! [`ContainerConfig`](crate::spec::ContainerConfig), start with logs going
//! to a file, wait, stop with a grace period, exec, inspect and list by
//! label, and remove everything a container had (task, container, snapshot,
//! cgroup directories).
//!
//! The verbs live in one file each.

mod attach;
mod create;
mod exec;
mod list;
mod remove;
mod task;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::SystemTime;

pub use attach::{AttachInput, AttachOptions, AttachOutput, Attached};
pub use exec::ExecOutput;

/// A task's state as containerd reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    Stopped,
    Paused,
    Pausing,
    Unknown,
}

impl TaskState {
    pub(crate) fn from_proto(status: i32) -> Self {
        match status {
            1 => TaskState::Created,
            2 => TaskState::Running,
            3 => TaskState::Stopped,
            4 => TaskState::Paused,
            5 => TaskState::Pausing,
            _ => TaskState::Unknown,
        }
    }

    /// True while the process exists (running or paused).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            TaskState::Running | TaskState::Paused | TaskState::Pausing
        )
    }
}

/// A container's task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub pid: u32,
    pub state: TaskState,
    /// Exit code once stopped.
    pub exit_code: Option<u32>,
}

/// A container as containerd knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub image: String,
    pub labels: HashMap<String, String>,
    /// The task, if one exists.
    pub task: Option<TaskInfo>,
}

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// The exit code; 128 + signal for a killed process (137 for SIGKILL).
    pub code: u32,
    pub at: Option<SystemTime>,
    /// True when the kernel's OOM killer ended it.
    pub oom_killed: bool,
}

/// Where a task's stdout and stderr go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Nowhere.
    Discard,
    /// The shim appends both streams to one file itself (`file://`).
    File(PathBuf),
    /// A logger binary started by the shim (`binary://`): `binary log-shim
    /// FILE`, which keeps streams apart, timestamps lines and rotates.
    Shim { binary: PathBuf, file: PathBuf },
}

impl LogTarget {
    /// The stdio URI for `Tasks.Create`.
    pub fn uri(&self) -> String {
        match self {
            LogTarget::Discard => String::new(),
            LogTarget::File(path) => format!("file://{}", path.display()),
            LogTarget::Shim { binary, file } => format!(
                "binary://{}?log-shim={}",
                binary.display(),
                query_escape(&file.to_string_lossy())
            ),
        }
    }

    /// The log file, if any.
    pub fn file(&self) -> Option<&PathBuf> {
        match self {
            LogTarget::Discard => None,
            LogTarget::File(f) | LogTarget::Shim { file: f, .. } => Some(f),
        }
    }
}

fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

pub(crate) fn timestamp_to_system(ts: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    let ts = ts?;
    if ts.seconds <= 0 {
        return None;
    }
    Some(
        SystemTime::UNIX_EPOCH
            + std::time::Duration::new(ts.seconds as u64, ts.nanos.max(0) as u32),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_uris() {
        assert_eq!(
            LogTarget::File("/var/log/x.log".into()).uri(),
            "file:///var/log/x.log"
        );
        assert_eq!(
            LogTarget::Shim {
                binary: "/usr/bin/orca".into(),
                file: "/data/logs/a b&c.log".into()
            }
            .uri(),
            "binary:///usr/bin/orca?log-shim=/data/logs/a%20b%26c.log"
        );
        assert_eq!(LogTarget::Discard.uri(), "");
    }
}
