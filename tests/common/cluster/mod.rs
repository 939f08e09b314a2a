//! An orca cluster in the multi-node lab: `orca server` on node 0 and
//! `orca agent` on the others, each in its node's namespace with its own
//! containerd, images from the LAN's registry. The test talks to the API
//! with the `orca` CLI run inside node 0's namespace (nothing leaves the
//! lab). Processes are started and ended by PID; on drop every replica is
//! killed in each node's containerd before the lab goes.

#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::lab::Lab;

mod containers;
mod paths;
mod refusals;
mod volumes;
#[allow(unused_imports)]
pub use containers::running_versions;
mod exec;
pub mod ha;
pub mod load;
pub mod overlay;

pub const ADMIN: &str = "admin-token-for-the-lab-0001";
/// The image every lab test runs: a keep-alive HTTP server.
pub const KAWEB: &str = "kaweb:v1";
/// Prints "line N" every 200 ms.
pub const LOGGER: &str = "logger:latest";

/// See the module doc.
pub struct LabCluster {
    pub lab: Lab,
    /// `host:port` of the LAN's registry.
    pub registry: String,
    dir: tempfile::TempDir,
    server: Option<Child>,
    /// This test's turn with the lab: one cluster at a time per test
    /// binary, so that heartbeats keep time on a small machine. Released
    /// after the drop's cleanup.
    _turn: tokio::sync::MutexGuard<'static, ()>,
    /// Each node's `orca` but node 0's server: agents, and the other
    /// servers of a control plane of several (see `ha`).
    agents: Vec<Option<Child>>,
    /// Each node's containerd namespace.
    namespaces: Vec<String>,
    /// How many nodes (0, 1, ...) run a server; each with an etcd member
    /// when more than one.
    pub servers: usize,
    /// The server node whose API the test talks to.
    pub api_node: usize,
    etcd: Vec<Option<Child>>,
}

/// Seconds from now until `done` holds (polled every 50 ms), at most
/// `limit`.
pub fn time_until(limit: Duration, mut done: impl FnMut() -> bool) -> f64 {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed().as_secs_f64()
}

fn node_id(i: usize) -> String {
    format!("n{i}")
}

impl LabCluster {
    /// A lab of `n` nodes with the server on node 0 (its [cluster] gets
    /// `cluster_extra`), and no agent started yet.
    pub async fn start_server(env: &super::TestEnv, n: usize, cluster_extra: &str) -> LabCluster {
        Self::start_server_with(env, n, cluster_extra, "").await
    }

    /// As [`LabCluster::start_server`], with `network_extra` in every
    /// node's [network] (a backend, say).
    pub async fn start_server_with(
        env: &super::TestEnv,
        n: usize,
        cluster_extra: &str,
        network_extra: &str,
    ) -> LabCluster {
        let mut cluster = Self::lab_only(env, n).await;
        cluster.write_configs(cluster_extra, network_extra);
        cluster.spawn_server();
        cluster.wait_api().await;
        cluster
    }

    /// The lab, its registry and the cluster's files, with nothing of
    /// orca started.
    async fn lab_only(env: &super::TestEnv, n: usize) -> LabCluster {
        static TURNS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
        let turn = TURNS.lock().await;
        let mut lab = Lab::start(n).await;
        let registry = lab
            .start_registry(&[
                (env.images.join("kaweb-v1"), KAWEB),
                (env.images.join("logger-latest"), LOGGER),
                (env.images.join("web-v1"), "web:v1"),
                (env.images.join("web-v2"), "web:v2"),
            ])
            .await;
        let dir = tempfile::tempdir().unwrap();
        let tag = super::rand_u32() & 0xff_ffff;
        let namespaces = (0..n).map(|i| format!("olab{i}x{tag:06x}")).collect();
        LabCluster {
            lab,
            registry,
            dir,
            server: None,
            _turn: turn,
            agents: (0..n).map(|_| None).collect(),
            namespaces,
            servers: 1,
            api_node: 0,
            etcd: (0..n).map(|_| None).collect(),
        }
    }

    /// The whole cluster: the server and `n - 1` joined agents, all ready.
    pub async fn start(env: &super::TestEnv, n: usize, cluster_extra: &str) -> LabCluster {
        Self::start_with(env, n, cluster_extra, "").await
    }

