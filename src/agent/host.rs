//! What a node agent reads off its host: the CPU cores and memory it
//! offers, and the resolvers its replicas can reach.

use super::Capacity;

/// The host's resolvers that a replica can reach (loopback ones cannot be
/// reached from a replica's namespace).
pub fn resolv_conf() -> String {
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let mut out = String::new();
    for line in host.lines() {
        let l = line.trim();
        if let Some(ns) = l.strip_prefix("nameserver") {
            let ns = ns.trim();
            if ns.starts_with("127.") || ns == "::1" {
                continue;
            }
            out.push_str(&format!("nameserver {ns}\n"));
        } else if l.starts_with("search") || l.starts_with("options") {
            out.push_str(l);
            out.push('\n');
        }
    }
    out
}

/// CPU cores and memory of this host.
pub fn capacity() -> Capacity {
    let cpu = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let memory_bytes = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0);
    Capacity { cpu, memory_bytes }
}
