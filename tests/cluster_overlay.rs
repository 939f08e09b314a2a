//! Replicas of different nodes reach each other by their own addresses and
//! by name, without NAT in between, over either backend: the VXLAN overlay
//! (neighbour, FDB entry and onlink route per peer, MTU 50 below the LAN's)
//! or `host-gw` routes. Project isolation holds between nodes. A node cut
//! off and removed takes its entries with it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::overlay::{iproute, overlay_entries, peer_routes, until_page, vtep_mac};
use common::cluster::LabCluster;
use serde_json::json;

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
    for (what, target) in [
        ("same node", near.as_str()),
        ("across nodes", web.as_str()),
        ("across nodes by name", "web"),
    ] {
        let url = format!("http://{target}:8080/");
        until_page(&c, 2, &client, &url, what).await;
    }
    host_ports_stay_closed(&c, &client, &n1, vxlan).await;

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

/// A port open on n1's host (a web server on every address of its
/// namespace, as the API or sshd would be) is not reached by the client on
/// n2 through n1's overlay or bridge address, though the same probe from
/// the same replica just reached web on n1 (the control above), and the
/// server answers on n1 itself.
async fn host_ports_stay_closed(c: &LabCluster, client: &str, n1_subnet: &str, vxlan: bool) {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("index.html"), "host port\n").unwrap();
    let mut server = c.lab.nodes[1]
        .nsenter("busybox")
        .args(["httpd", "-f", "-p", "0.0.0.0:7001", "-h"])
        .arg(root.path())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        server.try_wait().unwrap().is_none(),
        "busybox httpd on n1 exited"
    );
    let stop = scopeguard(&mut server);
    common::eventually(
        "the host port answers on n1",
        Duration::from_secs(10),
        async || {
            let out = c.lab.nodes[1]
                .nsenter("curl")
                .args(["-sS", "-m", "2", "http://127.0.0.1:7001/"])
                .output()
                .unwrap();
            let page = String::from_utf8_lossy(&out.stdout).to_string();
            page.contains("host port").then_some(()).ok_or_else(|| {
                format!(
                    "{page}{} ({})",
                    String::from_utf8_lossy(&out.stderr),
                    out.status
                )
            })
        },
    )
    .await;
    let net = n1_subnet.trim_end_matches(".0/24");
    let mut targets = vec![format!("{net}.1")];
    if vxlan {
        targets.push(format!("{net}.0"));
    }
    for target in targets {
        let url = format!("http://{target}:7001/");
        let page = c.exec(2, client, &["timeout", "3", "wget", "-q", "-O", "-", &url]);
        assert!(
            !page.contains("host port"),
            "a replica on n2 opened n1's host port at {target}: {page}"
        );
    }
    drop(stop);
}

/// Kills a child when dropped (by its PID), so a failing assertion leaves
/// no server behind.
fn scopeguard(child: &mut std::process::Child) -> impl Drop + '_ {
    struct Kill<'a>(&'a mut std::process::Child);
    impl Drop for Kill<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    Kill(child)
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
