//! nftables, through the `nft` command in one typed call: a script in,
//! `{status, stdout, stderr}` out on failure. Each ruleset orca owns lives
//! in a table of its own and is replaced atomically, so applying it again at
//! start is idempotent.

use std::process::Stdio;

use tokio::io::AsyncWriteExt;

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// Runs `nft -f -` with `script` as one transaction.
pub async fn apply(script: &str) -> Result<()> {
    let mut child = tokio::process::Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetworkError::Nft {
            status: "not started".into(),
            stdout: String::new(),
            stderr: format!("cannot run nft (apt-get install nftables): {e}"),
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .await
            .map_err(|e| NetworkError::Nft {
                status: "stdin".into(),
                stdout: String::new(),
                stderr: e.to_string(),
            })?;
    }
    let out = child
        .wait_with_output()
        .await
        .map_err(|e| NetworkError::Nft {
            status: "wait".into(),
            stdout: String::new(),
            stderr: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetworkError::Nft {
            status: out.status.to_string(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// True if the table `family name` exists.
pub async fn exists(family: &str, name: &str) -> bool {
    tokio::process::Command::new("nft")
        .args(["list", "table", family, name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|s| s.success())
}

/// The name of the tables orca keeps for `bridge` (one per family).
pub fn table_name(bridge: &str) -> String {
    format!(
        "orca_{}",
        bridge.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// The name of the ip-family table of project isolation for `bridge`.
pub fn isolation_table(bridge: &str) -> String {
    format!("{}_iso", table_name(bridge))
}

/// The host's rules for the bridge (ip family): outbound NAT, so replicas
/// reach registries and the internet through the host's uplink; and the
/// host's own ports closed to replicas, except DNS on the bridge address,
/// TCP `open_ports` (the ingress) and ping. Replicas of other nodes are
/// replicas too: traffic from the cluster's subnet that arrives on any
/// link (the overlay device, or the LAN with `host-gw` routes) meets the
/// same rule, so none opens this node's API, gRPC or sshd. Replies to what the host opened
/// (health checks, the ingress's upstream connections) pass by conntrack.
/// With the VXLAN overlay on UDP `overlay_port`, its outer packets skip
/// conntrack: the node tracks the replicas' connections inside them, and a
/// second lookup per packet at each end would buy nothing.
pub fn host_script(
    bridge: &str,
    subnet: Ipv4Net,
    cluster: Ipv4Net,
    open_ports: &[u16],
    overlay_port: Option<u16>,
) -> String {
    let t = table_name(bridge);
    let untracked = match overlay_port {
        None => String::new(),
        Some(port) => format!(
            "\tchain overlay_in {{\n\
             \t\ttype filter hook prerouting priority raw; policy accept;\n\
             \t\tudp dport {port} notrack\n\
             \t}}\n\
             \tchain overlay_out {{\n\
             \t\ttype filter hook output priority raw; policy accept;\n\
             \t\tudp dport {port} notrack\n\
             \t}}\n"
        ),
    };
    let open = if open_ports.is_empty() {
        String::new()
    } else {
        let ports: Vec<String> = open_ports.iter().map(u16::to_string).collect();
        format!("\t\ttcp dport {{ {} }} accept\n", ports.join(", "))
    };
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} ip daddr != {cluster} masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" accept\n\
         \t\toifname \"{bridge}\" ct state established,related accept\n\
         \t}}\n\
         \tchain input {{\n\
         \t\ttype filter hook input priority filter; policy accept;\n\
         \t\tiifname \"lo\" accept\n\
         \t\tiifname != \"{bridge}\" ip saddr != {cluster} accept\n\
         \t\tct state established,related accept\n\
         \t\tudp dport 53 accept\n\
         \t\ttcp dport 53 accept\n\
         {open}\
         \t\ticmp type echo-request accept\n\
         \t\tdrop\n\
         \t}}\n\
         {untracked}\
         }}\n"
    )
}

/// Removes the tables of `bridge`, if there are any.
pub fn delete_script(bridge: &str) -> String {
    let t = table_name(bridge);
    let i = isolation_table(bridge);
    let p = crate::ports::ports_table(bridge);
    format!(
        "table ip {t} {{}}\ndelete table ip {t}\n\
         table ip {i} {{}}\ndelete table ip {i}\n\
         table ip {p} {{}}\ndelete table ip {p}\n\
         table bridge {t} {{}}\ndelete table bridge {t}\n"
    )
}

/// A replica's port on the bridge: the host end of its veth, the hardware
/// address of the end inside, and its IPv4 address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    pub port: String,
    pub mac: [u8; 6],
    pub ip: std::net::Ipv4Addr,
}

/// What tells a routed hairpin: a frame to the bridge's own MAC (the
/// gateway's) for another address of the subnet would be routed by the host
/// straight back into the bridge. Replicas reach each other on the bridge
/// itself, so such a frame is dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hairpin {
    pub bridge_mac: [u8; 6],
    pub gateway: std::net::Ipv4Addr,
    pub subnet: Ipv4Net,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_text(mac: &[u8; 6]) -> String {
    let parts: Vec<String> = mac.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

/// Port bindings on the bridge (bridge family, before anything else sees
/// a frame): what comes in through a replica's port must carry that
/// replica's MAC and IPv4 address, and an ARP packet its MAC and IPv4 as
/// sender. Everything else from a replica's port is dropped: spoofed
/// sources, ARP answers for the gateway or another replica, IPv6 (router
/// advertisements, link-local), other ethertypes, and routed hairpins (see
/// [`Hairpin`]). Ports of no replica (other bridges' on this host) pass
/// untouched.
pub fn binding_script(bridge: &str, hairpin: &Hairpin, bindings: &[Binding]) -> String {
    let t = table_name(bridge);
    let Hairpin {
        bridge_mac,
        gateway,
        subnet,
    } = hairpin;
    let bridge_mac = mac_text(bridge_mac);
    let (ports, bound) = if bindings.is_empty() {
        (String::new(), String::new())
    } else {
        let ports: Vec<String> = bindings.iter().map(|b| format!("\"{}\"", b.port)).collect();
        let bound: Vec<String> = bindings
            .iter()
            .map(|b| format!("\"{}\" . {} . {}", b.port, mac_text(&b.mac), b.ip))
            .collect();
        (
            format!(" elements = {{ {} }};", ports.join(", ")),
            format!(" elements = {{ {} }};", bound.join(", ")),
        )
    };
    format!(
        "table bridge {t} {{}}\n\
         delete table bridge {t}\n\
         table bridge {t} {{\n\
         \t# bridge {bridge}\n\
         \tset ports {{ type ifname;{ports} }}\n\
         \tset bound {{ type ifname . ether_addr . ipv4_addr;{bound} }}\n\
         \tchain prerouting {{\n\
         \t\ttype filter hook prerouting priority -200; policy accept;\n\
         \t\tiifname != @ports accept\n\
         \t\tether daddr {bridge_mac} ip daddr {subnet} ip daddr != {gateway} drop\n\
         \t\tether type ip iifname . ether saddr . ip saddr @bound accept\n\
         \t\tether type arp iifname . ether saddr . arp saddr ip @bound \
         iifname . arp saddr ether . arp saddr ip @bound accept\n\
         \t\tdrop\n\
         \t}}\n\
         }}\n"
    )
}

/// Project isolation (ip family; the bridge hands its IPv4 traffic to
/// these hooks, see `links::call_iptables`): a replica opens connections to
/// the replicas of its own project, and to another project's only when
/// they belong to an `internal` service. Replies pass by conntrack, never
/// by the shape of a packet, so an internal service cannot open anything
/// into another project. Routed traffic between replicas (through the
/// gateway) meets the same rules. Replicas in no set yet (starting) open
/// nothing on the bridge. The nodes themselves (each node's overlay address
/// is its /24's network address, which no replica holds) reach every
/// replica, as a node reaches its own: their ingress and DNS serve all.
pub fn isolation_script(
    bridge: &str,
    subnet: Ipv4Net,
    cluster: Ipv4Net,
    projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
    internal: &[std::net::Ipv4Addr],
) -> String {
    let t = isolation_table(bridge);
    let elements = |ips: &[std::net::Ipv4Addr]| -> String {
        if ips.is_empty() {
            String::new()
        } else {
            let list: Vec<String> = ips.iter().map(|ip| ip.to_string()).collect();
            format!(" elements = {{ {} }};", list.join(", "))
        }
    };
    let mut sets = String::new();
    let mut rules = String::new();
    for (i, (project, ips)) in projects.iter().enumerate() {
        sets.push_str(&format!(
            "\t# project {project}\n\tset p{i} {{ type ipv4_addr;{} }}\n",
            elements(ips)
        ));
        rules.push_str(&format!("\t\tip saddr @p{i} ip daddr @p{i} accept\n"));
    }
    sets.push_str(&format!(
        "\tset internal {{ type ipv4_addr;{} }}\n",
        elements(internal)
    ));
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         {sets}\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter - 10; policy accept;\n\
         \t\toifname != \"{bridge}\" accept\n\
         \t\tct state established,related accept\n\
         {rules}\
         \t\tip daddr @internal accept\n\
         \t\tip saddr {cluster} ip saddr & 0.0.0.255 == 0.0.0.0 accept\n\
         \t\tip saddr {cluster} ip daddr {subnet} drop\n\
         \t}}\n\
         }}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_ruleset() {
        let mut projects = std::collections::BTreeMap::new();
        projects.insert(
            "shop".to_string(),
            vec!["10.88.0.2".parse().unwrap(), "10.88.0.3".parse().unwrap()],
        );
        projects.insert("blog".to_string(), vec![]);
        let s = isolation_script(
            "orca0",
            Ipv4Net::parse("10.88.0.0/24").unwrap(),
            Ipv4Net::parse("10.88.0.0/16").unwrap(),
            &projects,
            &["10.88.0.9".parse().unwrap()],
        );
        assert!(s.starts_with("table ip orca_orca0_iso {}\ndelete table ip orca_orca0_iso\n"));
        assert!(
            s.contains("set p1 { type ipv4_addr; elements = { 10.88.0.2, 10.88.0.3 }; }"),
            "{s}"
        );
        assert!(s.contains("set p0 { type ipv4_addr; }"), "{s}");
        assert!(s.contains("ip saddr @p1 ip daddr @p1 accept"));
        assert!(s.contains("set internal { type ipv4_addr; elements = { 10.88.0.9 }; }"));
        // Replies by conntrack, before any project rule; nothing by shape.
        let ct = s.find("ct state established,related accept").unwrap();
        assert!(ct < s.find("@p0").unwrap());
        assert!(
            !s.contains("tcp flags") && !s.contains("l4proto udp"),
            "{s}"
        );
        assert!(
            // From any replica of the cluster, whatever its node.
            s.ends_with("ip saddr 10.88.0.0/16 ip daddr 10.88.0.0/24 drop\n\t}\n}\n"),
            "{s}"
        );
    }

    #[test]
    fn bindings_pin_ports_to_their_addresses() {
        let hairpin = Hairpin {
            bridge_mac: [0x02, 0, 0, 0, 0, 1],
            gateway: "10.88.0.1".parse().unwrap(),
            subnet: Ipv4Net::parse("10.88.0.0/24").unwrap(),
        };
        let s = binding_script(
            "orca0",
            &hairpin,
            &[Binding {
                port: "ov0123456789".into(),
                mac: [0x02, 0x6f, 10, 88, 0, 2],
                ip: "10.88.0.2".parse().unwrap(),
            }],
        );
        assert!(s.starts_with("table bridge orca_orca0 {}\ndelete table bridge orca_orca0\n"));
        assert!(
            s.contains("set ports { type ifname; elements = { \"ov0123456789\" }; }"),
            "{s}"
        );
        assert!(
            s.contains("elements = { \"ov0123456789\" . 02:6f:0a:58:00:02 . 10.88.0.2 };"),
            "{s}"
        );
        assert!(
            s.contains("arp saddr ether . arp saddr ip @bound accept"),
            "{s}"
        );
        assert!(s.ends_with("\t\tdrop\n\t}\n}\n"), "{s}");
        assert!(
            s.contains(
                "ether daddr 02:00:00:00:00:01 ip daddr 10.88.0.0/24 ip daddr != 10.88.0.1 drop"
            ),
            "{s}"
        );
        let empty = binding_script("orca0", &hairpin, &[]);
        assert!(empty.contains("set ports { type ifname; }"), "{empty}");
    }

    #[test]
    fn host_rules_close_the_hosts_ports_but_dns_and_the_ingress() {
        let s = host_script(
            "orca0",
            Ipv4Net::parse("10.88.0.0/24").unwrap(),
            Ipv4Net::parse("10.88.0.0/16").unwrap(),
            &[80, 443],
            None,
        );
        assert!(s.starts_with("table ip orca_orca0 {}\ndelete table ip orca_orca0\n"));
        assert!(!s.contains("notrack"), "{s}");
        // The overlay's outer packets skip conntrack, both ways.
        let vx = host_script(
            "orca0",
            Ipv4Net::parse("10.88.0.0/24").unwrap(),
            Ipv4Net::parse("10.88.0.0/16").unwrap(),
            &[80],
            Some(8472),
        );
        assert!(vx.contains("hook prerouting priority raw"), "{vx}");
        assert!(vx.contains("hook output priority raw"), "{vx}");
        assert_eq!(vx.matches("udp dport 8472 notrack").count(), 2, "{vx}");
        // Replicas of other nodes see this node's replicas' own addresses.
        assert!(s.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/16 masquerade"));
        assert!(s.contains("udp dport 53 accept"));
        assert!(s.contains("tcp dport { 80, 443 } accept"), "{s}");
        // Other links are open, except to the cluster's replicas, which
        // meet the same rules as this node's own.
        assert!(s.contains("iifname \"lo\" accept"), "{s}");
        assert!(
            s.contains("iifname != \"orca0\" ip saddr != 10.88.0.0/16 accept"),
            "{s}"
        );
        assert!(!s.contains("iifname != \"orca0\" accept"), "{s}");
        assert_eq!(table_name("a-b.c"), "orca_a_b_c");
        assert!(delete_script("orca0").contains("delete table ip orca_orca0_iso"));
    }
}
