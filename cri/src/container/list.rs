//! Inspecting and listing containers, with their tasks, by label.

use std::collections::HashMap;

use containerd_client::services::v1::{
    GetContainerRequest, ListContainersRequest, ListTasksRequest,
};

use super::{ContainerInfo, TaskInfo, TaskState};
use crate::client::Cri;
use crate::error::{CriError, Result};

impl Cri {
    /// containerd's record of container `id` (spec, labels, image).
    pub(crate) async fn container_record(
        &self,
        id: &str,
    ) -> Result<containerd_client::services::v1::Container> {
        self.containers()
            .get(self.req(GetContainerRequest { id: id.to_string() }))
            .await
            .map_err(|s| self.unavailable_or("Containers.Get", id, s))?
            .into_inner()
            .container
            .ok_or_else(|| CriError::NotFound {
                kind: "container",
                id: id.to_string(),
            })
    }

    /// Container `id` with its task.
    pub async fn container(&self, id: &str) -> Result<ContainerInfo> {
        let c = self.container_record(id).await?;
        let task = self.task(id).await?;
        Ok(ContainerInfo {
            id: c.id,
            image: c.image,
            labels: c.labels,
            task,
        })
    }

    /// Containers matching every one of `filters` (see [`crate::labels::filter`]),
    /// each with its task. An empty list lists all of the namespace.
    pub async fn list_containers(&self, filters: &[String]) -> Result<Vec<ContainerInfo>> {
        // containerd ORs separate filter strings and ANDs comma-joined parts.
        let filters = if filters.is_empty() {
            vec![]
        } else {
            vec![filters.join(",")]
        };
        let containers = self
            .containers()
            .list(self.req(ListContainersRequest { filters }))
            .await
            .map_err(|s| self.unavailable_or("Containers.List", "", s))?
            .into_inner()
            .containers;
        let tasks: HashMap<String, TaskInfo> = self
            .tasks()
            .list(self.req(ListTasksRequest {
                filter: String::new(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.List", "", s))?
            .into_inner()
            .tasks
            .into_iter()
            .map(|p| {
                let state = TaskState::from_proto(p.status);
                (
                    if p.container_id.is_empty() {
                        p.id.clone()
                    } else {
                        p.container_id.clone()
                    },
                    TaskInfo {
                        pid: p.pid,
                        state,
                        exit_code: (state == TaskState::Stopped).then_some(p.exit_status),
                    },
                )
            })
            .collect();
        let mut out: Vec<ContainerInfo> = containers
            .into_iter()
            .map(|c| ContainerInfo {
                task: tasks.get(&c.id).cloned(),
                id: c.id,
                image: c.image,
                labels: c.labels,
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
