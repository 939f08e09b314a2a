//! `tls = "acme"` against Debian's pebble, a real ACME server, on
//! loopback: the server orders a certificate, answers the HTTP-01
//! challenge through its own ingress (pebble resolves the domain to
//! 127.0.0.1 through pebble-challtestsrv's DNS, and fetches the answer
//! from the ingress's port), serves what pebble issued over HTTPS, and
//! after a kill -9 serves the same certificate again from its store.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::pebble::Pebble;
use common::server::{Extra, OrcaServer};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_acme_server_is_issued_served_and_kept() {
    let Some(env) = common::env() else { return };
    if !common::pebble::installed() {
        assert!(
            !common::in_ci(),
            "pebble is missing under CI (apt-get install pebble)"
        );
        eprintln!("SKIPPING: no pebble (apt-get install pebble)");
        return;
    }
    let mut pebble = Pebble::prepare(common::free_port);
    let https_port = common::free_port();
    let proxy = format!(
        "https_listen = \"127.0.0.1:{https_port}\"\n{}",
        pebble.acme_section()
    );
    let extra = Extra {
        proxy: &proxy,
        ..Default::default()
    };
    let mut server = OrcaServer::start_with(&env, "acme", extra).await;
    pebble.start(server.proxy_port, common::free_port());

    // pebble answers before the deploy asks it for anything.
    let roots = common::eventually("pebble's root", Duration::from_secs(30), async || {
        pebble.issuing_root().ok_or_else(|| pebble.log())
    })
    .await;
    common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "site", "image": env.image("web:v1"), "port": 8080, "domain": "acme.test",
                 "tls": "acme", "stop_grace_secs": 1 }]),
    )
    .await;
    // Trusting only pebble's root: the certificate is pebble's.
    let (answer, leaf) = common::eventually(
        "HTTPS for acme.test with pebble's certificate",
        Duration::from_secs(90),
        async || match common::tls::https_get(https_port, "acme.test", &roots).await {
            Ok((a, leaf)) if a.starts_with("HTTP/1.1 200") => Ok((a, leaf)),
            other => Err(format!(
                "{other:?}\npebble: {}\nserver: {}",
                pebble.log(),
                server.log()
            )),
        },
    )
    .await;
    assert!(answer.ends_with("web v1\n"), "{answer}");
    assert!(
        pebble.log().contains("acme.test"),
        "pebble never saw the domain"
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
