//! A real `orca server` for API tests: its own data dir, port and
//! containerd namespace, tokens for each role, started and killed by PID.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use api::client::ApiClient;

use super::TestEnv;

pub const ADMIN: &str = "admin-token-for-tests-0001";
pub const DEPLOYER: &str = "deployer-token-for-tests-01";
pub const VIEWER: &str = "viewer-token-for-tests-0001";

/// A bridge name of the server's own (interface names: at most 15 bytes).
pub fn bridge_name(namespace: &str) -> String {
    format!("ot{:08x}", hash(namespace) as u32)
}

/// A /24 of the server's own in 10.100.0.0/14: none that another server of
/// this process holds, nor one whose gateway address a host interface
/// already has (another test run's bridge, say).
pub fn free_subnet(namespace: &str) -> String {
    static CLAIMED: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());
    let host = Command::new("ip")
        .args(["-o", "-4", "addr", "show"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut claimed = CLAIMED.lock().unwrap();
    let start = hash(namespace);
    for i in 0..1024 {
        let n = (start + i) % 1024;
        let (b, c) = (100 + n / 256, n % 256);
        if !claimed.contains(&n) && !host.contains(&format!("inet 10.{b}.{c}.1/")) {
            claimed.push(n);
            return format!("10.{b}.{c}.0/24");
        }
    }
    panic!("no free /24 left in 10.100.0.0/14");
}

fn hash(s: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// The config's tokens: the tests' admin, deployer and viewer.
fn token_sections() -> String {
    format!(
        "[[token]]\nname = \"admin\"\nvalue = \"{ADMIN}\"\nrole = \"admin\"\n\
         [[token]]\nname = \"ci\"\nvalue = \"{DEPLOYER}\"\nrole = \"deployer\"\n\
         [[token]]\nname = \"dashboard\"\nvalue = \"{VIEWER}\"\nrole = \"viewer\"\n"
    )
}

/// Lines added to a test server's config, by section.
#[derive(Default, Clone, Copy)]
pub struct Extra<'a> {
    pub cluster: &'a str,
    pub proxy: &'a str,
    /// No `[[token]]` in the config (a first start as on a fresh host).
    pub no_tokens: bool,
    /// Environment of the server process, besides `ORCA_LOG=info`.
    pub env: &'a [(&'a str, &'a str)],
    /// `data_dir` on a tmpfs of this size (`"32m"`), unmounted at the end.
    pub data_tmpfs: Option<&'a str>,
    /// `[node] id`, "node-1" unless given.
    pub node_id: Option<&'a str>,
    /// Whole sections appended to the config (`[volumes]`, say).
    pub sections: &'a str,
}

pub struct OrcaServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The ingress proxy's port.
    pub proxy_port: u16,
    pub namespace: String,
    /// The node's /24.
    pub subnet: String,
    pub socket: PathBuf,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl OrcaServer {
    pub async fn start(env: &TestEnv, name: &str) -> OrcaServer {
        Self::start_with(env, name, Extra::default()).await
    }

    /// Starts a server with `extra` lines in its config's sections.
    pub async fn start_with(env: &TestEnv, name: &str, extra: Extra<'_>) -> OrcaServer {
        let Extra {
            cluster: cluster_extra,
            proxy: proxy_extra,
            no_tokens,
            env: server_env,
            data_tmpfs,
            node_id,
            sections,
        } = extra;
        let dir = tempfile::tempdir().unwrap();
        if let Some(size) = data_tmpfs {
            let data = dir.path().join("data");
            std::fs::create_dir_all(&data).unwrap();
            let mounted = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&data)
                .status()
                .unwrap();
            assert!(mounted.success(), "mount a tmpfs on {}", data.display());
        }
        let port = super::free_port();
        let proxy_port = super::free_port();
        let namespace = super::namespace(name);
        let subnet = free_subnet(&namespace);
        let config = format!(
            r#"
[cluster]
name = "test"
data_dir = "{data}"
api_listen = "127.0.0.1:{port}"
grpc_listen = "127.0.0.1:{grpc_port}"
{cluster_extra}
[containerd]
socket = "{socket}"
namespace = "{namespace}"
[network]
bridge = "{bridge}"
subnet = "{subnet}"
[proxy]
http_listen = "127.0.0.1:{proxy_port}"
cert_dir = "{certs}"
{proxy_extra}
[registry.mirrors]
"docker.io" = "http://{registry}"
[node]
id = "{node_id}"
labels = {{ zone = "test" }}
{tokens}
{sections}"#,
            data = dir.path().join("data").display(),
            certs = dir.path().join("certs").display(),
            socket = env.socket.display(),
            registry = env.registry,
            bridge = bridge_name(&namespace),
            grpc_port = super::free_port(),
            node_id = node_id.unwrap_or("node-1"),
            tokens = if no_tokens {
                String::new()
            } else {
                token_sections()
            },
        );
        std::fs::write(dir.path().join("cluster.toml"), config).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        let mut server = OrcaServer {
            dir,
            port,
            proxy_port,
            namespace,
            subnet,
            socket: env.socket.clone(),
            env: server_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            child: None,
        };
        server.spawn().await;
        server
    }

    /// Starts the process (again) and waits for its health endpoint.
    pub async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(super::orca_bin())
            .arg("server")
            .arg("--config")
            .arg(self.dir.path().join("cluster.toml"))
            .env("ORCA_LOG", "info")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let client = self.client(None);
        // Generous: under a loaded test run a start can take seconds.
        for _ in 0..800 {
            if client
                .get::<serde_json::Value>("/api/v1/health")
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("orca server did not come up; log:\n{}", self.log());
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits up to 10 s for the exit; its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// The server's PID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The server's `[proxy] cert_dir`: where services' `tls` files go.
    pub fn cert_dir(&self) -> std::path::PathBuf {
        self.dir.path().join("certs")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn client(&self, token: Option<&str>) -> ApiClient {
        ApiClient::new(
            &format!("http://127.0.0.1:{}", self.port),
            token.map(str::to_string),
        )
    }

    pub fn admin(&self) -> ApiClient {
        self.client(Some(ADMIN))
    }

    /// A new token of `role` scoped to `project`, made by the admin: its
    /// client and its value.
    pub async fn scoped_token(&self, name: &str, role: &str, project: &str) -> (ApiClient, String) {
        let t: serde_json::Value = self
            .admin()
            .post(
                "/api/v1/tokens",
                &serde_json::json!({ "name": name, "role": role, "project": project }),
            )
            .await
            .unwrap();
        let value = t["token"].as_str().unwrap().to_string();
        (self.client(Some(&value)), value)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Runs the `orca` CLI against this server with `token`, off the
    /// runtime's threads: (exit code, stdout, stderr).
    pub async fn cli(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        self.cli_env(&[("ORCA_TOKEN", token)], args).await
    }

    /// Runs the `orca` CLI against this server with `env` and no other
    /// `ORCA_TOKEN` or `ORCA_DATA_DIR`: (exit code, stdout, stderr).
    pub async fn cli_env(&self, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
        let api = format!("http://{}", self.addr());
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let out = Command::new(super::orca_bin())
                .args(&args)
                .env("ORCA_API", api)
                .env_remove("ORCA_TOKEN")
                .env_remove("ORCA_DATA_DIR")
                .envs(env)
                .output()
                .unwrap();
            (
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
        .await
        .unwrap()
    }

    /// A cri client in the server's namespace, to check containerd itself.
    pub async fn cri(&self) -> cri::Cri {
        cri::Cri::connect(cri::ConnectOptions::new(&self.socket, &self.namespace))
            .await
            .unwrap()
    }
}

impl Drop for OrcaServer {
    fn drop(&mut self) {
        self.kill9();
        // A tmpfs data_dir (see `Extra::data_tmpfs`); nothing when none.
        let data = self.dir.path().join("data");
        if std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| m.contains(&format!(" {} tmpfs ", data.display())))
        {
            let _ = Command::new("umount").arg("-l").arg(&data).status();
        }
        // Remove what the server left in containerd, without an async runtime.
        let socket = self.socket.clone();
        let ns = self.namespace.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async {
                if let Ok(c) = cri::Cri::connect(cri::ConnectOptions::new(&socket, &ns)).await {
                    super::cleanup(&c).await;
                    // A create the killed server had sent may land just after.
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    super::cleanup(&c).await;
                }
            });
        })
        .join();
        super::kill_orphan_shims(&self.socket, &self.namespace);
        // The namespaces, bridge and NAT table of this server's own (a node
        // keeps them; a test leaves nothing).
        let netns = PathBuf::from(format!("/run/orca/test-{}/netns", self.namespace));
        for entry in std::fs::read_dir(&netns).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg("-l").arg(entry.path()).output();
        }
        let _ = std::fs::remove_dir_all(netns.parent().unwrap_or(&netns));
        super::host::remove_bridge(&bridge_name(&self.namespace));
    }
}
