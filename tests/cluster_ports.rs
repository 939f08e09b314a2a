//! Published ports across the lab's nodes, with clients in the LAN's own
//! namespace: a mesh port answers on every node, also for a replica that
//! runs on another; a host port answers only on the node that runs its
//! replica (the others refuse: the control is the one that answers), and
//! the replica sees the client's own address; UDP through every node.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::UdpSocket;
use std::process::Command;
use std::time::Duration;

use common::cluster::load::enter;
use common::cluster::LabCluster;
use serde_json::json;

/// curl in the LAN's namespace: its exit code and body.
fn curl(c: &LabCluster, url: &str) -> (i32, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", &c.lab.lan, "curl", "-s", "-m", "3", url])
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    )
}

/// The LAN namespace's own address (what its clients send from).
fn lan_address(c: &LabCluster) -> String {
    let out = Command::new("ip")
        .args(["-n", &c.lab.lan, "-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace().skip_while(|w| *w != "inet");
            words.nth(1)?.split('/').next().map(str::to_string)
        })
        .find(|a| !a.starts_with("127."))
        .unwrap_or_else(|| panic!("no address in the LAN namespace: {text}"))
}

/// One UDP question from the LAN's namespace to `to`: the answer.
fn udp_from_lan(c: &LabCluster, to: String) -> Option<String> {
    let netns = std::path::PathBuf::from(format!("/run/netns/{}", c.lab.lan));
    std::thread::spawn(move || {
        enter(&netns);
        let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        socket.send_to(b"ping", &to).unwrap();
        let mut buf = [0u8; 256];
        let (n, _) = socket.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).to_string())
    })
    .join()
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_ports_answer_on_every_node_and_host_ports_where_replicas_run() {
    let Some(env) = common::env() else { return };
    let c = LabCluster::start(&env, 3, "").await;
    let image = c.image("kaweb:v1");
    c.deploy(json!([
        { "name": "web", "image": image, "port": 8080, "placement": { "node": "n2" },
          "ports": ["18080:8080"] },
        { "name": "hostweb", "image": image, "port": 8080, "placement": { "node": "n1" },
          "ports": [{ "published": 18081, "target": 8080, "mode": "host" }] },
        { "name": "echo", "image": image, "command": ["/bin/udpecho", "5353"],
          "placement": { "node": "n1" }, "ports": ["15353:5353/udp"] },
    ]));
    c.until_spread("web", "web on n2", |s| s == [0, 0, 1]).await;
    c.until_spread("hostweb", "hostweb on n1", |s| s == [0, 1, 0])
        .await;
    c.until_spread("echo", "echo on n1", |s| s == [0, 1, 0])
        .await;
    let nodes: Vec<String> = c.lab.nodes.iter().map(|n| n.address.to_string()).collect();
    let client = lan_address(&c);

    // Mesh: every node answers, two of them for a replica elsewhere.
    for (i, addr) in nodes.iter().enumerate() {
        let url = format!("http://{addr}:18080/");
        common::eventually(
            &format!("web through n{i}"),
            Duration::from_secs(30),
            async || match curl(&c, &url) {
                (0, body) if body == "kaweb v1" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await;
    }
    // Host: n1 answers, and its replica sees the client's own address.
    let url = format!("http://{}:18081/peer", nodes[1]);
    let peer = common::eventually(
        "hostweb on n1",
        Duration::from_secs(30),
        async || match curl(&c, &url) {
            (0, body) if !body.is_empty() => Ok(body),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(peer, client, "host mode must keep the client's address");
    // ... and the nodes without its replica refuse.
    for i in [0, 2] {
        let (code, body) = curl(&c, &format!("http://{}:18081/", nodes[i]));
        assert_ne!(code, 0, "n{i} has no hostweb replica but answered: {body}");
    }
    // UDP through every node to the replica on n1.
    for (i, addr) in nodes.iter().enumerate() {
        let to = format!("{addr}:15353");
        let what = format!("echo through n{i}");
        let answer = common::eventually(&what, Duration::from_secs(30), async || {
            udp_from_lan(&c, to.clone()).ok_or_else(|| "no answer".to_string())
        })
        .await;
        assert_eq!(answer, "echo-0 ping");
    }
    // Cluster info: every node takes the mesh ports, only n1 the host one.
    for n in &c.nodes() {
        let ports = n["ports"].to_string();
        assert!(
            ports.contains("18080/tcp") && ports.contains("15353/udp"),
            "{n}"
        );
        assert_eq!(ports.contains("18081/tcp"), n["id"] == "n1", "{n}");
    }
}
