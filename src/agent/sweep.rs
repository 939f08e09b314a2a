//! A node's start: what replicas that no longer exist left behind (a crash
//! between creating a replica's parts and removing them) is removed.

use super::local::LocalAgent;
use super::AgentError;

impl LocalAgent {
    /// Removes what replicas that no longer exist left behind: a crash
    /// between creating a replica's parts and removing them leaves its
    /// snapshot, network namespace, veth, address or log file. Run at the
    /// node's start, before anything is created.
    pub async fn sweep(&self) -> Result<(), AgentError> {
        let live: std::collections::HashSet<String> = self
            .cri
            .list_containers(&[cri::labels::has(cri::labels::SERVICE)])
            .await?
            .into_iter()
            .map(|c| c.id)
            .collect();
        let snapshots = self
            .cri
            .remove_orphan_snapshots(&|key| live.contains(key))
            .await?;
        let logs = self.sweep_logs(&live);
        self.volumes.sweep();
        let files: Vec<String> = self
            .files
            .ids()
            .into_iter()
            .filter(|id| !live.contains(id))
            .collect();
        for id in &files {
            self.files.release(id);
        }
        let mut network = Vec::new();
        if let Some(net) = &self.network {
            network = net.sweep(&|owner| live.contains(owner)).await;
            for owner in &network {
                let _ = std::fs::remove_dir_all(self.net_dir.join(owner));
            }
        }
        if !(snapshots.is_empty() && logs == 0 && network.is_empty() && files.is_empty()) {
            tracing::info!(
                snapshots = snapshots.len(),
                logs,
                files = files.len(),
                network = network.len(),
                "removed leftovers of replicas that no longer exist"
            );
        }
        Ok(())
    }

    /// Removes the log files of replicas not in `live`; how many.
    fn sweep_logs(&self, live: &std::collections::HashSet<String>) -> usize {
        let Ok(dir) = std::fs::read_dir(&self.log_dir) else {
            return 0;
        };
        dir.flatten()
            .filter(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                name.split_once(".log")
                    .is_some_and(|(id, _)| !live.contains(id))
            })
            .filter(|e| std::fs::remove_file(e.path()).is_ok())
            .count()
    }
}
