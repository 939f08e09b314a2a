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

/// Removes the table of `bridge`, if there is one.
pub fn delete_script(bridge: &str) -> String {
    let t = table_name(bridge);
    format!("table ip {t} {{}}\ndelete table ip {t}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nat_ruleset_replaces_itself() {
        let s = nat_script("orca0", Ipv4Net::parse("10.88.0.0/24").unwrap());
        assert!(s.starts_with("table ip orca_orca0 {}\ndelete table ip orca_orca0\n"));
        assert!(s.contains("ip saddr 10.88.0.0/24 ip daddr != 10.88.0.0/24 masquerade"));
        assert_eq!(table_name("a-b.c"), "orca_a_b_c");
    }
}