    /// As [`LabCluster::start`], with `network_extra` in every node's
    /// [network].
    pub async fn start_with(
        env: &super::TestEnv,
        n: usize,
        cluster_extra: &str,
        network_extra: &str,
    ) -> LabCluster {
        let mut c = Self::start_server_with(env, n, cluster_extra, network_extra).await;
        let token = c.join_token("1h");
        for i in 1..n {
            c.spawn_agent(i, Some(&token));
        }
        c.wait_ready(n).await;
        c
    }

    fn write_configs(&self, cluster_extra: &str, network_extra: &str) {
        for (i, node) in self.lab.nodes.iter().enumerate() {
            let labels = if i + 1 == self.lab.nodes.len() && i > 0 {
                "labels = { zone = \"edge\" }"
            } else {
                ""
            };
            let server_part = if i == 0 {
                format!(
                    "api_listen = \"127.0.0.1:6880\"\ngrpc_listen = \"{}:6881\"\n{cluster_extra}\n",
                    node.address
                )
            } else {
                String::new()
            };
            let config = format!(
                "[cluster]\nname = \"lab\"\ndata_dir = \"{data}\"\n{server_part}\
                 [containerd]\nsocket = \"{socket}\"\nnamespace = \"{ns}\"\n\
                 [network]\n{network_extra}\n\
                 [proxy]\nhttp_listen = \"127.0.0.1:8080\"\nhttps_listen = \"127.0.0.1:8443\"\ncert_dir = \"{certs}\"\n\
                 [registry]\ninsecure = [\"{registry}\"]\n\
                 [node]\nid = \"{id}\"\n{labels}\n\
                 [[token]]\nname = \"admin\"\nvalue = \"{ADMIN}\"\nrole = \"admin\"\n",
                data = self.data_dir(i).display(),
                certs = self.cert_dir().display(),
                socket = node.socket.display(),
                ns = self.namespaces[i],
                registry = self.registry,
                id = node_id(i),
            );
            // Agents take no [[token]]: only the server serves the API.
            let config = if i == 0 {
                config
            } else {
                config.split("[[token]]").next().unwrap().to_string()
            };
            std::fs::write(self.config_path(i), config).unwrap();
        }
    }

