//! Removing a container and everything it had: its task (killed first if it
//! still runs), the container record, its rootfs snapshot and the cgroup
//! directories runc leaves behind. Idempotent.

use std::time::Duration;

use containerd_client::services::v1::snapshots::ListSnapshotsRequest;
use containerd_client::services::v1::DeleteContainerRequest;

use crate::cgroup::Cgroups;
use crate::client::Cri;
use crate::error::Result;
use crate::spec::cgroup_path;

impl Cri {
    /// Removes container `id` whatever state it is in. Missing parts are
    /// fine; the log file is the caller's to keep or delete.
    pub async fn remove_container(&self, id: &str) -> Result<()> {
        if let Some(task) = self.task(id).await? {
            if task.state.is_alive() {
                self.stop(id, Duration::ZERO).await?;
            }
            self.delete_task(id).await?;
        }
        match self
            .containers()
            .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::NotFound => {}
            Err(s) => return Err(self.unavailable_or("Containers.Delete", id, s)),
        }
        self.remove_snapshot(id).await;
        Cgroups::default().remove(&cgroup_path(self.namespace(), id));
        Ok(())
    }

    /// Removes the replicas' snapshots that no container `keep`s: a crash
    /// between preparing a replica's snapshot and creating its container
    /// leaves one, held by a lease for minutes. Only for when nothing is
    /// being created (a node's start). The keys removed.
    pub async fn remove_orphan_snapshots(
        &self,
        keep: &dyn Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let mut stream = self
            .snapshots()
            .list(self.req(ListSnapshotsRequest {
                snapshotter: crate::client::SNAPSHOTTER.to_string(),
                filters: vec![crate::labels::has(crate::labels::INSTANCE)],
            }))
            .await
            .map_err(|s| self.unavailable_or("Snapshots.List", "", s))?
            .into_inner();
        let mut orphans = Vec::new();
        while let Some(page) = stream
            .message()
            .await
            .map_err(|s| self.unavailable_or("Snapshots.List", "", s))?
        {
            orphans.extend(
                page.info
                    .into_iter()
                    .map(|i| i.name)
                    .filter(|key| !keep(key)),
            );
        }
        for key in &orphans {
            self.remove_snapshot(key).await;
        }
        Ok(orphans)
    }
}
