//! Published ports in the kernel: one nftables table per bridge that
//! DNATs a node's published ports to ready replicas, spread at random per
//! connection (per flow for UDP). Mesh ports forward to replicas on any
//! node, masqueraded to the node's own address when the replica is
//! elsewhere (the reply must come back through this node); host ports
//! forward to this node's replicas only, the client's address kept.
//! Connections the host itself opens (to loopback too) are published as
//! well. When a replica leaves a UDP port, its conntrack entries go, so a
//! client's next packet picks another replica.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// `tcp` or `udp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One published port and where it goes, as the server sees the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRule {
    pub published: u16,
    pub protocol: Protocol,
    /// Forwards to replicas on any node (else only to this node's own).
    pub mesh: bool,
    /// Accept only on this address of the node.
    #[serde(default)]
    pub host_ip: Option<Ipv4Addr>,
    /// The replicas' port.
    pub target: u16,
    /// The service, for people reading the ruleset.
    pub service: String,
    /// Ready replicas: address and the node that runs each.
    pub backends: Vec<(Ipv4Addr, String)>,
}

/// The ct mark of connections a mesh port sends to another node.
const MESH_MARK: u32 = 0x6f72_6361;

/// The name of the published-ports table for `bridge`.
pub fn ports_table(bridge: &str) -> String {
    format!("{}_ports", crate::nft::table_name(bridge))
}

/// The addresses of `rule` that `node` forwards to.
fn targets(rule: &PortRule, node: &str) -> Vec<Ipv4Addr> {
    let mut ips: Vec<Ipv4Addr> = rule
        .backends
        .iter()
        .filter(|(_, n)| rule.mesh || n == node)
        .map(|(ip, _)| *ip)
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

/// The ruleset of `node`'s published ports on `bridge` (whose replicas
/// are in `subnet`): replaces the table whole.
pub fn ports_script(
    bridge: &str,
    subnet: crate::Ipv4Net,
    node: &str,
    rules: &[PortRule],
) -> String {
    let t = ports_table(bridge);
    let mut dnat = String::new();
    for rule in rules {
        let ips = targets(rule, node);
        if ips.is_empty() {
            continue;
        }
        let daddr = match rule.host_ip {
            Some(ip) => format!("ip daddr {ip}"),
            None => "fib daddr type local".to_string(),
        };
        let to = if ips.len() == 1 {
            format!("{}:{}", ips[0], rule.target)
        } else {
            let entries: Vec<String> = ips
                .iter()
                .enumerate()
                .map(|(i, ip)| format!("{i} : {ip} . {}", rule.target))
                .collect();
            format!(
                "numgen random mod {} map {{ {} }}",
                ips.len(),
                entries.join(", ")
            )
        };
        let mark = if rule.mesh {
            format!("ct mark set {MESH_MARK:#x} ")
        } else {
            String::new()
        };
        dnat.push_str(&format!(
            "\t\t{daddr} {proto} dport {port} {mark}dnat ip to {to} comment \"{service}\"\n",
            proto = rule.protocol.as_str(),
            port = rule.published,
            service = rule.service,
        ));
    }
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain published {{\n\
         {dnat}\
         \t}}\n\
         \tchain prerouting {{\n\
         \t\ttype nat hook prerouting priority dstnat; policy accept;\n\
         \t\tjump published\n\
         \t}}\n\
         \tchain output {{\n\
         \t\ttype nat hook output priority -100; policy accept;\n\
         \t\tjump published\n\
         \t}}\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tct status dnat ip saddr 127.0.0.0/8 masquerade\n\
         \t\tct mark {MESH_MARK:#x} ip daddr != {subnet} masquerade\n\
         \t}}\n\
         }}\n"
    )
}

/// The UDP flows to drop after `old` became `new` on `node`: each
/// (replica address, target port) that left a UDP port.
pub fn left_udp(old: &[PortRule], new: &[PortRule], node: &str) -> Vec<(Ipv4Addr, u16)> {
    let flows = |rules: &[PortRule]| -> BTreeSet<(Ipv4Addr, u16, u16)> {
        rules
            .iter()
            .filter(|r| r.protocol == Protocol::Udp)
            .flat_map(|r| {
                targets(r, node)
                    .into_iter()
                    .map(move |ip| (ip, r.target, r.published))
            })
            .collect()
    };
    let now = flows(new);
    let mut out: Vec<(Ipv4Addr, u16)> = flows(old)
        .into_iter()
        .filter(|f| !now.contains(f))
        .map(|(ip, target, _)| (ip, target))
        .collect();
    out.dedup();
    out
}

/// Deletes the conntrack entries of UDP flows answered by `ip`:`port`
/// (the `conntrack` tool; none found is no error).
pub async fn forget_udp(ip: Ipv4Addr, port: u16) -> crate::error::Result<()> {
    let out = tokio::process::Command::new("conntrack")
        .args(["-D", "-p", "udp", "--reply-src"])
        .arg(ip.to_string())
        .args(["--reply-port-src", &port.to_string()])
        .output()
        .await
        .map_err(|e| crate::NetworkError::Nft {
            status: "not started".into(),
            stdout: String::new(),
            stderr: format!("cannot run conntrack (apt-get install conntrack): {e}"),
        })?;
    // 1: no entry matched.
    if out.status.success() || out.status.code() == Some(1) {
        Ok(())
    } else {
        Err(crate::NetworkError::Nft {
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(mesh: bool, protocol: Protocol, backends: &[(&str, &str)]) -> PortRule {
        PortRule {
            published: 5353,
            protocol,
            mesh,
            host_ip: None,
            target: 53,
            service: "dns".into(),
            backends: backends
                .iter()
                .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
                .collect(),
        }
    }

    #[test]
    fn mesh_spreads_over_every_node_and_host_keeps_to_its_own() {
        let subnet = crate::Ipv4Net::parse("10.88.0.0/24").unwrap();
        let backends = [("10.88.0.5", "n1"), ("10.88.1.7", "n2")];
        let s = ports_script(
            "orca0",
            subnet,
            "n1",
            &[rule(true, Protocol::Udp, &backends)],
        );
        assert!(
            s.contains("fib daddr type local udp dport 5353 ct mark set 0x6f726361 dnat ip to numgen random mod 2 map { 0 : 10.88.0.5 . 53, 1 : 10.88.1.7 . 53 }"),
            "{s}"
        );
        let s = ports_script(
            "orca0",
            subnet,
            "n1",
            &[rule(false, Protocol::Tcp, &backends)],
        );
        assert!(s.contains("tcp dport 5353 dnat ip to 10.88.0.5:53"), "{s}");
        // A host port on a node without a replica: not published there.
        let s = ports_script(
            "orca0",
            subnet,
            "n3",
            &[rule(false, Protocol::Tcp, &backends)],
        );
        assert!(!s.contains("dport 5353"), "{s}");
    }

    #[test]
    fn replicas_leaving_a_udp_port_lose_their_flows() {
        let before = [rule(
            true,
            Protocol::Udp,
            &[("10.88.0.5", "n1"), ("10.88.1.7", "n2")],
        )];
        let after = [rule(true, Protocol::Udp, &[("10.88.1.7", "n2")])];
        assert_eq!(
            left_udp(&before, &after, "n1"),
            vec![("10.88.0.5".parse().unwrap(), 53)]
        );
        assert!(left_udp(&after, &before, "n1").is_empty());
        let tcp = [rule(true, Protocol::Tcp, &[("10.88.0.5", "n1")])];
        assert!(
            left_udp(&tcp, &[], "n1").is_empty(),
            "TCP flows are left alone"
        );
    }
}
