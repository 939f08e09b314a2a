//! What each lab node's own containerd holds, asked of it directly with
//! `ctr` (not through orca): running replicas per node, a crash, a command
//! inside a replica, and the cleanup of every replica when the cluster is
//! dropped.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use super::LabCluster;

impl LabCluster {
    /// Node `i`'s tasks as its own containerd lists them: (id, PID,
    /// status).
    fn tasks(&self, i: usize) -> Vec<(String, Option<u32>, String)> {
        let out = super::super::run(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.lab.nodes[i].socket)
                .args(["-n", &self.namespaces[i], "tasks", "ls"]),
        );
        out.lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let field = |n: usize| f.get(n).copied().unwrap_or_default().to_string();
                (field(0), field(1).parse().ok(), field(2))
            })
            .collect()
    }

    /// The PIDs of `service`'s running replicas in node `i`'s containerd.
    pub fn pids_on(&self, i: usize, service: &str) -> Vec<u32> {
        self.tasks(i)
            .into_iter()
            .filter(|(id, _, status)| id.starts_with(&format!("{service}.")) && status == "RUNNING")
            .filter_map(|(_, pid, _)| pid)
            .collect()
    }

    /// Every task of `service` in node `i`'s containerd, running or not:
    /// (id, status), sorted.
    pub fn tasks_of(&self, i: usize, service: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .tasks(i)
            .into_iter()
            .filter(|(id, _, _)| id.starts_with(&format!("{service}.")))
            .map(|(id, _, status)| (id, status))
            .collect();
        out.sort();
        out
    }

    /// The replicas of `service` on every node, summed.
    pub fn total(&self, service: &str) -> usize {
        self.spread(service).iter().sum()
    }

    /// The replicas of `service` running in node `i`'s own containerd.
    pub fn running_on(&self, i: usize, service: &str) -> usize {
        self.tasks(i)
            .iter()
            .filter(|(id, _, status)| id.starts_with(&format!("{service}.")) && status == "RUNNING")
            .count()
    }

    /// SIGKILL to every replica of `service` in node `i`'s containerd, as
    /// a crash would.
    pub fn kill_replicas(&self, i: usize, service: &str) {
        let node = &self.lab.nodes[i];
        let out = super::super::run(
            Command::new("ctr")
                .arg("--address")
                .arg(&node.socket)
                .args(["-n", &self.namespaces[i], "tasks", "ls", "-q"]),
        );
        for id in out
            .lines()
            .filter(|l| l.starts_with(&format!("{service}.")))
        {
            super::super::run(
                Command::new("ctr")
                    .arg("--address")
                    .arg(&node.socket)
                    .args([
                        "-n",
                        &self.namespaces[i],
                        "tasks",
                        "kill",
                        "-s",
                        "SIGKILL",
                        id,
                    ]),
            );
        }
    }

    /// Runs `argv` inside replica `id` on node `i` (`ctr tasks exec`); its
    /// output, whatever its exit code.
    pub fn exec(&self, i: usize, id: &str, argv: &[&str]) -> String {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.lab.nodes[i].socket)
            .args(["-n", &self.namespaces[i], "tasks", "exec", "--exec-id"])
            .arg(format!("t{}", super::super::rand_u32()))
            .arg(id)
            .args(argv)
            .output()
            .unwrap();
        format!(
            "{}{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            if out.status.success() {
                String::new()
            } else {
                format!("[exit {:?}]", out.status.code())
            }
        )
    }

    /// What node `i` holds for replicas: (containers, tasks, network
    /// namespaces, veths on its bridge), each counted on its own.
    pub fn holdings(&self, i: usize) -> (usize, usize, usize, usize) {
        let node = &self.lab.nodes[i];
        let ctr = |what: &str| {
            super::super::run(
                Command::new("ctr")
                    .arg("--address")
                    .arg(&node.socket)
                    .args(["-n", &self.namespaces[i], what, "ls", "-q"]),
            )
            .lines()
            .filter(|l| !l.trim().is_empty())
            .count()
        };
        let netns_dir = self.replica_netns(i, "x");
        let netns = std::fs::read_dir(netns_dir.parent().unwrap())
            .map(|d| d.count())
            .unwrap_or(0);
        let veths = super::super::run(
            node.nsenter("ip")
                .args(["-o", "link", "show", "master", "orca0"]),
        )
        .lines()
        .count();
        (ctr("containers"), ctr("tasks"), netns, veths)
    }

    /// Node `i`'s containerd namespace.
    pub fn containerd_namespace(&self, i: usize) -> String {
        self.namespaces[i].clone()
    }

    /// The network namespace of replica `id` on node `i`, as orca pinned it.
    pub fn replica_netns(&self, i: usize, id: &str) -> PathBuf {
        PathBuf::from("/run/orca")
            .join(format!("lab-{}", self.namespaces[i]))
            .join("netns")
            .join(id)
    }

    /// Per node, the replicas of `service` running there.
    pub fn spread(&self, service: &str) -> Vec<usize> {
        (0..self.lab.nodes.len())
            .map(|i| self.running_on(i, service))
            .collect()
    }

    /// Waits (up to 90 s) until the spread of `service` over the nodes
    /// (see [`LabCluster::spread`]) is as `ok` says.
    pub async fn until_spread(&self, service: &str, what: &str, ok: impl Fn(&[usize]) -> bool) {
        super::super::eventually(what, Duration::from_secs(90), async || {
            let s = self.spread(service);
            if ok(&s) {
                Ok(())
            } else {
                Err(format!("{s:?}"))
            }
        })
        .await
    }
}

impl Drop for LabCluster {
    fn drop(&mut self) {
        Self::end(&mut self.server, nix::sys::signal::Signal::SIGKILL);
        // A failed test shows what every node said.
        if std::thread::panicking() {
            for i in 0..self.lab.nodes.len() {
                eprintln!("---- node {i}'s log ----\n{}", self.log(i));
            }
        }
        for a in self.agents.iter_mut().chain(&mut self.etcd) {
            Self::end(a, nix::sys::signal::Signal::SIGKILL);
        }
        // Every replica of every node, by its own containerd.
        for (i, node) in self.lab.nodes.iter().enumerate() {
            let ctr = |args: &[&str]| {
                Command::new("ctr")
                    .arg("--address")
                    .arg(&node.socket)
                    .args(["-n", &self.namespaces[i]])
                    .args(args)
                    .output()
            };
            let Ok(out) = ctr(&["containers", "ls", "-q"]) else {
                continue;
            };
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            }
            std::thread::sleep(Duration::from_millis(300));
            for id in String::from_utf8_lossy(&out.stdout).lines() {
                let _ = ctr(&["tasks", "rm", "-f", id]);
                let _ = ctr(&["containers", "rm", id]);
            }
            // The replicas' network namespaces orca pinned.
            let netns = PathBuf::from("/run/orca")
                .join(format!("lab-{}", self.namespaces[i]))
                .join("netns");
            if let Ok(entries) = std::fs::read_dir(&netns) {
                for e in entries.flatten() {
                    let _ = nix::mount::umount2(&e.path(), nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_file(e.path());
                }
            }
            let _ = std::fs::remove_dir_all(netns.parent().unwrap());
        }
    }
}

/// The versions of a service's running replicas (from its status JSON),
/// sorted.
pub fn running_versions(service: &serde_json::Value) -> Vec<u64> {
    let mut v: Vec<u64> = service["instances"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["state"] == "running")
        .filter_map(|i| i["version"].as_u64())
        .collect();
    v.sort();
    v
}
