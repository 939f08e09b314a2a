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

/// The name of the table orca keeps for `bridge`.
pub fn table_name(bridge: &str) -> String {
    format!(
        "orca_{}",
        bridge.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    )
}

/// Outbound NAT: replicas reach registries and the internet through the
/// host's uplink, with their traffic masqueraded.
pub fn nat_script(bridge: &str, subnet: Ipv4Net) -> String {
    let t = table_name(bridge);
    format!(
        "table ip {t} {{}}\n\
         delete table ip {t}\n\
         table ip {t} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {subnet} ip daddr != {subnet} masquerade\n\
         \t}}\n\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tiifname \"{bridge}\" accept\n\
         \t\toifname \"{bridge}\" ct state established,related accept\n\
         \t}}\n\
         }}\n"
    )
}

/// Removes the tables of `bridge`, if there are any.
pub fn delete_script(bridge: &str) -> String {
    let t = table_name(bridge);
    format!(
        "table ip {t} {{}}\ndelete table ip {t}\ntable bridge {t} {{}}\ndelete table bridge {t}\n"
    )
}

/// Project isolation on the bridge, in the kernel: a replica reaches the
/// replicas of its own project, and another project's replicas only when
/// they belong to an `internal` service. The bridge family has no
/// connection tracking on every kernel, so replies from internal services
/// pass by shape: TCP segments that do not open a connection, and UDP.
/// Replicas in no set yet (starting) reach nobody on the bridge.
pub fn isolation_script(
    bridge: &str,
    subnet: Ipv4Net,
    projects: &std::collections::BTreeMap<String, Vec<std::net::Ipv4Addr>>,
    internal: &[std::net::Ipv4Addr],
) -> String {
    let t = table_name(bridge);
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
        "table bridge {t} {{}}\n\
         delete table bridge {t}\n\
         table bridge {t} {{\n\
         {sets}\
         \tchain forward {{\n\
         \t\ttype filter hook forward priority filter; policy accept;\n\
         \t\tether type != ip accept\n\
         {rules}\
         \t\tip daddr @internal accept\n\
         \t\tip saddr @internal tcp flags & (syn | ack) != syn accept\n\
         \t\tip saddr @internal meta l4proto udp accept\n\
         \t\tip saddr {subnet} ip daddr {subnet} drop\n\
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
            &projects,
            &["10.88.0.9".parse().unwrap()],
        );
        assert!(
            s.contains("set p1 { type ipv4_addr; elements = { 10.88.0.2, 10.88.0.3 }; }"),
            "{s}"
        );
        assert!(s.contains("set p0 { type ipv4_addr; }"), "{s}");
        assert!(s.contains("ip saddr @p1 ip daddr @p1 accept"));
        assert!(s.contains("set internal { type ipv4_addr; elements = { 10.88.0.9 }; }"));
        assert!(
            s.ends_with("ip saddr 10.88.0.0/24 ip daddr 10.88.0.0/24 drop\n\t}\n}\n"),
            "{s}"
        );
    }

    #[test]
    fn nat_ruleset_replaces_itself() {
        let s = nat_script("orca0", Ipv4Net::parse("10.88.0.0/24").unwrap());
        assert!(s.starts_with("table ip orca_orca0 {}\ndelete table ip orca_orca0\n"));
        assert!(s.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/24 masquerade"));
        assert_eq!(table_name("a-b.c"), "orca_a_b_c");
    }
}
