//! One behavior for every [`Store`]: the same sequence of calls against
//! the in-memory store, sled in a temporary directory and a real etcd
//! (Debian's `etcd` binary on loopback ports of its own; under `CI=true`
//! a missing binary fails the test).

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::settings::{Backend, StoreSection};
use super::{EtcdStore, MemStore, SledStore, Store, Tree};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// An etcd for this test, killed (by its PID) when dropped.
struct Etcd {
    child: Child,
    _dir: tempfile::TempDir,
    url: String,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn etcd() -> Option<Etcd> {
    if Command::new("etcd").arg("--version").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "etcd is missing under CI (apt-get install etcd-server)"
        );
        eprintln!("SKIPPING the etcd store: no etcd binary");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (client, peer) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .args(["--name", "c", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("c={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let etcd = Etcd {
        child,
        _dir: dir,
        url,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", client)).is_err() {
        assert!(Instant::now() < deadline, "etcd did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(etcd)
}

/// The sequence every store must pass.
fn behaves(store: &dyn Store, name: &str) {
    let value = |s: &str| s.as_bytes().to_vec();
    assert_eq!(store.get(Tree::Services, "web").unwrap(), None, "{name}");
    assert!(store.list(Tree::Services).unwrap().is_empty(), "{name}");
    // Keys with slashes, dots and non-ASCII; binary values; an overwrite.
    let keys = ["a/b", "web", "web.1", "zz-ü"];
    for k in keys {
        store.put(Tree::Services, k, &value(k)).unwrap();
    }
    store
        .put(Tree::Services, "web", &[0, 159, 146, 150, 255])
        .unwrap();
    assert_eq!(
        store.get(Tree::Services, "web").unwrap(),
        Some(vec![0, 159, 146, 150, 255]),
        "{name}"
    );
    // Listed in key order, each tree apart (tokens and join_tokens too).
    store.put(Tree::Tokens, "t", b"1").unwrap();
    store.put(Tree::JoinTokens, "j", b"2").unwrap();
    let listed: Vec<String> = store
        .list(Tree::Services)
        .unwrap()
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    assert_eq!(listed, keys, "{name}");
    assert_eq!(
        store.list(Tree::Tokens).unwrap(),
        [("t".to_string(), b"1".to_vec())],
        "{name}"
    );
    assert_eq!(store.get(Tree::Tokens, "j").unwrap(), None, "{name}");
    // Deletes: of a key, and of one that is not there.
    store.delete(Tree::Services, "a/b").unwrap();
    store.delete(Tree::Services, "never").unwrap();
    assert_eq!(store.get(Tree::Services, "a/b").unwrap(), None, "{name}");
    assert_eq!(store.list(Tree::Services).unwrap().len(), 3, "{name}");
    // Every tree at once: the same entries as tree by tree.
    let every: Vec<(Tree, String)> = store
        .list_every()
        .unwrap()
        .into_iter()
        .map(|(tree, key, _)| (tree, key))
        .collect();
    let each: Vec<(Tree, String)> = Tree::ALL
        .into_iter()
        .flat_map(|tree| {
            store
                .list(tree)
                .unwrap()
                .into_iter()
                .map(move |(k, _)| (tree, k))
        })
        .collect();
    assert_eq!(every.len(), 5, "{name}: {every:?}");
    for entry in &each {
        assert!(every.contains(entry), "{name}: {entry:?} in {every:?}");
    }
}

#[test]
fn every_store_behaves_alike() {
    behaves(&MemStore::default(), "memory");
    let dir = tempfile::tempdir().unwrap();
    behaves(&SledStore::open(dir.path()).unwrap(), "sled");
    if let Some(etcd) = etcd() {
        let section = StoreSection {
            backend: Backend::Etcd,
            endpoints: vec![etcd.url.clone()],
            prefix: "/conformance".into(),
            ..StoreSection::default()
        };
        let store = EtcdStore::open(&section, None).unwrap();
        behaves(&store, "etcd");
        // What one client wrote, another reads: it is in etcd.
        let again = EtcdStore::open(&section, None).unwrap();
        assert_eq!(again.list(Tree::Services).unwrap().len(), 3);
        // Another prefix is another store.
        let other = EtcdStore::open(
            &StoreSection {
                prefix: "/other".into(),
                ..section.clone()
            },
            None,
        )
        .unwrap();
        assert!(other.list(Tree::Services).unwrap().is_empty());
        // Keys under the prefix outside every tree (the election's) are
        // not the store's: a store one level down writes some.
        let beside = EtcdStore::open(
            &StoreSection {
                prefix: "/conformance/members".into(),
                ..section
            },
            None,
        )
        .unwrap();
        beside.put(Tree::Services, "x", b"1").unwrap();
        assert_eq!(store.list_every().unwrap().len(), 5);
    }
}
