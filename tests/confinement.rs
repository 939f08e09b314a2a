//! How replicas are confined, on real replicas: the default seccomp
//! filter is on (`Seccomp: 2`) and refuses what reaches past the container
//! (a user namespace) with EPERM, while the same probe in a replica that
//! opted out (`security.seccomp = "unconfined"`) succeeds; a read-only
//! root refuses writes but to `/tmp`, and `user` sets who runs.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::OrcaServer;
use serde_json::json;

/// Runs `script` with `sh -c` inside replica `id`: (exit code, stdout and
/// stderr together).
async fn sh(cri: &cri::Cri, id: &str, script: &str) -> (u32, String) {
    let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let out = cri.exec(id, &args, Duration::from_secs(20)).await.unwrap();
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// The id of `name`'s first replica in `status`.
fn first_replica(status: &api::status::StatusResponse, name: &str) -> String {
    let service = status.services.iter().find(|s| s.name == name).unwrap();
    service.instances[0].id.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seccomp_read_only_roots_and_users_confine_replicas() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "confine").await;
    let web = env.image("web:v1");
    let status = common::deploy_all_ready(
        &server.admin(),
        json!([
            { "name": "plain", "image": web, "port": 8080, "stop_grace_secs": 1 },
            { "name": "open", "image": web, "port": 8080, "stop_grace_secs": 1,
              "security": { "seccomp": "unconfined" } },
            { "name": "frozen", "image": web, "port": 8080, "stop_grace_secs": 1,
              "user": "1000:1000", "security": { "read_only_rootfs": true } },
        ]),
    )
    .await;
    let id = |name: &str| first_replica(&status, name);
    let (plain, open, frozen) = (id("plain"), id("open"), id("frozen"));
    let cri = server.cri().await;

    // The filter is on by default (mode 2: a filter), off when opted out.
    let mode = "grep '^Seccomp:' /proc/1/status";
    let (_, out) = sh(&cri, &plain, mode).await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "2"]
    );
    let (_, out) = sh(&cri, &open, mode).await;
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        ["Seccomp:", "0"]
    );

    // A new user namespace: refused with EPERM by the filter; the same
    // probe, from the same image, works where the filter is off.
    let userns = "unshare -U true";
    let (code, out) = sh(&cri, &plain, userns).await;
    assert_ne!(code, 0, "unshare passed the filter: {out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    let (code, out) = sh(&cri, &open, userns).await;
    assert_eq!(code, 0, "the control failed: {out}");
    // Ordinary work is untouched by the filter.
    let (code, out) = sh(
        &cri,
        &plain,
        "wget -q -O - http://127.0.0.1:8080/ && ps >/dev/null",
    )
    .await;
    assert_eq!((code, out.trim()), (0, "web v1"));

    // A read-only root: writes refused, but to /tmp; and the user set.
    let (code, out) = sh(&cri, &frozen, "touch /x").await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let (code, out) = sh(&cri, &frozen, "touch /tmp/x && ls /tmp").await;
    assert_eq!((code, out.trim()), (0, "x"));
    let (code, out) = sh(&cri, &frozen, "id -u; id -g").await;
    assert_eq!((code, out.as_str()), (0, "1000\n1000\n"));
    // The control: the same write works on a writable root.
    let (code, out) = sh(&cri, &plain, "touch /x && echo wrote").await;
    assert_eq!((code, out.trim()), (0, "wrote"));

    // Bad values are refused before anything runs.
    for bad in [
        json!({ "security": { "seccomp": "off" } }),
        json!({ "user": "root;rm" }),
        json!({ "user": "1000:" }),
        json!({ "user": "99999999999" }),
    ] {
        let mut svc = json!({ "name": "bad", "image": web, "port": 8080 });
        for (k, v) in bad.as_object().unwrap() {
            svc[k] = v.clone();
        }
        let r: Result<serde_json::Value, _> = server
            .admin()
            .post("/api/v1/deploy", &json!({ "services": [svc] }))
            .await;
        match r {
            Err(api::client::ClientError::Api { status, .. }) => assert_eq!(status, 400, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}

/// The filter refuses AF_VSOCK (40, CVE-2024-50264) and AF_ALG (38) sockets
/// with EPERM, as Docker's does; the same probe opens an AF_INET socket
/// (the control), and in a replica without the filter AF_VSOCK gets past
/// seccomp (to the kernel's own answer, whatever it is here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsock_and_alg_sockets_are_refused() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "sockets").await;
    let kaweb = env.image("kaweb:v1");
    let status = common::deploy_all_ready(
        &server.admin(),
        json!([
            { "name": "probe", "image": kaweb, "port": 8080, "stop_grace_secs": 1 },
            { "name": "bare", "image": kaweb, "port": 8080, "stop_grace_secs": 1,
              "security": { "seccomp": "unconfined" } },
        ]),
    )
    .await;
    let id = |name: &str| first_replica(&status, name);
    let cri = server.cri().await;
    let probe = |id: String, args: &'static [&'static str]| {
        let cri = cri.clone();
        async move {
            let mut argv = vec!["/bin/sockprobe".to_string()];
            argv.extend(args.iter().map(|a| a.to_string()));
            let out = cri.exec(&id, &argv, Duration::from_secs(10)).await.unwrap();
            out.stdout.trim().to_string()
        }
    };
    assert_eq!(
        probe(id("probe"), &["2"]).await,
        "ok",
        "AF_INET, the control"
    );
    assert_eq!(probe(id("probe"), &["1"]).await, "ok", "AF_UNIX");
    for family in [&["40"][..], &["38", "5"][..]] {
        let answer = probe(id("probe"), family).await;
        assert!(answer.starts_with("errno 1 "), "{family:?}: {answer}");
    }
    let bare = probe(id("bare"), &["40"]).await;
    assert!(!bare.starts_with("errno 1 "), "unconfined AF_VSOCK: {bare}");
}
