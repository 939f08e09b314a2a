//! The lab cluster with a control plane of several servers: nodes 0 to
//! k-1 each run an etcd member (one etcd cluster, on the LAN) and an
//! `orca server` on it with `[node] workloads = false`; the other nodes
//! run agents joined with every server's address. The servers share one
//! secrets key, copied into each data directory before the first start.
//! Every etcd member is ended by its PID with the cluster.

use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{LabCluster, ADMIN};

/// The servers' lease, short for the tests.
pub const LEADER_TTL_SECS: u64 = 3;

impl LabCluster {
    /// `n` nodes: `servers` of them servers on etcd (their [cluster] gets
    /// `cluster_extra`), the rest agents, all ready.
    pub async fn start_ha(
        env: &super::super::TestEnv,
        servers: usize,
        n: usize,
        cluster_extra: &str,
    ) -> LabCluster {
        Self::start_control_plane(env, servers, n, cluster_extra, true).await
    }

    /// As [`LabCluster::start_ha`]; without `etcd`, one server on sled
    /// (`servers` must be 1), so that the two compare on the same nodes.
    pub async fn start_control_plane(
        env: &super::super::TestEnv,
        servers: usize,
        n: usize,
        cluster_extra: &str,
        etcd: bool,
    ) -> LabCluster {
        assert!(etcd || servers == 1, "several servers need etcd");
        let mut c = Self::lab_only(env, n).await;
        c.servers = servers;
        c.write_configs(cluster_extra, "");
        if !etcd {
            c.edit_config(0, |config| {
                config.replace("[node]\n", "[node]\nworkloads = false\n")
            });
            c.spawn_server_at(0);
            c.wait_api().await;
            let token = c.join_token("1h");
            for i in 1..n {
                c.spawn_agent(i, Some(&token));
            }
            c.wait_ready(n - 1).await;
            return c;
        }
        let key: [u8; 32] = std::array::from_fn(|_| super::super::rand_u32() as u8);
        for i in 0..servers {
            c.add_store_section(i);
            std::fs::create_dir_all(c.data_dir(i)).unwrap();
            let path = c.data_dir(i).join("secrets.key");
            std::fs::write(&path, key).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        for i in 0..servers {
            c.start_etcd_member(i);
        }
        c.until_etcd_healthy(0).await;
        for i in 0..servers {
            c.spawn_server_at(i);
        }
        c.wait_api().await;
        for i in 1..servers {
            c.until_api_on(i).await;
        }
        let token = c.join_token("1h");
        for i in servers..n {
            c.spawn_agent(i, Some(&token));
        }
        c.wait_ready(n - servers).await;
        c
    }

    /// Server `i`'s config: its API on every address (the others send
    /// requests on to it), the shared store, no replicas of its own.
    fn add_store_section(&self, i: usize) {
        let endpoints = (0..self.servers)
            .map(|s| format!("\"http://{}:2379\"", self.lab.nodes[s].address))
            .collect::<Vec<_>>()
            .join(", ");
        let address = self.lab.nodes[i].address;
        self.edit_config(i, |config| {
            let config = if i == 0 {
                config.replace("api_listen = \"127.0.0.1:6880\"", "api_listen = \"0.0.0.0:6880\"")
            } else {
                config.replace(
                    "[cluster]\n",
                    &format!(
                        "[cluster]\napi_listen = \"0.0.0.0:6880\"\ngrpc_listen = \"{address}:6881\"\n"
                    ),
                )
            };
            let config = config.replace("[node]\n", "[node]\nworkloads = false\n");
            let admin = format!("[[token]]\nname = \"admin\"\nvalue = \"{ADMIN}\"\nrole = \"admin\"\n");
            let config = if config.contains("[[token]]") {
                config
            } else {
                format!("{config}{admin}")
            };
            format!(
                "{config}[store]\nbackend = \"etcd\"\nendpoints = [{endpoints}]\nprefix = \"/lab\"\nleader_ttl_secs = {LEADER_TTL_SECS}\n"
            )
        });
    }

    /// etcd member `i`, in node `i`'s namespace, on its LAN address.
    fn start_etcd_member(&mut self, i: usize) {
        let peers = (0..self.servers)
            .map(|s| format!("e{s}=http://{}:2380", self.lab.nodes[s].address))
            .collect::<Vec<_>>()
            .join(",");
        let a = self.lab.nodes[i].address;
        let data = self.dir.path().join(format!("etcd{i}"));
        let fresh = !data.exists();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("etcd{i}.log")))
            .unwrap();
        let mut cmd = self.lab.nodes[i].nsenter("etcd");
        cmd.args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(&data)
            .args(["--listen-client-urls", &format!("http://{a}:2379")])
            .args(["--advertise-client-urls", &format!("http://{a}:2379")])
            .args(["--listen-peer-urls", &format!("http://{a}:2380")])
            .args(["--initial-advertise-peer-urls", &format!("http://{a}:2380")])
            .args(["--initial-cluster", &peers])
            .args(["--initial-cluster-token", "orca-lab"])
            .args([
                "--initial-cluster-state",
                if fresh { "new" } else { "existing" },
            ])
            .stdout(Stdio::null())
            .stderr(log);
        self.etcd[i] = Some(cmd.spawn().expect("etcd (apt-get install etcd-server)"));
    }

    /// Waits until etcd (asked of member `i`) has a leader and answers.
    pub async fn until_etcd_healthy(&self, i: usize) {
        let url = format!("http://{}:2379/health", self.lab.nodes[i].address);
        super::super::eventually("etcd healthy", Duration::from_secs(60), async || {
            let out = self.lab.nodes[i]
                .nsenter("curl")
                .args(["-sS", "-m", "2", &url])
                .output()
                .unwrap();
            let body = String::from_utf8_lossy(&out.stdout).into_owned();
            if body.contains("\"health\":\"true\"") {
                Ok(())
            } else {
                Err(format!("{body}{}", self.etcd_log(i)))
            }
        })
        .await
    }

    /// SIGKILL to etcd member `i`.
    pub fn kill_etcd_member(&mut self, i: usize) {
        Self::end(&mut self.etcd[i], nix::sys::signal::Signal::SIGKILL);
    }

    /// etcd member `i` again, on its data.
    pub fn restart_etcd_member(&mut self, i: usize) {
        self.start_etcd_member(i);
    }

    /// `orca server` on node `i`.
    pub fn spawn_server_at(&mut self, i: usize) {
        if i == 0 {
            self.spawn_server();
        } else {
            self.agents[i] = Some(self.spawn(i, &["server"]));
        }
    }

    /// SIGKILL to the server on node `i`.
    pub fn kill_server_at(&mut self, i: usize) {
        if i == 0 {
            self.kill_server();
        } else {
            self.kill_agent(i);
        }
    }

    /// `orca ARGS` against server `i`'s API, inside its namespace.
    pub fn orca_on(&self, i: usize, args: &[&str]) -> Output {
        self.lab.nodes[i]
            .nsenter(super::super::orca_bin())
            .args(["--api", "http://127.0.0.1:6880", "--token", ADMIN])
            .args(args)
            .output()
            .unwrap()
    }

    /// `GET path` on server `i`, inside its namespace (2 s at most): the
    /// status code and the body.
    pub fn get_on(&self, i: usize, path: &str) -> (u16, String) {
        let out = self.lab.nodes[i]
            .nsenter("curl")
            .args(["-sS", "-m", "2", "-w", "\n%{http_code}"])
            .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
            .arg(format!("http://127.0.0.1:6880{path}"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// `cluster/info` as server `i` answers it.
    pub fn info_on(&self, i: usize) -> Option<Value> {
        match self.get_on(i, "/api/v1/cluster/info") {
            (200, body) => serde_json::from_str(&body).ok(),
            _ => None,
        }
    }

    /// The node whose server leads, as server `asked` says and as that
    /// server's own `/metrics` confirm.
    pub fn leader_by(&self, asked: usize) -> Option<usize> {
        let info = self.info_on(asked)?;
        let id = info["servers"]
            .as_array()?
            .iter()
            .find(|s| s["leader"] == true && s["healthy"] == true)?["id"]
            .as_str()?
            .to_string();
        let node: usize = id.strip_prefix('n')?.parse().ok()?;
        let (_, metrics) = self.get_on(node, "/metrics");
        metrics.contains("\norca_leader 1\n").then_some(node)
    }

    /// Waits until server `asked` names a leader other than `not`.
    pub async fn until_leader(&self, asked: usize, not: Option<usize>) -> usize {
        super::super::eventually("a leader", Duration::from_secs(60), async || {
            match self.leader_by(asked) {
                Some(l) if Some(l) != not => Ok(l),
                other => Err(format!("{other:?}; {:?}", self.info_on(asked))),
            }
        })
        .await
    }

    /// Waits until server `i` answers its API (a follower starts
    /// serving only once the first leader has put the CA in the store).
    pub async fn until_api_on(&self, i: usize) {
        super::super::eventually(
            "the server's API",
            Duration::from_secs(60),
            async || match self.get_on(i, "/api/v1/cluster/info") {
                (200, _) => Ok(()),
                (status, body) => Err(format!("{status} {body}\nlog:\n{}", self.log(i))),
            },
        )
        .await;
    }

    /// Cuts (or mends) server `i`'s connections to etcd, and nothing
    /// else: its packets to any member's client port are dropped (an
    /// nftables table of the test's own in node `i`'s namespace).
    pub fn cut_from_etcd(&self, i: usize, cut: bool) {
        let script = if cut {
            "add table inet orca_test_cut\n\
             add chain inet orca_test_cut out { type filter hook output priority 0; }\n\
             add rule inet orca_test_cut out tcp dport 2379 drop\n"
        } else {
            "delete table inet orca_test_cut\n"
        };
        let mut nft = self.lab.nodes[i]
            .nsenter("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        nft.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        assert!(nft.wait().unwrap().success(), "nft in node {i}");
    }

    /// The terms node `i`'s agent followed, in the order its log says.
    pub fn terms_followed(&self, i: usize) -> Vec<u64> {
        self.log(i)
            .lines()
            .filter(|l| l.contains("following the leader of term"))
            .filter_map(|l| {
                let at = l.find("term=")? + 5;
                l[at..]
                    .split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The etcd log of member `i`.
    pub fn etcd_log(&self, i: usize) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("etcd{i}.log"))).unwrap_or_default()
    }
}

/// `POST path body` to `address:6880` as the admin, from the calling
/// thread's namespace (a lab node's, see `load::enter`): the status code
/// and the body (0 and the error when nothing came back).
pub fn post_at(address: std::net::Ipv4Addr, path: &str, body: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let target = std::net::SocketAddr::from((address, 6880));
    let mut s = match std::net::TcpStream::connect_timeout(&target, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) => return (0, format!("connect: {e}")),
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).ok();
    let sent = write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = sent {
        return (0, format!("write: {e}"));
    }
    let mut out = String::new();
    if let Err(e) = s.read_to_string(&mut out) {
        return (0, format!("read: {e}"));
    }
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}
