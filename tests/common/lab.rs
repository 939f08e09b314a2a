//! The multi-node lab on one machine: each node is a network namespace
//! with its own containerd (own root, state and socket), wired by a veth
//! to a "LAN" bridge that lives in a namespace of its own. Traffic stays
//! inside these namespaces; the host's own namespace sends nothing to a
//! lab address. Everything is removed when the lab is dropped, also when a
//! test panics: containerd by the PID this lab started, then the
//! namespaces.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// One node of the lab.
pub struct LabNode {
    /// The node's network namespace (`ip netns` name).
    pub netns: String,
    /// Its address on the LAN.
    pub address: Ipv4Addr,
    /// Its containerd's socket.
    pub socket: PathBuf,
    /// Its port on the LAN bridge (set down to cut the node's link).
    pub lan_port: String,
    containerd: Option<Child>,
}

impl LabNode {
    /// A program run in the node's network namespace and nothing else
    /// (the host's mounts, cgroups included, as they are).
    pub fn nsenter(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", self.netns))
            .arg(program);
        c
    }

    /// A command run inside the node's namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.netns, program]);
        c
    }
}

/// See the module doc.
pub struct Lab {
    pub nodes: Vec<LabNode>,
    /// The LAN's namespace, holding the bridge `lan0`.
    pub lan: String,
    /// The LAN's /24.
    pub subnet: String,
    /// `host:port` of the LAN's registry, once started.
    pub registry: Option<String>,
    registry_process: Option<Child>,
    _dir: tempfile::TempDir,
}

/// Runs `ip args...`, which must succeed.
fn ip(args: &[&str]) {
    super::host::run(Command::new("ip").args(args));
}

/// A short tag unique to this lab, for names of at most 15 bytes.
fn tag() -> String {
    format!("{:06x}", super::rand_u32() & 0xff_ffff)
}

impl Lab {
    /// A lab of `n` nodes (at most 200), each with containerd answering.
    pub async fn start(n: usize) -> Lab {
        let tag = tag();
        let dir = tempfile::tempdir().unwrap();
        let lan = format!("olan-{tag}");
        let third = 1 + (super::rand_u32() % 250);
        let subnet = format!("172.31.{third}.0/24");
        let mut lab = Lab {
            nodes: Vec::new(),
            lan: lan.clone(),
            subnet,
            registry: None,
            registry_process: None,
            _dir: dir,
        };
        ip(&["netns", "add", &lan]);
        ip(&["-n", &lan, "link", "add", "lan0", "type", "bridge"]);
        ip(&["-n", &lan, "link", "set", "lan0", "up"]);
        // A LAN is a switch: its frames meet no host's netfilter (orca
        // loads br_netfilter, which is on for every bridge by default).
        ip(&[
            "netns",
            "exec",
            &lan,
            "sysctl",
            "-q",
            "-w",
            "net.bridge.bridge-nf-call-iptables=0",
            "net.bridge.bridge-nf-call-ip6tables=0",
            "net.bridge.bridge-nf-call-arptables=0",
        ]);
        for i in 0..n {
            let netns = format!("onode{i}-{tag}");
            let address = Ipv4Addr::new(172, 31, third as u8, 10 + i as u8);
            ip(&["netns", "add", &netns]);
            let (inside, outside) = (format!("ol{i}{tag}a"), format!("ol{i}{tag}b"));
            ip(&[
                "-n", &netns, "link", "add", &inside, "type", "veth", "peer", "name", &outside,
                "netns", &lan,
            ]);
            ip(&["-n", &lan, "link", "set", &outside, "master", "lan0", "up"]);
            ip(&["-n", &netns, "link", "set", &inside, "name", "eth0"]);
            ip(&[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &netns, "link", "set", "eth0", "up"]);
            ip(&["-n", &netns, "link", "set", "lo", "up"]);
            let root = lab._dir.path().join(format!("node{i}"));
            let (containerd, socket) = start_containerd(&netns, &root);
            lab.nodes.push(LabNode {
                netns,
                address,
                socket,
                lan_port: outside,
                containerd: Some(containerd),
            });
        }
        for node in &lab.nodes {
            wait_answering(&node.socket).await;
        }
        lab
    }
}

impl Lab {
    /// Moves node `i` to another address of the LAN (`.30 + i`).
    pub fn readdress(&mut self, i: usize) -> Ipv4Addr {
        let node = &mut self.nodes[i];
        let [a, b, c, _] = node.address.octets();
        let new = Ipv4Addr::new(a, b, c, 30 + i as u8);
        let (old, netns) = (node.address, node.netns.clone());
        // The old one first: removing a primary address takes the
        // secondaries of its subnet with it.
        for (verb, address) in [("del", old), ("add", new)] {
            ip(&[
                "-n",
                &netns,
                "addr",
                verb,
                &format!("{address}/24"),
                "dev",
                "eth0",
            ]);
        }
        node.address = new;
        new
    }

