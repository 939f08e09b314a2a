//! The multi-node lab itself: nodes as network namespaces, each with a
//! containerd of its own, reach each other over the LAN namespace's bridge,
//! and nothing of it is left once the lab is dropped.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::lab::Lab;

fn succeeds(c: &mut Command) -> bool {
    c.output().unwrap().status.success()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_nodes_have_their_own_containerd_and_reach_each_other() {
    let Some(_env) = common::env() else { return };
    let lab = Lab::start(2).await;
    let (a, b) = (&lab.nodes[0], &lab.nodes[1]);

    // Each containerd is its own: what one holds, the other does not.
    let ns = format!("labcheck{}", common::rand_u32());
    common::run(Command::new("ctr").arg("--address").arg(&a.socket).args([
        "namespaces",
        "create",
        &ns,
    ]));
    let listed = common::run(Command::new("ctr").arg("--address").arg(&b.socket).args([
        "namespaces",
        "ls",
        "-q",
    ]));
    assert!(!listed.lines().any(|l| l == ns), "{listed}");

    // Over the LAN, from inside the nodes: b reaches a (and a reaches b),
    // while the same probe to an address no node has gets nothing.
    let ping = |from: &common::lab::LabNode, to: &str| {
        succeeds(
            from.command("busybox")
                .args(["ping", "-c", "1", "-W", "2", to]),
        )
    };
    assert!(ping(b, &a.address.to_string()), "b to a");
    assert!(ping(a, &b.address.to_string()), "a to b");
    let octets = a.address.octets();
    let nobody = format!("{}.{}.{}.99", octets[0], octets[1], octets[2]);
    assert!(!ping(b, &nobody), "an address no node has answered");

    // Dropped: no namespace and no containerd of the lab is left.
    let names: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| n.netns.clone())
        .chain([lab.lan.clone()])
        .collect();
    // Each containerd's command line names its config, beside its socket.
    let configs: Vec<String> = lab
        .nodes
        .iter()
        .map(|n| n.socket.with_file_name("config.toml").display().to_string())
        .collect();
    drop(lab);
    let list = common::run(Command::new("ip").args(["netns", "list"]));
    for n in &names {
        assert!(!list.contains(n.as_str()), "{n} left: {list}");
    }
    // Every process's command line, from /proc.
    let procs: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .collect();
    for c in &configs {
        assert!(
            !procs.iter().any(|p| p.contains(c.as_str())),
            "a containerd of the lab runs on"
        );
    }
}
