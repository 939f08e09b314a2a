//! Debian's pebble (an ACME server for tests) and pebble-challtestsrv (its
//! DNS, answering 127.0.0.1 for every name) on loopback ports of their
//! own, for the ACME test and benchmark. [`Pebble::prepare`] picks the
//! ports and makes pebble's HTTPS certificate (from a CA of its own), so
//! that orca can be configured first; [`Pebble::start`] then runs both,
//! validating HTTP-01 on the given port (orca's ingress). Both are ended
//! by their PIDs when dropped.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

pub struct Pebble {
    dir: tempfile::TempDir,
    acme_port: u16,
    mgmt_port: u16,
    dns_port: u16,
    dns_mgmt_port: u16,
    children: Vec<Child>,
}

/// A CA, and a certificate it signed for 127.0.0.1 and localhost:
/// (CA PEM, cert PEM, key PEM).
fn pebble_tls() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "orca test ACME CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// pebble and pebble-challtestsrv are installed.
pub fn installed() -> bool {
    ["pebble", "pebble-challtestsrv"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

impl Pebble {
    /// Ports and certificates, nothing running yet.
    pub fn prepare(free_port: impl Fn() -> u16) -> Pebble {
        let dir = tempfile::tempdir().unwrap();
        let (ca, cert, key) = pebble_tls();
        std::fs::write(dir.path().join("ca.pem"), ca).unwrap();
        std::fs::write(dir.path().join("pebble.pem"), cert).unwrap();
        std::fs::write(dir.path().join("pebble.key"), key).unwrap();
        Pebble {
            acme_port: free_port(),
            mgmt_port: free_port(),
            dns_port: free_port(),
            dns_mgmt_port: free_port(),
            dir,
            children: Vec::new(),
        }
    }

    /// The `[acme]` section that points orca at this pebble.
    pub fn acme_section(&self) -> String {
        format!(
            "[acme]\ndirectory = \"https://127.0.0.1:{}/dir\"\nemail = \"ops@example.com\"\nca_bundle = \"{}\"\n",
            self.acme_port,
            self.ca_path().display()
        )
    }

    /// The CA of pebble's own HTTPS (not of what it issues).
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("pebble.log")
    }

    /// What pebble logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Runs the DNS and pebble, which validates HTTP-01 on `http_port`.
    pub fn start(&mut self, http_port: u16, unused_port: u16) {
        let dns = Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args(["-dns01", &format!("127.0.0.1:{}", self.dns_port)])
            .args(["-management", &format!("127.0.0.1:{}", self.dns_mgmt_port)])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.children.push(dns);
        let path = |name: &str| self.dir.path().join(name);
        let config = serde_json::json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{}", self.acme_port),
            "managementListenAddress": format!("127.0.0.1:{}", self.mgmt_port),
            "certificate": path("pebble.pem"), "privateKey": path("pebble.key"),
            "httpPort": http_port, "tlsPort": unused_port,
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        } });
        std::fs::write(path("pebble.json"), config.to_string()).unwrap();
        let log = std::fs::File::create(self.log_path()).unwrap();
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{}", self.dns_port)])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.children.push(pebble);
    }

    /// The root pebble issues under, once it answers (from its
    /// management interface, over its own CA).
    pub fn issuing_root(&self) -> Option<String> {
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(self.ca_path())
            .arg(format!("https://127.0.0.1:{}/roots/0", self.mgmt_port))
            .output()
            .ok()?;
        let pem = String::from_utf8_lossy(&out.stdout).to_string();
        pem.contains("BEGIN CERTIFICATE").then_some(pem)
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        // Only what this helper started, by PID.
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
