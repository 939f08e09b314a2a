//! Volumes in the lab: `orca volume mv` inside node 0's namespace.

use super::LabCluster;

impl LabCluster {
    /// `orca volume mv VOLUME --to NODE`, which must succeed: its answer.
    #[allow(dead_code)]
    pub fn move_volume(&self, volume: &str, to: &str) -> serde_json::Value {
        let out = self.orca(&["volume", "mv", volume, "--to", to, "--output", "json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }
}
