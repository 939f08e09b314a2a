//! HTTPS on the ingress with a service's own certificate files, on a real
//! server and replicas: the certificate the client's SNI names is served,
//! plain HTTP to that domain is redirected, files that change on disk are
//! served again (a renewal), and bad files leave the service on HTTP with
//! a status message that says why. X-Forwarded-Proto and the ACME path:
//! `network/src/proxy/tls.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::{Extra, OrcaServer};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_with_its_own_certificate_is_served_over_https() {
    let Some(env) = common::env() else { return };
    let https_port = common::free_port();
    let proxy = format!("https_listen = \"127.0.0.1:{https_port}\"");
    let extra = Extra {
        proxy: &proxy,
        ..Default::default()
    };
    let server = OrcaServer::start_with(&env, "tls", extra).await;
    let c = server.admin();
    let certs = server.cert_dir();
    let (cert_path, key_path) = (certs.join("fullchain.pem"), certs.join("privkey.pem"));
    let (cert, key) = common::tls::self_signed("secure.test");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let web = env.image("web:v1");
    let tls = json!({ "cert": cert_path.to_str().unwrap(), "key": key_path.to_str().unwrap() });
    let gone = certs
        .join("gone")
        .join("fullchain.pem")
        .display()
        .to_string();
    let missing = json!({ "cert": gone, "key": certs.join("gone/privkey.pem") });
    common::deploy_all_ready(
        &c,
        json!([
            { "name": "secure", "image": web, "port": 8080, "domain": "secure.test", "tls": tls, "stop_grace_secs": 1 },
            { "name": "broken", "image": web, "port": 8080, "domain": "broken.test", "tls": missing, "stop_grace_secs": 1 }
        ]),
    )
    .await;

    // HTTPS with the service's certificate, to its replicas.
    let (answer, shown) = common::eventually(
        "HTTPS for secure.test",
        Duration::from_secs(30),
        async || match common::tls::https_get(https_port, "secure.test", &cert).await {
            Ok((a, shown)) if a.starts_with("HTTP/1.1 200") => Ok((a, shown)),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
    assert!(answer.ends_with("web v1\n"), "{answer}");
    assert_eq!(shown, common::tls::der_of(&cert));
    let secure = common::wait_for(&c, "secure", "no TLS message", |s| s.message.is_none()).await;
    assert_eq!(secure.message, None);
    // Plain HTTP to it: redirected, port and path kept.
    let request = "GET /x?y=1 HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n";
    let (status, _) =
        common::http::exchange(("127.0.0.1", server.proxy_port), request.as_bytes()).await;
    assert_eq!(status, 308);
    let head = common::http::head(server.proxy_port, "secure.test", "/x?y=1").await;
    assert!(
        head.contains(&format!("location: https://secure.test:{https_port}/x?y=1")),
        "{head}"
    );

    // Bad files: the service answers on HTTP, and its status says why.
    let (status, body) = common::http::get(server.proxy_port, "broken.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "web v1"));
    let s = common::wait_for(&c, "broken", "a TLS message", |s| {
        s.message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("tls.cert {gone}")))
    })
    .await;
    assert!(s.message.unwrap().contains("serving HTTP only"));
    assert!(common::tls::https_get(https_port, "broken.test", &cert)
        .await
        .is_err());

    // A renewal: new files in place are served without a deploy.
    let (renewed, renewed_key) = common::tls::self_signed("secure.test");
    std::fs::write(&key_path, &renewed_key).unwrap();
    std::fs::write(&cert_path, &renewed).unwrap();
    common::eventually(
        "the renewed certificate",
        Duration::from_secs(30),
        async || match common::tls::https_get(https_port, "secure.test", &renewed).await {
            Ok((a, shown))
                if a.starts_with("HTTP/1.1 200") && shown == common::tls::der_of(&renewed) =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    // A file swapped for a link after the deploy is not followed: the
    // service falls back to HTTP and says why.
    let shadow_link = certs.join("swapped.pem");
    std::fs::copy(&cert_path, &shadow_link).unwrap();
    let swapped = json!({ "cert": shadow_link, "key": key_path });
    common::deploy_all_ready(
        &c,
        json!([{ "name": "swapped", "image": web, "port": 8080, "domain": "swapped.test", "tls": swapped, "stop_grace_secs": 1 }]),
    )
    .await;
    common::wait_for(&c, "swapped", "served over HTTPS", |s| s.message.is_none()).await;
    std::fs::remove_file(&shadow_link).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", &shadow_link).unwrap();
    let s = common::wait_for(&c, "swapped", "a TLS message", |s| {
        s.message.as_deref().is_some_and(|m| m.contains("symlink"))
    })
    .await;
    assert!(s.message.unwrap().contains("serving HTTP only"));

    // Files outside cert_dir, devices, FIFOs and links are refused at the
    // deploy, before anything is read.
    let fifo = certs.join("fifo.pem");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let link = certs.join("link.pem");
    std::os::unix::fs::symlink("/etc/shadow", &link).unwrap();
    let key = key_path.to_str().unwrap();
    let with_cert = |cert: &str| json!({ "name": "x", "image": web, "port": 8080, "domain": "x.test", "tls": { "cert": cert, "key": key } });
    for (cert, says) in [
        ("/dev/zero", "cert_dir"),
        ("/etc/shadow", "cert_dir"),
        (&*format!("{}/../shadow", certs.display()), "tls.cert"),
        (fifo.to_str().unwrap(), "not a regular file"),
        (link.to_str().unwrap(), "symlink"),
    ] {
        let r = c
            .post::<_, Value>("/api/v1/deploy", &json!({ "services": [with_cert(cert)] }))
            .await;
        match r {
            Err(api::client::ClientError::Api {
                status: 400,
                message,
            }) => assert!(message.contains(says), "{cert}: {message}"),
            other => panic!("{cert}: {other:?}"),
        }
    }
    // The server kept its size and answers at once.
    let health = tokio::time::timeout(Duration::from_secs(2), c.get::<Value>("/api/v1/health"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(health["status"], "ok");

    // Specs the server cannot act on are refused whole.
    for (bad, says) in [
        (
            json!({ "name": "x", "image": "y", "tls": tls }),
            "tls needs a domain",
        ),
        (
            json!({ "name": "x", "image": "y", "domain": "x.test", "tls": "letsencrypt" }),
            "must be \"acme\" or { cert",
        ),
        (
            json!({ "name": "x", "image": "y", "domain": "x.test", "tls": { "cert": "rel.pem", "key": "/k" } }),
            "absolute",
        ),
    ] {
        let r = c
            .post::<_, Value>("/api/v1/deploy", &json!({ "services": [bad] }))
            .await;
        match r {
            Err(api::client::ClientError::Api {
                status: 400,
                message,
            }) => {
                assert!(message.contains(says), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
}

/// A node whose ingress has no HTTPS serves a TLS service over HTTP (no
/// redirect to a port nobody listens on), and the status names the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_https_is_named_in_the_status() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "tls-none").await;
    let c = server.admin();
    let files = server.cert_dir();
    let (cert, key) = common::tls::self_signed("plain.test");
    let (cert_path, key_path) = (files.join("c.pem"), files.join("k.pem"));
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    let tls = json!({ "cert": cert_path.to_str().unwrap(), "key": key_path.to_str().unwrap() });
    common::deploy_all_ready(
        &c,
        json!([{ "name": "plain", "image": env.image("web:v1"), "port": 8080, "domain": "plain.test", "tls": tls, "stop_grace_secs": 1 }]),
    )
    .await;
    let s = common::wait_for(&c, "plain", "the HTTP-only note", |s| {
        s.message
            .as_deref()
            .is_some_and(|m| m.contains("served over HTTP only on"))
    })
    .await;
    assert!(
        s.message
            .as_deref()
            .unwrap()
            .contains("no [proxy] https_listen there"),
        "{:?}",
        s.message
    );
    let (status, body) = common::http::get(server.proxy_port, "plain.test", "/").await;
    assert_eq!((status, body.as_str()), (200, "web v1"));
}
