//! A replica as a node lists it: read back from its container's labels
//! and its task's state (so a restarted orca adopts what runs).

use cri::container::TaskState;

use super::local::{RESTART_LABEL, RUN_LABEL, SLOT_LABEL};
use super::{Instance, ProcessState};

pub(super) fn instance_of(node: &str, info: cri::container::ContainerInfo) -> Option<Instance> {
    let l = &info.labels;
    let service = l.get(cri::labels::SERVICE)?.clone();
    let state = match &info.task {
        None => ProcessState::Created,
        Some(t) if t.state.is_alive() => ProcessState::Running,
        Some(t) if t.state == TaskState::Stopped => ProcessState::Exited {
            code: t.exit_code.unwrap_or(0),
        },
        Some(_) => ProcessState::Created,
    };
    Some(Instance {
        id: info.id.clone(),
        node: node.to_string(),
        service,
        project: l.get(cri::labels::PROJECT).cloned().unwrap_or_default(),
        version: l
            .get(cri::labels::VERSION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        slot: l
            .get(SLOT_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or(u32::MAX),
        pid: info
            .task
            .as_ref()
            .filter(|t| t.state.is_alive())
            .map(|t| t.pid),
        state,
        ip: None,
        run: l.get(RUN_LABEL).and_then(|v| v.parse().ok()).unwrap_or(0),
        restart: l
            .get(RESTART_LABEL)
            .and_then(|v| v.parse().ok())
            .unwrap_or_default(),
    })
}
