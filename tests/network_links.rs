//! The node network on the real kernel: a bridge of the test's own, replica
//! namespaces with veths and addresses that reach each other and the
//! gateway, idempotent re-attach (a restarted orca), and nothing left after
//! many create/delete cycles.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use network::ipam::MemIpamStore;
use network::{NetworkSettings, NodeNetwork};

/// Removes the test's bridge and NAT table however the test ends.
struct Cleanup(String);
impl Drop for Cleanup {
    fn drop(&mut self) {
        common::host::remove_bridge(&self.0);
    }
}

fn settings(dir: &Path, tag: u32) -> NetworkSettings {
    NetworkSettings {
        bridge: format!("ot{:06x}", tag & 0xff_ffff),
        subnet: format!("10.{}.{}.0/24", 100 + (tag >> 8) % 100, tag & 0xff),
        node_index: 0,
        netns_dir: dir.join("netns"),
        open_ports: vec![],
        backend: network::Backend::Vxlan,
        vxlan_port: 8472,
        underlay: None,
    }
}

/// A test's own bridge, /24 and netns directory, removed however the test
/// ends; `None` when not root outside CI.
struct TestNet {
    s: NetworkSettings,
    _cleanup: Cleanup,
    _dir: tempfile::TempDir,
}

fn test_net() -> Option<TestNet> {
    if skip_unless_root() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), common::rand_u32());
    Some(TestNet {
        _cleanup: Cleanup(s.bridge.clone()),
        s,
        _dir: dir,
    })
}

/// Runs busybox inside the namespace at `netns` (nsenter from util-linux).
fn inside(netns: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .arg("/bin/busybox")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn skip_unless_root() -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return false;
    }
    assert!(!common::in_ci(), "network tests need root under CI");
    eprintln!("SKIPPING network test: not root");
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_another_link_holds_is_refused() {
    let Some(own) = test_net() else { return };
    let s = own.s.clone();
    // Another link with an address in the subnet, as a leftover bridge would.
    let other = s.bridge.replacen("ot", "od", 1);
    let _other = Cleanup(other.clone());
    let held = s.subnet.replace(".0/24", ".77/24");
    for args in [
        vec!["link", "add", &other, "type", "bridge"],
        vec!["addr", "add", &held, "dev", &other],
    ] {
        assert!(Command::new("ip").args(&args).status().unwrap().success());
    }
    let err = NodeNetwork::setup(s.clone(), Arc::new(MemIpamStore::default()))
        .await
        .err()
        .expect("a subnet in use is refused");
    let message = err.to_string();
    assert!(
        message.contains(&format!("already in use on link {other}")) && message.contains(&held),
        "{message}"
    );
    // Nothing was made.
    let out = Command::new("ip")
        .args(["link", "show", &s.bridge])
        .output()
        .unwrap();
    assert!(!out.status.success(), "bridge {} was created", s.bridge);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_get_namespaces_addresses_and_routes() {
    let Some(own) = test_net() else { return };
    let s = own.s.clone();
    let store = Arc::new(MemIpamStore::default());
    let net = NodeNetwork::setup(s.clone(), store.clone()).await.unwrap();
    let a = net.attach("web.0.aaaaaa").await.unwrap();
    let b = net.attach("web.1.bbbbbb").await.unwrap();
    assert_ne!(a.ip, b.ip);
    assert!(net.subnet().contains(a.ip));
    assert!(network::netns::exists(&a.netns));

    let (ok, out) = inside(&a.netns, &["ip", "-4", "addr", "show", "eth0"]);
    assert!(ok && out.contains(&format!("{}/24", a.ip)), "{out}");
    let (ok, out) = inside(&a.netns, &["ip", "route"]);
    assert!(
        ok && out.contains(&format!("default via {}", a.gateway)),
        "{out}"
    );
    // Replicas in no project yet open nothing on the bridge.
    let (ok, _) = inside(&a.netns, &["ping", "-c", "1", "-W", "1", &b.ip.to_string()]);
    assert!(!ok, "replicas in no project reached each other");
    let project = std::collections::BTreeMap::from([("p".to_string(), vec![a.ip, b.ip])]);
    net.set_isolation(&project, &[]).await.unwrap();
    let (ok, out) = inside(&a.netns, &["ping", "-c", "1", "-W", "2", &b.ip.to_string()]);
    assert!(ok, "replica to replica: {out}");
    let (ok, out) = inside(
        &b.netns,
        &["ping", "-c", "1", "-W", "2", &a.gateway.to_string()],
    );
    assert!(ok, "replica to gateway: {out}");
    let host = Command::new("/bin/busybox")
        .args(["ping", "-c", "1", "-W", "2", &a.ip.to_string()])
        .output()
        .unwrap();
    assert!(
        host.status.success(),
        "host to replica: {}",
        String::from_utf8_lossy(&host.stdout)
    );

    // A restarted orca: same book, same namespaces, nothing changes.
    drop(net);
    let net = NodeNetwork::setup(s.clone(), store.clone()).await.unwrap();
    assert_eq!(net.attach("web.0.aaaaaa").await.unwrap(), a);
    let c = net.attach("web.2.cccccc").await.unwrap();
    assert!(c.ip != a.ip && c.ip != b.ip);

    // Leftovers of replicas that are gone are swept.
    let removed = net.sweep(&|owner| owner != "web.1.bbbbbb").await;
    assert_eq!(removed, vec!["web.1.bbbbbb".to_string()]);
    assert!(!network::netns::exists(&b.netns));
    assert!(net.address("web.1.bbbbbb").is_none());

    for owner in ["web.0.aaaaaa", "web.2.cccccc"] {
        net.detach(owner).await.unwrap();
        net.detach(owner).await.unwrap();
    }
    assert!(network::netns::list(&s.netns_dir).is_empty());
    veths_go(&net).await;
    net.destroy().await.unwrap();
}

/// The kernel removes a namespace's veth pair once the namespace is gone;
/// that takes it a moment.
async fn veths_go(net: &NodeNetwork) {
    for _ in 0..100 {
        if net.stray_veths().await.unwrap().is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("veths left: {:?}", net.stray_veths().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_cycles_leave_nothing_behind() {
    let Some(own) = test_net() else { return };
    let s = own.s.clone();
    let store = Arc::new(MemIpamStore::default());
    let net = NodeNetwork::setup(s.clone(), store.clone()).await.unwrap();
    let mut seen = std::collections::HashSet::new();
    for i in 0..1000 {
        let owner = format!("cycle.{i}.x");
        let a = net.attach(&owner).await.unwrap();
        seen.insert(a.ip);
        net.detach(&owner).await.unwrap();
    }
    // Addresses rotate through the /24 instead of reusing the last one.
    assert!(seen.len() > 200, "only {} distinct addresses", seen.len());
    assert!(network::netns::list(&s.netns_dir).is_empty());
    veths_go(&net).await;
    assert!(store.0.lock().unwrap().is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&s.netns_dir.display().to_string()),
        "netns mounts left"
    );
    net.destroy().await.unwrap();
}
