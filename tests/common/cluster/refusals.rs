//! Agents the server turns away, run to their end: a refused join, a
//! node refused again, an impostor.

use std::process::{Child, Stdio};
use std::time::Duration;

use super::{node_id, LabCluster};

impl LabCluster {
    /// Runs node `i`'s agent to its end (a refused join): exit code, log.
    pub fn agent_refused(&self, i: usize, token: &str) -> (Option<i32>, String) {
        let join = format!("{}:6881", self.lab.nodes[0].address);
        let child = self.spawn(i, &["agent", "--join", &join, "--token", token]);
        self.to_end(i, child)
    }

    /// Runs node `i`'s agent, joined before (no token), to its end: exit
    /// code, log.
    pub fn agent_refused_again(&self, i: usize) -> (Option<i32>, String) {
        let join = format!("{}:6881", self.lab.nodes[0].address);
        let child = self.spawn(i, &["agent", "--join", &join]);
        self.to_end(i, child)
    }

    /// Waits (30 s at most) for node `i`'s agent `child` to end: exit
    /// code, log.
    pub(super) fn to_end(&self, i: usize, mut child: Child) -> (Option<i32>, String) {
        for _ in 0..300 {
            if let Ok(Some(status)) = child.try_wait() {
                return (status.code(), self.log(i));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("the agent did not give up; log:\n{}", self.log(i));
    }

    /// Runs an agent on node `i` that claims to be node `id` (its own data
    /// dir, so it joins afresh) to its end: exit code and log.
    pub fn agent_refused_as(&self, i: usize, id: &str, token: &str) -> (Option<i32>, String) {
        let config = std::fs::read_to_string(self.config_path(i))
            .unwrap()
            .replace(
                &format!("id = \"{}\"", node_id(i)),
                &format!("id = \"{id}\""),
            )
            .replace(
                &self.data_dir(i).display().to_string(),
                &self
                    .dir
                    .path()
                    .join(format!("impostor{i}"))
                    .display()
                    .to_string(),
            );
        let path = self.dir.path().join(format!("impostor{i}.toml"));
        std::fs::write(&path, config).unwrap();
        let log_path = self.dir.path().join(format!("impostor{i}.log"));
        let join = format!("{}:6881", self.lab.nodes[0].address);
        let out = self.lab.nodes[i]
            .nsenter(super::super::orca_bin())
            .args(["agent", "--join", &join, "--token", token, "--config"])
            .arg(&path)
            .env_remove("ORCA_TOKEN")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .status()
            .unwrap();
        (
            out.code(),
            std::fs::read_to_string(log_path).unwrap_or_default(),
        )
    }
}
