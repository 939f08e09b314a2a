//! A container's task: start with its stdio going to the log target, wait
//! for the exit (with the OOM flag from the cgroup), signal, and stop with a
//! grace period before SIGKILL.

use std::time::Duration;

use containerd_client::services::v1::snapshots::MountsRequest;
use containerd_client::services::v1::{
    CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest, StartRequest, WaitRequest,
};

use super::{timestamp_to_system, ExitStatus, LogTarget, TaskInfo, TaskState};
use crate::cgroup::Cgroups;
use crate::client::{Cri, SNAPSHOTTER};
use crate::error::{CriError, Result};
use crate::spec::cgroup_path;

/// SIGTERM and SIGKILL.
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

impl Cri {
    /// Creates and starts the container's task; returns its PID. On failure
    /// the task is deleted again so its bundle does not leak.
    pub async fn start_task(&self, id: &str, log: &LogTarget) -> Result<u32> {
        if let Some(dir) = log.file().and_then(|f| f.parent()) {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| CriError::io("create log directory", dir, e))?;
        }
        let rootfs = self
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: id.to_string(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Snapshots.Mounts", id, s))?
            .into_inner()
            .mounts;
        let uri = log.uri();
        let created = self
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs,
                stdin: String::new(),
                stdout: uri.clone(),
                stderr: uri,
                terminal: false,
                checkpoint: None,
                options: None,
                runtime_path: String::new(),
            }))
            .await;
        if let Err(s) = created {
            self.delete_task(id).await.ok();
            return Err(self.unavailable_or("Tasks.Create", id, s));
        }
        match self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().pid),
            Err(s) => {
                self.delete_task(id).await.ok();
                Err(self.unavailable_or("Tasks.Start", id, s))
            }
        }
    }

    /// The task of container `id`, if it has one.
    pub async fn task(&self, id: &str) -> Result<Option<TaskInfo>> {
        match self
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| {
                let state = TaskState::from_proto(p.status);
                TaskInfo {
                    pid: p.pid,
                    state,
                    exit_code: (state == TaskState::Stopped).then_some(p.exit_status),
                }
            })),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.unavailable_or("Tasks.Get", id, s)),
        }
    }

    /// Waits until the task exits; reports whether the OOM killer did it.
    pub async fn wait(&self, id: &str) -> Result<ExitStatus> {
        let reply = self
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Wait", id, s))?
            .into_inner();
        Ok(ExitStatus {
            code: reply.exit_status,
            at: timestamp_to_system(reply.exited_at),
            oom_killed: self.oom_killed(id),
        })
    }

    /// True if the OOM killer has killed a process of the container. Read
    /// from its cgroup, which lives until the task is deleted.
    pub fn oom_killed(&self, id: &str) -> bool {
        Cgroups::default()
            .oom_kills(&cgroup_path(self.namespace(), id))
            .map(|n| n > 0)
            .unwrap_or(false)
    }

    /// Freezes every process of the task (the cgroup freezer).
    pub async fn pause(&self, id: &str) -> Result<()> {
        use containerd_client::services::v1::PauseTaskRequest;
        self.tasks()
            .pause(self.req(PauseTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Pause", id, s))?;
        Ok(())
    }

    /// Thaws a paused task.
    pub async fn resume(&self, id: &str) -> Result<()> {
        use containerd_client::services::v1::ResumeTaskRequest;
        self.tasks()
            .resume(self.req(ResumeTaskRequest {
                container_id: id.to_string(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Resume", id, s))?;
        Ok(())
    }

    /// Sends `signal` to the task's init process, or to all its processes.
    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        self.tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all,
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Kill", id, s))?;
        Ok(())
    }

    /// Stops the task: SIGTERM, then SIGKILL to every process after `grace`.
    /// Returns how it ended (137 when it had to be killed). A task that has
    /// already exited just reports its status.
    pub async fn stop(&self, id: &str, grace: Duration) -> Result<ExitStatus> {
        let waiter = {
            let cri = self.clone();
            let id = id.to_string();
            tokio::spawn(async move { cri.wait(&id).await })
        };
        // Let the Wait call reach containerd before the signal goes out.
        tokio::task::yield_now().await;
        match self.kill(id, SIGTERM, false).await {
            Ok(()) => {}
            // Already exited: containerd still answers Wait with the status.
            Err(e) if e.is_not_found() => {}
            Err(CriError::Containerd { status, .. })
                if status.code() == tonic::Code::FailedPrecondition => {}
            Err(e) => {
                waiter.abort();
                return Err(e);
            }
        }
        let mut waiter = waiter;
        match tokio::time::timeout(grace, &mut waiter).await {
            Ok(joined) => joined.map_err(|e| CriError::content(id, e))?,
            Err(_) => {
                tracing::debug!(container = %id, grace_ms = grace.as_millis() as u64, "grace period over, sending SIGKILL");
                if let Err(e) = self.kill(id, SIGKILL, true).await {
                    if !e.is_not_found() {
                        tracing::warn!(container = %id, error = %e, "SIGKILL failed");
                    }
                }
                waiter.await.map_err(|e| CriError::content(id, e))?
            }
        }
    }

    /// Deletes the (stopped) task; `None` if there was none.
    pub async fn delete_task(&self, id: &str) -> Result<Option<ExitStatus>> {
        match self
            .tasks()
            .delete(self.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await
        {
            Ok(r) => {
                let r = r.into_inner();
                Ok(Some(ExitStatus {
                    code: r.exit_status,
                    at: timestamp_to_system(r.exited_at),
                    oom_killed: false,
                }))
            }
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(self.unavailable_or("Tasks.Delete", id, s)),
        }
    }
}