    /// A registry inside the LAN's namespace at `<subnet>.1:5000`, holding
    /// `images`: (OCI layout dir, `name:tag` under `orca-test/`). Pushed
    /// from inside the namespace too.
    pub async fn start_registry(&mut self, images: &[(PathBuf, &str)]) -> String {
        let gateway = self.subnet.replace(".0/24", ".1");
        ip(&[
            "-n",
            &self.lan,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "lan0",
        ]);
        ip(&["-n", &self.lan, "link", "set", "lo", "up"]);
        let address = format!("{gateway}:5000");
        let dir = self._dir.path().join("registry");
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        std::fs::write(
            dir.join("config.yml"),
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n",
                dir.join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.join("registry.log")).unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.lan, "docker-registry", "serve"])
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        self.registry_process = Some(child);
        let lan = self.lan.clone();
        let url = format!("http://{address}/v2/");
        super::eventually("the LAN registry", Duration::from_secs(20), async || {
            let ok = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &lan,
                    "curl",
                    "-sf",
                    "-o",
                    "/dev/null",
                    &url,
                ])
                .status()
                .map_err(|e| e.to_string())?
                .success();
            if ok {
                Ok(())
            } else {
                Err("not answering".into())
            }
        })
        .await;
        self.registry = Some(address.clone());
        for (layout, reference) in images {
            let tag = reference
                .rsplit_once(':')
                .map(|(_, t)| t)
                .unwrap_or("latest");
            self.push_image(layout, tag, reference);
        }
        address
    }

    /// Pushes the image `tag` of the OCI layout `layout` to the LAN's
    /// registry as `orca-test/<reference>`, from inside the LAN's
    /// namespace (moving the tag if it exists).
    pub fn push_image(&self, layout: &std::path::Path, tag: &str, reference: &str) {
        let address = self.registry.as_deref().expect("the LAN registry");
        super::host::run(
            Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.lan,
                    "skopeo",
                    "copy",
                    "-q",
                    "--dest-tls-verify=false",
                ])
                .arg(format!("oci:{}:{tag}", layout.display()))
                .arg(format!("docker://{address}/orca-test/{reference}")),
        );
    }

    /// Sets node `i`'s link to the LAN down or up.
    pub fn set_link(&self, i: usize, up: bool) {
        ip(&[
            "-n",
            &self.lan,
            "link",
            "set",
            &self.nodes[i].lan_port,
            if up { "up" } else { "down" },
        ]);
    }
}

/// containerd inside `netns`, with its root, state and socket under `dir`.
fn start_containerd(netns: &str, dir: &Path) -> (Child, PathBuf) {
    std::fs::create_dir_all(dir.join("root")).unwrap();
    std::fs::create_dir_all(dir.join("state")).unwrap();
    let socket = dir.join("containerd.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
             disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
            d = dir.display(),
            s = socket.display()
        ),
    )
    .unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("containerd.log"))
        .unwrap();
    // nsenter execs containerd: the PID is containerd's own. Only the
    // network namespace changes (`ip netns exec` would also remount /sys,
    // which hides the cgroup mount runc needs).
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{netns}"))
        .args(["containerd", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("containerd (apt-get install containerd)");
    (child, socket)
}

impl Lab {
    /// SIGKILL to node `i`'s containerd (its shims, and so the replicas,
    /// live on), reaped.
    pub fn kill_containerd(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].containerd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i`'s containerd again on the same root and state, and
    /// waits until it answers.
    pub async fn start_containerd_again(&mut self, i: usize) {
        assert!(self.nodes[i].containerd.is_none(), "n{i}'s containerd runs");
        let dir = self._dir.path().join(format!("node{i}"));
        let (child, socket) = start_containerd(&self.nodes[i].netns, &dir);
        self.nodes[i].containerd = Some(child);
        wait_answering(&socket).await;
    }
}

/// Waits (up to 20 s) until containerd answers at `socket`.
async fn wait_answering(socket: &Path) {
    let what = format!("containerd at {}", socket.display());
    super::eventually(&what, Duration::from_secs(20), async || {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .arg("version")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    })
    .await
}

impl Drop for Lab {
    fn drop(&mut self) {
        if let Some(mut c) = self.registry_process.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for node in &mut self.nodes {
            if let Some(mut c) = node.containerd.take() {
                // The containerd this lab started, by its PID, then reaped.
                let pid = nix::unistd::Pid::from_raw(c.id() as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
                for _ in 0..50 {
                    if matches!(c.try_wait(), Ok(Some(_))) {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                let _ = c.kill();
                let _ = c.wait();
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &node.netns])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.lan])
            .output();
    }
}