    fn spawn(&self, i: usize, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .unwrap();
        // nsenter execs orca: the PID is orca's own.
        self.lab.nodes[i]
            .nsenter(super::orca_bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path(i))
            .env("ORCA_LOG", "info")
            .env_remove("ORCA_TOKEN")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    pub fn spawn_server(&mut self) {
        self.server = Some(self.spawn(0, &["server"]));
    }

    /// Starts node `i`'s agent (joining with `token` if given).
    pub fn spawn_agent(&mut self, i: usize, token: Option<&str>) {
        let join = (0..self.servers)
            .map(|s| format!("{}:6881", self.lab.nodes[s].address))
            .collect::<Vec<_>>()
            .join(",");
        let mut args = vec!["agent", "--join", &join];
        if let Some(t) = token {
            args.extend(["--token", t]);
        }
        let child = self.spawn(i, &args);
        self.agents[i] = Some(child);
    }

    /// Changes node `i`'s config file with `edit`.
    pub fn edit_config(&self, i: usize, edit: impl FnOnce(String) -> String) {
        let path = self.config_path(i);
        let config = std::fs::read_to_string(&path).unwrap();
        std::fs::write(&path, edit(config)).unwrap();
    }

    fn end(child: &mut Option<Child>, signal: nix::sys::signal::Signal) {
        if let Some(mut c) = child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, signal);
            let _ = c.wait();
        }
    }

    /// The PID of node `i`'s agent, while it runs.
    pub fn agent_pid(&self, i: usize) -> Option<u32> {
        self.agents[i].as_ref().map(Child::id)
    }

    /// The server's PID, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Child::id)
    }

    /// SIGKILL to node `i`'s agent.
    pub fn kill_agent(&mut self, i: usize) {
        Self::end(&mut self.agents[i], nix::sys::signal::Signal::SIGKILL);
    }

    /// SIGKILL to the server.
    pub fn kill_server(&mut self) {
        Self::end(&mut self.server, nix::sys::signal::Signal::SIGKILL);
    }

    /// The server again, waited for.
    pub async fn restart_server(&mut self) {
        self.spawn_server();
        self.wait_api().await;
    }

    /// Runs `orca ARGS` inside node 0's namespace against the API.
    pub fn orca(&self, args: &[&str]) -> Output {
        self.lab.nodes[self.api_node]
            .nsenter(super::orca_bin())
            .args(["--api", "http://127.0.0.1:6880", "--token", ADMIN])
            .args(args)
            .output()
            .unwrap()
    }

    /// The events the server keeps (its last 1,000), read with `orca
    /// events --since 0` inside node 0's namespace (it follows, so it is
    /// stopped after 3 s).
    pub fn events(&self) -> Vec<api::events::Event> {
        let out = self.lab.nodes[0]
            .nsenter("timeout")
            .arg("3")
            .arg(super::orca_bin())
            .args(["--api", "http://127.0.0.1:6880", "--token", ADMIN])
            .args(["events", "--since", "0", "--output", "json"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Whether `events` has one of `kind` about node `node`.
    pub fn has_node_event(
        events: &[api::events::Event],
        kind: api::events::EventKind,
        node: &str,
    ) -> bool {
        events
            .iter()
            .any(|e| e.kind == kind && e.node.as_deref() == Some(node) && e.instance.is_none())
    }

    /// `/metrics`, fetched inside node 0's namespace.
    pub fn orca_metrics(&self) -> Vec<u8> {
        let out = self.lab.nodes[0]
            .nsenter("curl")
            .args(["-sSf", "http://127.0.0.1:6880/metrics"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `orca ARGS --output json`, which must succeed.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.orca(&all);
        assert!(
            out.status.success(),
            "orca {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// A new join token.
    pub fn join_token(&self, ttl: &str) -> String {
        self.json(&["cluster", "join-token", "--ttl", ttl])["token"]
            .as_str()
            .unwrap()
            .to_string()
    }

    async fn wait_api(&self) {
        super::eventually(
            "the lab server's API",
            Duration::from_secs(60),
            async || {
                let out = self.orca(&["nodes", "--output", "json"]);
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{}\nlog:\n{}",
                        String::from_utf8_lossy(&out.stderr),
                        self.log(0)
                    ))
                }
            },
        )
        .await;
    }

    /// The nodes as `cluster/info` lists them.
    pub fn nodes(&self) -> Vec<Value> {
        self.json(&["nodes"])["nodes"].as_array().unwrap().clone()
    }

    pub fn node(&self, id: &str) -> Option<Value> {
        self.nodes().into_iter().find(|n| n["id"] == id)
    }

    /// Waits until `n` nodes are ready, with their containerd up (so that
    /// they take replicas).
    pub async fn wait_ready(&self, n: usize) {
        super::eventually("every node ready", Duration::from_secs(60), async || {
            let ready = self
                .nodes()
                .iter()
                .filter(|n| n["state"] == "ready" && n["containerd"] == "up")
                .count();
            if ready == n {
                Ok(())
            } else {
                Err(format!(
                    "{ready} of {n} ready: {:?}\nagent logs:\n{}",
                    self.nodes(),
                    (1..self.lab.nodes.len())
                        .map(|i| self.log(i))
                        .collect::<Vec<_>>()
                        .join("\n")
                ))
            }
        })
        .await;
    }

    /// `<registry>/orca-test/<image>`.
    pub fn image(&self, image: &str) -> String {
        format!("{}/orca-test/{image}", self.registry)
    }

    /// Deploys `services` (a JSON array of service specs) through the API.
    pub fn deploy(&self, services: Value) {
        let (status, answer) = self.deploy_answer(services);
        assert!(status == 200, "deploy: {status} {answer}");
        assert!(
            answer["errors"].as_array().is_none_or(|e| e.is_empty()),
            "deploy: {answer}"
        );
    }

    /// Deploys `services` through the API: the status code and the body.
    pub fn deploy_answer(&self, services: Value) -> (u16, Value) {
        let dir = self.dir.path().join(format!("deploy{}", super::rand_u32()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("services.json");
        std::fs::write(
            &file,
            serde_json::json!({ "services": services }).to_string(),
        )
        .unwrap();
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.lab.nodes[self.api_node].netns,
                "curl",
                "-sS",
                "-w",
                "\n%{http_code}",
            ])
            .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
            .args(["-H", "Content-Type: application/json"])
            .arg("--data-binary")
            .arg(format!("@{}", file.display()))
            .arg("http://127.0.0.1:6880/api/v1/deploy")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("deploy: {text}{}", String::from_utf8_lossy(&out.stderr)));
        (status, serde_json::from_str(body).unwrap_or(Value::Null))
    }

    /// A service's status.
    pub fn service(&self, name: &str) -> Value {
        self.json(&["status"])["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }
}
