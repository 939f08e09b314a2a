//! Replicas of different nodes reach each other by their own addresses
//! (peer routes, the `host-gw` way, on the lab's one LAN), without NAT in
//! between; a node's routes go with it.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::cluster::LabCluster;
use serde_json::json;

/// `ip -n NETNS route show proto 111`: the peer routes of a node.
fn peer_routes(c: &LabCluster, i: usize) -> String {
    common::run(Command::new("ip").args([
        "-n",
        &c.lab.nodes[i].netns,
        "route",
        "show",
        "proto",
        "111",
    ]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_reaches_a_replica_of_another_node_by_its_own_address() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
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
    let (n1, n2) = (subnet("n1"), subnet("n2"));
    let prefix = |net: &str| net.replace(".0/24", ".");
    assert!(
        web.starts_with(&prefix(&n1)) && client_ip.starts_with(&prefix(&n2)),
        "{web} {client_ip}"
    );

    // Each node routes to the others' /24s through their LAN addresses.
    common::eventually(
        "peer routes on n0",
        std::time::Duration::from_secs(30),
        async || {
            let routes = peer_routes(&c, 0);
            let want = [
                format!("{n1} via {}", c.lab.nodes[1].address),
                format!("{n2} via {}", c.lab.nodes[2].address),
            ];
            if want.iter().all(|w| routes.contains(w.as_str())) {
                Ok(())
            } else {
                Err(routes)
            }
        },
    )
    .await;

    // The client on n2 gets the page of web on n1, and, as a control, of
    // near on its own node.
    let fetch = |ip: &str| {
        // busybox wget's own -T crashes it; timeout(1) bounds it instead.
        let url = format!("http://{ip}:8080/");
        c.exec(2, &client, &["timeout", "3", "wget", "-q", "-O", "-", &url])
    };
    for (what, ip) in [("same node", &near), ("across nodes", &web)] {
        common::eventually(what, std::time::Duration::from_secs(20), async || {
            let page = fetch(ip);
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
    let fetch_as = |id: &str, ip: &str| {
        let url = format!("http://{ip}:8080/");
        c.exec(2, id, &["timeout", "3", "wget", "-q", "-O", "-", &url])
    };
    common::eventually(
        "the internal service across nodes",
        std::time::Duration::from_secs(20),
        async || {
            let page = fetch_as(&stranger, &shared);
            if page.contains("web v1") {
                Ok(())
            } else {
                Err(page)
            }
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

    // n2 removed: its /24 is gone from the other nodes' routes.
    assert!(c.orca(&["node", "rm", "n2"]).status.success());
    common::eventually(
        "n2's route gone",
        std::time::Duration::from_secs(30),
        async || {
            let (r0, r1) = (peer_routes(&c, 0), peer_routes(&c, 1));
            if !r0.contains(n2.as_str()) && !r1.contains(n2.as_str()) && r1.contains("10.88.0.0/24")
            {
                Ok(())
            } else {
                Err(format!("n0: {r0}\nn1: {r1}"))
            }
        },
    )
    .await;
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
