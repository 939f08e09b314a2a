//! Reading a container's cgroup directly: the limits runc applied, the OOM
//! kill counter, and removing the empty directories runc leaves behind.
//! Detects v1, hybrid (v1 controllers plus a `unified` mount) and v2 once,
//! from a root passed in, so tests can use a temp dir.

use std::path::{Path, PathBuf};

/// How cgroups are mounted on this host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// One hierarchy per controller.
    V1,
    /// v1 controllers plus an empty v2 hierarchy at `unified`.
    Hybrid,
    /// The unified hierarchy only.
    V2,
}

impl CgroupMode {
    /// Looks at `root` (normally `/sys/fs/cgroup`).
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            CgroupMode::V2
        } else if root.join("unified").is_dir() {
            CgroupMode::Hybrid
        } else {
            CgroupMode::V1
        }
    }
}

/// Reads cgroup files under a root.
#[derive(Debug, Clone)]
pub struct Cgroups {
    root: PathBuf,
    mode: CgroupMode,
}

impl Default for Cgroups {
    fn default() -> Self {
        Self::at("/sys/fs/cgroup")
    }
}

impl Cgroups {
    /// Cgroups mounted at `root`.
    pub fn at(root: impl Into<PathBuf>) -> Self {
        let root = root.into();
        let mode = CgroupMode::detect(&root);
        Self { root, mode }
    }

    /// The detected mode.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    fn dir(&self, controller: &str, cgroup: &str) -> PathBuf {
        let rel = cgroup.trim_start_matches('/');
        match self.mode {
            CgroupMode::V2 => self.root.join(rel),
            _ => self.root.join(controller).join(rel),
        }
    }

    /// The memory limit in bytes; `None` for unlimited.
    pub fn memory_limit(&self, cgroup: &str) -> std::io::Result<Option<u64>> {
        match self.mode {
            CgroupMode::V2 => {
                let s = read(&self.dir("", cgroup).join("memory.max"))?;
                Ok(s.trim().parse().ok())
            }
            _ => {
                let s = read(&self.dir("memory", cgroup).join("memory.limit_in_bytes"))?;
                // v1 reports "no limit" as a huge page-aligned number.
                Ok(s.trim().parse::<u64>().ok().filter(|v| *v < (1 << 62)))
            }
        }
    }

    /// CFS quota and period in microseconds; quota `None` for unlimited.
    pub fn cpu_quota(&self, cgroup: &str) -> std::io::Result<(Option<i64>, u64)> {
        match self.mode {
            CgroupMode::V2 => {
                let s = read(&self.dir("", cgroup).join("cpu.max"))?;
                let mut parts = s.split_whitespace();
                let quota = parts.next().and_then(|q| q.parse().ok());
                let period = parts.next().and_then(|p| p.parse().ok()).unwrap_or(100_000);
                Ok((quota, period))
            }
            _ => {
                let dir = self.dir("cpu", cgroup);
                let quota: i64 = read(&dir.join("cpu.cfs_quota_us"))?
                    .trim()
                    .parse()
                    .unwrap_or(-1);
                let period = read(&dir.join("cpu.cfs_period_us"))?
                    .trim()
                    .parse()
                    .unwrap_or(100_000);
                Ok(((quota > 0).then_some(quota), period))
            }
        }
    }

    /// How many processes the OOM killer has killed in this cgroup.
    pub fn oom_kills(&self, cgroup: &str) -> std::io::Result<u64> {
        let (file, key) = match self.mode {
            CgroupMode::V2 => (self.dir("", cgroup).join("memory.events"), "oom_kill"),
            _ => (
                self.dir("memory", cgroup).join("memory.oom_control"),
                "oom_kill",
            ),
        };
        let s = read(&file)?;
        Ok(s.lines()
            .filter_map(|l| l.split_once(' '))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse().ok())
            .unwrap_or(0))
    }

    /// Removes the cgroup's directories (and its parent's, when empty) in
    /// every hierarchy, ignoring what is already gone or still busy.
    pub fn remove(&self, cgroup: &str) {
        let rel = cgroup.trim_start_matches('/');
        let parent = Path::new(rel)
            .parent()
            .filter(|p| !p.as_os_str().is_empty());
        let hierarchies: Vec<PathBuf> = match self.mode {
            CgroupMode::V2 => vec![self.root.clone()],
            _ => std::fs::read_dir(&self.root)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| p.is_dir() && !p.is_symlink())
                        .collect()
                })
                .unwrap_or_default(),
        };
        for h in hierarchies {
            let _ = std::fs::remove_dir(h.join(rel));
            if let Some(p) = parent {
                // Fails while other containers of the namespace still run: fine.
                let _ = std::fs::remove_dir(h.join(p));
            }
        }
    }

    /// True if the cgroup's directory exists in the memory hierarchy.
    pub fn exists(&self, cgroup: &str) -> bool {
        self.dir("memory", cgroup).is_dir()
    }
}

fn read(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_and_reads_v1() {
        let root = tempfile::tempdir().unwrap();
        let mem = root.path().join("memory/orca/web-1");
        let cpu = root.path().join("cpu/orca/web-1");
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::write(mem.join("memory.limit_in_bytes"), "67108864\n").unwrap();
        std::fs::write(
            mem.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        )
        .unwrap();
        std::fs::write(cpu.join("cpu.cfs_quota_us"), "50000\n").unwrap();
        std::fs::write(cpu.join("cpu.cfs_period_us"), "100000\n").unwrap();
        let c = Cgroups::at(root.path());
        assert_eq!(c.mode(), CgroupMode::V1);
        assert_eq!(c.memory_limit("/orca/web-1").unwrap(), Some(64 << 20));
        assert_eq!(c.cpu_quota("/orca/web-1").unwrap(), (Some(50_000), 100_000));
        assert_eq!(c.oom_kills("/orca/web-1").unwrap(), 2);
        std::fs::remove_file(mem.join("memory.limit_in_bytes")).unwrap();
        std::fs::remove_file(mem.join("memory.oom_control")).unwrap();
        std::fs::remove_file(cpu.join("cpu.cfs_quota_us")).unwrap();
        std::fs::remove_file(cpu.join("cpu.cfs_period_us")).unwrap();
        c.remove("/orca/web-1");
        assert!(!mem.exists());
        assert!(!root.path().join("memory/orca").exists());
    }

    #[test]
    fn detects_and_reads_v2() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory\n").unwrap();
        let dir = root.path().join("orca/web-1");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory.max"), "max\n").unwrap();
        std::fs::write(dir.join("cpu.max"), "50000 100000\n").unwrap();
        std::fs::write(
            dir.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        )
        .unwrap();
        let c = Cgroups::at(root.path());
        assert_eq!(c.mode(), CgroupMode::V2);
        assert_eq!(c.memory_limit("/orca/web-1").unwrap(), None);
        assert_eq!(c.cpu_quota("/orca/web-1").unwrap(), (Some(50_000), 100_000));
        assert_eq!(c.oom_kills("/orca/web-1").unwrap(), 1);
    }
}
