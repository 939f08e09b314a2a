//! A real etcd for one test: Debian's `etcd` binary on loopback ports of
//! its own, with its data in a temporary directory. Killed (by its PID)
//! when dropped, even after a panic.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;

pub struct Etcd {
    pub dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT`, or `https://` with TLS.
    pub url: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and `/metrics`, with or without TLS.
    metrics_port: u16,
    /// With TLS: the PKI, written into `dir` (see [`TestPki::write`]).
    pub pki: Option<super::tls::TestPki>,
    child: Option<Child>,
}

impl Etcd {
    /// Starts a one-member etcd and waits until it answers; None (a skip)
    /// without the binary, except under CI, where that fails the test.
    pub async fn start() -> Option<Etcd> {
        Self::start_with(false).await
    }

    /// [`Etcd::start`] serving its clients over TLS with a CA of its own,
    /// and requiring a client certificate signed by it.
    pub async fn start_tls() -> Option<Etcd> {
        Self::start_with(true).await
    }

    async fn start_with(tls: bool) -> Option<Etcd> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                !super::in_ci(),
                "etcd is missing under CI (apt-get install etcd-server)"
            );
            eprintln!("SKIPPING: no etcd binary (apt-get install etcd-server)");
            return None;
        }
        let (client_port, peer_port) = (super::free_port(), super::free_port());
        let scheme = if tls { "https" } else { "http" };
        let mut etcd = Etcd {
            dir: tempfile::tempdir().unwrap(),
            url: format!("{scheme}://127.0.0.1:{client_port}"),
            client_port,
            peer_port,
            metrics_port: super::free_port(),
            pki: tls.then(|| super::tls::TestPki::new("etcd")),
            child: None,
        };
        if let Some(pki) = &etcd.pki {
            pki.write(etcd.dir.path());
        }
        etcd.spawn().await;
        Some(etcd)
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the process (again, on the same data) and waits for it.
    pub async fn spawn(&mut self) {
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .unwrap();
        let mut cmd = Command::new("etcd");
        if self.pki.is_some() {
            let file = |f: &str| self.dir.path().join(f);
            cmd.arg("--cert-file")
                .arg(file("server.pem"))
                .arg("--key-file")
                .arg(file("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(file("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .args(["--name", "t", "--data-dir"])
            .arg(self.data())
            .args(["--listen-client-urls", &self.url])
            .args(["--advertise-client-urls", &self.url])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args([
                "--listen-metrics-urls",
                &format!("http://127.0.0.1:{}", self.metrics_port),
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        super::eventually("etcd healthy", Duration::from_secs(30), async || {
            match super::http::exchange(
                ("127.0.0.1", self.metrics_port),
                b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await
            {
                (200, body) if body.contains("true") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }

    /// SIGKILL, as a crash would; the data stays.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every key under `prefix`, sorted, as etcd's JSON gateway lists them
    /// (an etcd without TLS).
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        let body = serde_json::json!({
            "key": b64.encode(prefix),
            "range_end": b64.encode(&end),
            "keys_only": true,
        })
        .to_string();
        let request = format!(
            "POST /v3/kv/range HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let (status, answer) =
            super::http::exchange(("127.0.0.1", self.client_port), request.as_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
        let mut keys: Vec<String> = answer["kvs"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|kv| {
                let raw = b64.decode(kv["key"].as_str().unwrap()).unwrap();
                String::from_utf8(raw).unwrap()
            })
            .collect();
        keys.sort();
        keys
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill9();
    }
}
