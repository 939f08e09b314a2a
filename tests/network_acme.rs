//! `tls = "acme"` against Debian's pebble, a real ACME server, on
//! loopback: the server orders a certificate, answers the HTTP-01
//! challenge through its own ingress (pebble resolves the domain to
//! 127.0.0.1 through pebble-challtestsrv's DNS, and fetches the answer
//! from the ingress's port), serves what pebble issued over HTTPS, and
//! after a kill -9 serves the same certificate again from its store.

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::server::{Extra, OrcaServer};
use serde_json::json;

/// A child process of this test, ended by its PID when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pebble and pebble-challtestsrv, or `None` outside CI when missing.
fn pebble_available() -> bool {
    let found = ["pebble", "pebble-challtestsrv"].iter().all(|b| {
        Command::new("sh")
            .args(["-c", &format!("command -v {b}")])
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            !common::in_ci(),
            "pebble is missing under CI (apt-get install pebble)"
        );
        eprintln!("SKIPPING: no pebble (apt-get install pebble)");
    }
    found
}

/// A CA, and a certificate it signed for pebble's own HTTPS on 127.0.0.1:
/// (CA PEM, server cert PEM, server key PEM).
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
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_acme_server_is_issued_served_and_kept() {
    let Some(env) = common::env() else { return };
    if !pebble_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (ca, pebble_cert, pebble_key) = pebble_tls();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("ca.pem"), &ca).unwrap();
    std::fs::write(path("pebble.pem"), &pebble_cert).unwrap();
    std::fs::write(path("pebble.key"), &pebble_key).unwrap();
    let (acme_port, mgmt_port, dns_port, dns_mgmt_port, https_port) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );

    let proxy = format!(
        "https_listen = \"127.0.0.1:{https_port}\"\n[acme]\ndirectory = \"https://127.0.0.1:{acme_port}/dir\"\n\
         email = \"ops@example.com\"\nca_bundle = \"{}\"\n",
        path("ca.pem").display()
    );
    let extra = Extra {
        proxy: &proxy,
        ..Default::default()
    };
    let mut server = OrcaServer::start_with(&env, "acme", extra).await;

    // pebble-challtestsrv answers every name with 127.0.0.1; pebble
    // validates HTTP-01 on the server's ingress port.
    let _dns = Running(
        Command::new("pebble-challtestsrv")
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
            .args(["-dns01", &format!("127.0.0.1:{dns_port}")])
            .args(["-management", &format!("127.0.0.1:{dns_mgmt_port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::fs::write(
        path("pebble.json"),
        json!({ "pebble": {
            "listenAddress": format!("127.0.0.1:{acme_port}"),
            "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
            "certificate": path("pebble.pem"), "privateKey": path("pebble.key"),
            "httpPort": server.proxy_port, "tlsPort": common::free_port(),
            "ocspResponderURL": "", "externalAccountBindingRequired": false
        } })
        .to_string(),
    )
    .unwrap();
    let pebble_log = std::fs::File::create(path("pebble.log")).unwrap();
    let _pebble = Running(
        Command::new("pebble")
            .arg("-config")
            .arg(path("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns_port}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .stdout(pebble_log.try_clone().unwrap())
            .stderr(pebble_log)
            .spawn()
            .unwrap(),
    );

    common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "site", "image": env.image("web:v1"), "port": 8080, "domain": "acme.test",
                 "tls": "acme", "stop_grace_secs": 1 }]),
    )
    .await;

    // pebble's roots, from its management interface (over our CA).
    let roots = common::eventually("pebble's root", Duration::from_secs(30), async || {
        let out = Command::new("curl")
            .args(["-sf", "--cacert"])
            .arg(path("ca.pem"))
            .arg(format!("https://127.0.0.1:{mgmt_port}/roots/0"))
            .output()
            .map_err(|e| e.to_string())?;
        let pem = String::from_utf8_lossy(&out.stdout).to_string();
        if pem.contains("BEGIN CERTIFICATE") {
            Ok(pem)
        } else {
            Err(format!("{out:?}"))
        }
    })
    .await;
    let (answer, leaf) = common::eventually(
        "HTTPS for acme.test with pebble's certificate",
        Duration::from_secs(90),
        async || match common::tls::https_get(https_port, "acme.test", &roots).await {
            Ok((a, leaf)) if a.starts_with("HTTP/1.1 200") => Ok((a, leaf)),
            other => Err(format!(
                "{other:?}\npebble: {}\nserver: {}",
                std::fs::read_to_string(path("pebble.log")).unwrap_or_default(),
                server.log()
            )),
        },
    )
    .await;
    assert!(answer.ends_with("web v1\n"), "{answer}");
    let log = std::fs::read_to_string(path("pebble.log")).unwrap();
    assert!(
        log.contains("acme.test"),
        "pebble never saw the domain: {log}"
    );

    // Kept in the store: after a kill -9 the same certificate is served.
    server.kill9();
    server.spawn().await;
    let again = common::eventually(
        "HTTPS after a restart",
        Duration::from_secs(30),
        async || match common::tls::https_get(https_port, "acme.test", &roots).await {
            Ok((a, leaf)) if a.starts_with("HTTP/1.1 200") => Ok(leaf),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert_eq!(
        again, leaf,
        "a new certificate after the restart: it was not kept"
    );
}
