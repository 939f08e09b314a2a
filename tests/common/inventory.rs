//! What a test server holds on the host, counted from the outside: its
//! containerd namespace's containers, tasks and active snapshots, the
//! replicas' network namespaces, the veths on its bridge, the bindings in
//! its nftables set, its cgroups and its log files; and, once it has
//! stopped, the addresses its store leases. Chaos and leak tests compare
//! these with what status says and with a baseline.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use super::server::{bridge_name, OrcaServer};

/// Counts of what replicas hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Inventory {
    pub containers: usize,
    pub tasks: usize,
    /// Active snapshots: the replicas' writable layers.
    pub snapshots: usize,
    pub netns: usize,
    pub veths: usize,
    /// Port bindings in the bridge's nftables set `bound`.
    pub bound: usize,
    /// Addresses in the isolation table's sets (each replica is in its
    /// project's).
    pub isolated: usize,
    pub cgroups: usize,
    pub log_files: usize,
}

impl Inventory {
    /// The same count everywhere (each replica holds one of each).
    pub fn each(n: usize) -> Inventory {
        Inventory {
            containers: n,
            tasks: n,
            snapshots: n,
            netns: n,
            veths: n,
            bound: n,
            isolated: n,
            cgroups: n,
            log_files: n,
        }
    }
}

fn lines(cmd: &mut Command) -> Vec<String> {
    let out = cmd.output().expect("run a counting command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn entries(dir: &Path, dirs_only: bool) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !dirs_only || e.file_type().is_ok_and(|t| t.is_dir()))
                .count()
        })
        .unwrap_or(0)
}

/// Elements of the nftables sets `nft -j list args...` shows.
fn set_elements(args: &[&str]) -> usize {
    let out = Command::new("nft")
        .arg("-j")
        .arg("list")
        .args(args)
        .output()
        .expect("run nft");
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("nft's JSON");
    v["nftables"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["set"]["elem"].as_array())
        .map(Vec::len)
        .sum()
}

/// The directory of replicas' network namespaces of a server with
/// `[cluster] name = "test"` on containerd namespace `namespace`.
pub fn netns_dir(namespace: &str) -> PathBuf {
    PathBuf::from(format!("/run/orca/test-{namespace}/netns"))
}

/// The replicas' cgroups under `/<namespace>`: on cgroup v2 the one
/// tree's, on v1 the most any of the controllers orca limits holds.
fn cgroups(namespace: &str) -> usize {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        return entries(&root.join(namespace), true);
    }
    ["memory", "cpu", "pids"]
        .iter()
        .map(|c| entries(&root.join(c).join(namespace), true))
        .max()
        .unwrap_or(0)
}

/// Counts what `server` holds now.
pub fn of(server: &OrcaServer) -> Inventory {
    let socket = server.socket.to_string_lossy().to_string();
    let ns = &server.namespace;
    let ctr = |args: &[&str]| lines(&mut super::host::ctr(&socket, ns, args));
    let bridge = bridge_name(ns);
    Inventory {
        containers: ctr(&["containers", "ls", "-q"]).len(),
        tasks: ctr(&["tasks", "ls", "-q"]).len(),
        snapshots: ctr(&["snapshots", "ls"])
            .iter()
            .filter(|l| l.split_whitespace().last() == Some("Active"))
            .count(),
        netns: entries(&netns_dir(ns), false),
        veths: lines(Command::new("ip").args(["-o", "link", "show", "master", &bridge])).len(),
        bound: set_elements(&["set", "bridge", &network::nft::table_name(&bridge), "bound"]),
        isolated: set_elements(&["table", "ip", &network::nft::isolation_table(&bridge)]),
        cgroups: cgroups(ns),
        log_files: entries(&server.dir.path().join("data/logs"), false),
    }
}

/// The lists behind the counts, for a failure's message.
pub fn listing(server: &OrcaServer) -> String {
    let socket = server.socket.to_string_lossy().to_string();
    let ns = &server.namespace;
    let ctr = |args: &[&str]| lines(&mut super::host::ctr(&socket, ns, args)).join("\n");
    format!(
        "containers:\n{}\nsnapshots:\n{}\nnetns: {:?}",
        ctr(&["containers", "ls", "-q"]),
        ctr(&["snapshots", "ls"]),
        std::fs::read_dir(netns_dir(ns))
            .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            .unwrap_or_default()
    )
}

/// Addresses leased in a stopped server's store.
pub fn leases(server: &OrcaServer) -> usize {
    assert!(server.pid().is_none(), "the server must be stopped first");
    let db = sled::Config::new()
        .path(server.dir.path().join("data/db"))
        .open()
        .expect("open the stopped server's store");
    let n = db.open_tree("ipam").expect("the ipam tree").len();
    drop(db);
    n
}

/// The open file descriptors and resident memory (KiB) of process `pid`.
pub fn process(pid: u32) -> (usize, u64) {
    let fds = entries(Path::new(&format!("/proc/{pid}/fd")), false);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    (fds, rss)
}
