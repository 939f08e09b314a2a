//! Every node's ingress (over HTTPS, with a certificate from files on the
//! server) and DNS reach replicas on the other nodes;
//! traffic between nodes goes on while their agents restart; a node that
//! changes address is reached at the new one.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::cluster::overlay::{
    overlay_entries, until_page, vtep_mac, vxlan_index, web_and_client,
};
use common::cluster::LabCluster;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_nodes_ingress_and_dns_reach_replicas_on_other_nodes() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let image = c.image("web:v1");
    // far.test has its own certificate, in files on the server's host.
    let certs = c.cert_dir();
    let (cert, key) = common::tls::self_signed("far.test");
    let (cert_file, key_file) = (certs.join("far.pem"), certs.join("far.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    let tls = json!({ "cert": cert_file.to_str().unwrap(), "key": key_file.to_str().unwrap() });
    c.deploy(json!([
        { "name": "far", "image": image, "replicas": 1, "port": 8080, "domain": "far.test",
          "readiness": { "path": "/" }, "placement": { "node": "n2" }, "tls": tls },
        { "name": "client", "image": image, "replicas": 3 },
    ]));
    c.until_spread("far", "far on n2", |s| s == [0, 0, 1]).await;
    // The ingress of every node (each inside its own namespace).
    for i in 0..3 {
        let what = format!("the ingress of n{i} serves far on n2 over HTTPS");
        common::eventually(&what, std::time::Duration::from_secs(30), async || {
            let out = c.lab.nodes[i]
                .nsenter("curl")
                .args(["-s", "-m", "3", "--cacert"])
                .arg(&cert_file)
                .args([
                    "--resolve",
                    "far.test:8443:127.0.0.1",
                    "https://far.test:8443/",
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
