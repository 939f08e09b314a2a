//! What the cross-node lab tests look at and do: a node's peer routes and
//! overlay entries (through iproute2 in its namespace), and a pinned pair
//! of a web replica and a client replica that fetches its page.

use std::process::Command;
use std::time::Duration;

use serde_json::json;

use super::LabCluster;

/// `ip -n NETNS args...` on node `i`, or another tool of iproute2.
pub fn iproute(c: &LabCluster, i: usize, tool: &str, args: &[&str]) -> String {
    super::super::run(
        Command::new(tool)
            .args(["-n", &c.lab.nodes[i].netns])
            .args(args),
    )
}

/// The peer routes of node `i` (orca's protocol 111).
pub fn peer_routes(c: &LabCluster, i: usize) -> String {
    iproute(c, i, "ip", &["route", "show", "proto", "111"])
}

/// Node `i`'s overlay entries: neighbours and FDB of its VXLAN device.
pub fn overlay_entries(c: &LabCluster, i: usize) -> String {
    format!(
        "{}{}",
        iproute(c, i, "ip", &["neigh", "show", "dev", "orca0.vx"]),
        iproute(c, i, "bridge", &["fdb", "show", "dev", "orca0.vx"])
    )
}

/// The VTEP MAC of the node with `subnet` (like 10.88.1.0/24), as `ip`
/// prints it.
pub fn vtep_mac(subnet: &str) -> String {
    let o: Vec<u8> = subnet
        .trim_end_matches("/24")
        .split('.')
        .map(|x| x.parse().unwrap())
        .collect();
    format!("0e:6f:76:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2])
}

/// The ifindex of node `i`'s overlay device, if it has one.
pub fn vxlan_index(c: &LabCluster, i: usize) -> Option<String> {
    let out = iproute(c, i, "ip", &["-o", "link", "show"]);
    out.lines()
        .find(|l| l.contains(" orca0.vx:"))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}

/// Deploys `web` pinned to node `web_on` and `client` pinned to node
/// `client_on`, and waits until both run there: the client's replica id.
pub async fn web_and_client(c: &LabCluster, web_on: usize, client_on: usize) -> String {
    let image = c.image("web:v1");
    c.deploy(json!([
        { "name": "web", "image": image, "replicas": 1, "port": 8080,
          "placement": { "node": format!("n{web_on}") } },
        { "name": "client", "image": image, "replicas": 1,
          "placement": { "node": format!("n{client_on}") } },
    ]));
    let only_on =
        |i: usize| move |s: &[usize]| s.iter().enumerate().all(|(n, k)| *k == usize::from(n == i));
    c.until_spread("web", "web placed", only_on(web_on)).await;
    c.until_spread("client", "client placed", only_on(client_on))
        .await;
    c.service("client")["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Waits until replica `client` on node `i` gets web's page from `url`.
pub async fn until_page(c: &LabCluster, i: usize, client: &str, url: &str, what: &str) {
    super::super::eventually(what, Duration::from_secs(30), async || {
        let page = c.exec(i, client, &["timeout", "3", "wget", "-q", "-O", "-", url]);
        if page.contains("web v1") {
            Ok(())
        } else {
            Err(page)
        }
    })
    .await;
}
