//! Replicas of different nodes reach each other by their own addresses and
//! by name, without NAT in between, over either backend: the VXLAN overlay
//! (neighbour, FDB entry and onlink route per peer, MTU 50 below the LAN's)
//! or `host-gw` routes. A node's entries go with it. Every node's ingress
//! and DNS reach replicas on the others.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::LabCluster;
use serde_json::json;

/// `ip -n NETNS args...` on node `i`, or another tool of iproute2.
fn iproute(c: &LabCluster, i: usize, tool: &str, args: &[&str]) -> String {
    common::run(
        Command::new(tool)
            .args(["-n", &c.lab.nodes[i].netns])
            .args(args),
    )
}

/// The peer routes of node `i` (orca's protocol 111).
fn peer_routes(c: &LabCluster, i: usize) -> String {
    iproute(c, i, "ip", &["route", "show", "proto", "111"])
}

/// Node `i`'s overlay entries: neighbours and FDB of its VXLAN device.
fn overlay_entries(c: &LabCluster, i: usize) -> String {
    format!(
        "{}{}",
        iproute(c, i, "ip", &["neigh", "show", "dev", "orca0.vx"]),
        iproute(c, i, "bridge", &["fdb", "show", "dev", "orca0.vx"])
    )
}

/// The VTEP MAC of the node with `subnet` (like 10.88.1.0/24), as `ip`
/// prints it.
fn vtep_mac(subnet: &str) -> String {
    let o: Vec<u8> = subnet
        .trim_end_matches("/24")
        .split('.')
        .map(|x| x.parse().unwrap())
        .collect();
    format!("0e:6f:76:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reaches_another_nodes_replicas_over_vxlan() {
    reach_across("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reaches_another_nodes_replicas_over_host_gw() {
    reach_across("backend = \"host-gw\"").await;
}

/// The cross-node test on a lab whose nodes' [network] has `network`.
async fn reach_across(network: &str) {
    let Some(env) = common::env() else { return };
    let vxlan = !network.contains("host-gw");
    let c = LabCluster::start_with(&env, 3, "", network).await;
    let image = c.image("web:v1");
    c.deploy(json!([
        { "name": "web", "image": image, "replicas": 1, "port": 8080, "placement": { "node": "n1" } },
        { "name": "near", "image": image, "replicas": 1, "port": 8080, "placement": { "node": "n2" } },
        { "name": "client", "image": image, "replicas": 1, "placement": { "node": "n2" } },
        { "name": "shared", "image": image, "replicas": 1, "port": 8080, "internal": true,
          "placement": { "node": "n1" } },
        { "name": "stranger", "project": "blog", "image": image, "replicas": 1,
          "placement": { "node": "n2" } },
    ]));
    c.until_spread("web", "web on n1", |s| s == [0, 1, 0]).await;
    c.until_spread("client", "client on n2", |s| s == [0, 0, 1])
        .await;
    c.until_spread("near", "near on n2", |s| s == [0, 0, 1])
        .await;
    let ip_of = |service: &str| {
        c.service(service)["instances"][0]["ip"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (web, near) = (ip_of("web"), ip_of("near"));
    let client = c.service("client")["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let client_ip = ip_of("client");
    let subnet = |id: &str| c.node(id).unwrap()["subnet"].as_str().unwrap().to_string();
    let (n0, n1, n2) = (subnet("n0"), subnet("n1"), subnet("n2"));
    let prefix = |net: &str| net.replace(".0/24", ".");
    assert!(
        web.starts_with(&prefix(&n1)) && client_ip.starts_with(&prefix(&n2)),
        "{web} {client_ip}"
    );

    // Each node routes to the others' /24s: onlink through the overlay
    // device, or through the peers' LAN addresses.
    let network_of = |net: &str| net.trim_end_matches("/24").to_string();
    let want_routes = |peers: &[(&str, usize)]| -> Vec<String> {
        peers
            .iter()
            .map(|(net, i)| {
                if vxlan {
                    format!("{net} via {} dev orca0.vx onlink", network_of(net))
                } else {
                    format!("{net} via {}", c.lab.nodes[*i].address)
                }
            })
            .collect()
    };
    common::eventually("peer routes on n0", Duration::from_secs(30), async || {
        let routes = peer_routes(&c, 0);
        if want_routes(&[(&n1, 1), (&n2, 2)])
            .iter()
            .all(|w| routes.contains(w.as_str()))
        {
            Ok(())
        } else {
            Err(routes)
        }
    })
    .await;
    if vxlan {
        // Per peer, a neighbour (its /24's network address at its VTEP
        // MAC) and an FDB entry (that MAC at its LAN address).
        let entries = overlay_entries(&c, 0);
        for (net, i) in [(&n1, 1), (&n2, 2)] {
            let neigh = format!("{} lladdr {} PERMANENT", network_of(net), vtep_mac(net));
            let fdb = format!(
                "{} dst {} self permanent",
                vtep_mac(net),
                c.lab.nodes[i].address
            );
            assert!(
                entries.contains(&neigh) && entries.contains(&fdb),
                "{neigh} / {fdb} in:\n{entries}"
            );
        }
    }

    // The client on n2 gets the page of web on n1, by address and by
    // name, and, as a control, of near on its own node.
    let fetch = |target: &str| {
        // busybox wget's own -T crashes it; timeout(1) bounds it instead.
        let url = format!("http://{target}:8080/");
        c.exec(2, &client, &["timeout", "3", "wget", "-q", "-O", "-", &url])
    };
    for (what, target) in [
        ("same node", near.as_str()),
        ("across nodes", web.as_str()),
        ("across nodes by name", "web"),
    ] {
        common::eventually(what, Duration::from_secs(20), async || {
            let page = fetch(target);
            if page.contains("web v1") {
                Ok(())
            } else {
                Err(page)
            }
        })
        .await;
    }
    // Another project's replica on n2 cannot reach web on n1, which is not
    // internal, and reaches the internal one there (the control).
    c.until_spread("shared", "shared on n1", |s| s == [0, 1, 0])
        .await;
    c.until_spread("stranger", "stranger on n2", |s| s == [0, 0, 1])
        .await;
    let stranger = c.service("stranger")["instances"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shared = ip_of("shared");
    let fetch_as = |id: &str, target: &str| {
        let url = format!("http://{target}:8080/");
        c.exec(2, id, &["timeout", "3", "wget", "-q", "-O", "-", &url])
    };
    common::eventually(
        "the internal service across nodes",
        Duration::from_secs(20),
        async || {
            for target in [shared.as_str(), "shared.default"] {
                let page = fetch_as(&stranger, target);
                if !page.contains("web v1") {
                    return Err(format!("{target}: {page}"));
                }
            }
            Ok(())
        },
    )
    .await;
    let refused = fetch_as(&stranger, &web);
    assert!(
        !refused.contains("web v1"),
        "another project reached web across nodes: {refused}"
    );

    // web saw the client's own address: no NAT between replicas.
    let logs =
        String::from_utf8_lossy(&c.orca(&["logs", "web", "--tail", "50"]).stdout).to_string();
    assert!(
        logs.contains(&client_ip),
        "web's log names the client {client_ip}: {logs}"
    );

    if vxlan {
        mtu_holds(&c, &client, &web, &near);
    }

    // n2's link cut, then n2 removed: its route (and overlay entries) are
    // gone from the other nodes, and theirs stay.
    c.lab.set_link(2, false);
    assert!(c.orca(&["node", "rm", "n2"]).status.success());
    common::eventually("n2's entries gone", Duration::from_secs(30), async || {
        let (r0, r1) = (peer_routes(&c, 0), peer_routes(&c, 1));
        let mac = vtep_mac(&n2);
        let (o0, o1) = if vxlan {
            (overlay_entries(&c, 0), overlay_entries(&c, 1))
        } else {
            Default::default()
        };
        let gone = !r0.contains(n2.as_str())
            && !r1.contains(n2.as_str())
            && !o0.contains(&mac)
            && !o1.contains(&mac);
        let kept = r1.contains(n0.as_str()) && (!vxlan || o1.contains(&vtep_mac(&n0)));
        if gone && kept {
            Ok(())
        } else {
            Err(format!("n0: {r0}{o0}\nn1: {r1}{o1}"))
        }
    })
    .await;
}

/// Over the overlay, the replicas' links have the LAN's MTU less 50, and a
/// 1400-byte payload crosses with and without "don't fragment"; one that
/// does not fit with it is refused at the sender (the control), and fits
/// in fragments without it. Pings from the client replica's own network
/// namespace, to web on another node and near on its own.
fn mtu_holds(c: &LabCluster, client: &str, web: &str, near: &str) {
    let lan_mtu: u32 = iproute(c, 2, "ip", &["-o", "link", "show", "eth0"])
        .split("mtu ")
        .nth(1)
        .and_then(|m| m.split_whitespace().next())
        .and_then(|m| m.parse().ok())
        .unwrap_or(1500);
    let inside: u32 = c
        .exec(2, client, &["cat", "/sys/class/net/eth0/mtu"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(inside, lan_mtu - 50, "the replica's MTU");
    let netns = c.replica_netns(2, client);
    let ping = |target: &str, size: u32, df: &str| {
        Command::new("nsenter")
            .arg(format!("--net={}", netns.display()))
            .args([
                "ping",
                "-c",
                "2",
                "-W",
                "2",
                "-M",
                df,
                "-s",
                &size.to_string(),
                target,
            ])
            .output()
            .unwrap()
    };
    for (target, size, df, ok) in [
        (web, 1400, "do", true),
        (web, 1400, "dont", true),
        (near, 1400, "do", true),
        (web, lan_mtu - 50 - 28, "do", true),
        (web, lan_mtu - 50 - 28 + 1, "do", false),
        (web, 3000, "dont", true),
    ] {
        let out = ping(target, size, df);
        assert_eq!(
            out.status.success(),
            ok,
            "ping -M {df} -s {size} {target}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_ingress_and_dns_reach_replicas_on_other_nodes() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let image = c.image("web:v1");
    c.deploy(json!([
        { "name": "far", "image": image, "replicas": 1, "port": 8080, "domain": "far.test",
          "readiness": { "path": "/" }, "placement": { "node": "n2" } },
        { "name": "client", "image": image, "replicas": 3 },
    ]));
    c.until_spread("far", "far on n2", |s| s == [0, 0, 1]).await;
    // The ingress of every node (each inside its own namespace).
    for i in 0..3 {
        let what = format!("the ingress of n{i} serves far on n2");
        common::eventually(&what, std::time::Duration::from_secs(30), async || {
            let out = c.lab.nodes[i]
                .nsenter("curl")
                .args([
                    "-s",
                    "-m",
                    "3",
                    "-H",
                    "Host: far.test",
                    "http://127.0.0.1:8080/",
                ])
                .output()
                .map_err(|e| e.to_string())?;
            let body = String::from_utf8_lossy(&out.stdout).to_string();
            if body.contains("web v1") {
                Ok(())
            } else {
                Err(body)
            }
        })
        .await;
    }
    // Each node's DNS, from the client replica on that node.
    c.until_spread("client", "a client on each node", |s| s == [1, 1, 1])
        .await;
    let clients: Vec<(usize, String)> = c.service("client")["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let node: usize = i["node"].as_str().unwrap()[1..].parse().unwrap();
            (node, i["id"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(clients.len(), 3);
    for (node, client) in &clients {
        let what = format!("far by name from n{node}");
        common::eventually(&what, std::time::Duration::from_secs(30), async || {
            let url = "http://far:8080/";
            let page = c.exec(
                *node,
                client,
                &["timeout", "3", "wget", "-q", "-O", "-", url],
            );
            if page.contains("web v1") {
                Ok(())
            } else {
                Err(page)
            }
        })
        .await;
    }
}

/// The ifindex of node `i`'s overlay device, if it has one.
fn vxlan_index(c: &LabCluster, i: usize) -> Option<String> {
    let out = iproute(c, i, "ip", &["-o", "link", "show"]);
    out.lines()
        .find(|l| l.contains(" orca0.vx:"))
        .and_then(|l| l.split(':').next())
        .map(str::to_string)
}

/// Deploys `web` pinned to node `web_on` and `client` pinned to node
/// `client_on`, and waits until both run there: the client's replica id.
async fn web_and_client(c: &LabCluster, web_on: usize, client_on: usize) -> String {
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
async fn until_page(c: &LabCluster, i: usize, client: &str, url: &str, what: &str) {
    common::eventually(what, Duration::from_secs(30), async || {
        let page = c.exec(i, client, &["timeout", "3", "wget", "-q", "-O", "-", url]);
        if page.contains("web v1") {
            Ok(())
        } else {
            Err(page)
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_between_nodes_goes_on_while_their_agents_restart() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, "").await;
    let client = web_and_client(&c, 1, 2).await;
    let web = c.service("web")["instances"][0]["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let url = format!("http://{web}:8080/");
    until_page(&c, 2, &client, &url, "the client reaches web").await;
    let devices = (vxlan_index(&c, 1), vxlan_index(&c, 2));
    assert!(devices.0.is_some() && devices.1.is_some(), "{devices:?}");

    // Requests one after another for 14 s from the client on n2 to web on
    // n1, while both nodes' agents are killed and started again.
    let script = format!(
        "ok=0; bad=0; end=$(( $(date +%s) + 14 )); \
         while [ $(date +%s) -lt $end ]; do \
           if timeout 3 wget -q -O /dev/null {url}; then ok=$((ok+1)); else bad=$((bad+1)); fi; \
         done; echo ok=$ok bad=$bad"
    );
    let exec = {
        let socket = c.lab.nodes[2].socket.clone();
        let ns = c.containerd_namespace(2);
        let client = client.clone();
        tokio::task::spawn_blocking(move || {
            let out = Command::new("ctr")
                .arg("--address")
                .arg(socket)
                .args(["-n", &ns, "tasks", "exec", "--exec-id", "restarts"])
                .arg(&client)
                .args(["sh", "-c", &script])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in [1, 2] {
        c.kill_agent(i);
        c.spawn_agent(i, None);
        c.wait_ready(3).await;
    }
    let said = exec.await.unwrap();
    let count = |key: &str| -> u32 {
        said.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {said:?}"))
    };
    assert_eq!(count("bad="), 0, "{said}");
    assert!(count("ok=") > 10, "{said}");
    // The overlay device was kept, not made anew.
    assert_eq!((vxlan_index(&c, 1), vxlan_index(&c, 2)), devices);
    eprintln!("across agent restarts: {said}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_changes_address_is_reached_at_the_new_one() {
    let Some(env) = common::env() else { return };
    let mut c = LabCluster::start(&env, 3, "").await;
    let client = web_and_client(&c, 2, 1).await;
    let n2 = c.node("n2").unwrap()["subnet"]
        .as_str()
        .unwrap()
        .to_string();
    until_page(&c, 1, &client, "http://web:8080/", "web from n1").await;

    // n2 moves to another address; its agent comes back from there.
    c.kill_agent(2);
    let new = c.lab.readdress(2);
    c.spawn_agent(2, None);
    common::eventually(
        "n2 at its new address",
        Duration::from_secs(60),
        async || {
            let n = c.node("n2").unwrap();
            if n["address"] == new.to_string() && n["state"] == "ready" {
                Ok(())
            } else {
                Err(n.to_string())
            }
        },
    )
    .await;
    // The other nodes' FDB entries for n2 follow, and web is reached again.
    let want = format!("{} dst {new} self permanent", vtep_mac(&n2));
    common::eventually(
        "the FDB entries follow",
        Duration::from_secs(30),
        async || {
            let (o0, o1) = (overlay_entries(&c, 0), overlay_entries(&c, 1));
            if o0.contains(&want) && o1.contains(&want) {
                Ok(())
            } else {
                Err(format!("n0: {o0}\nn1: {o1}"))
            }
        },
    )
    .await;
    until_page(&c, 1, &client, "http://web:8080/", "web from n1 again").await;
}
