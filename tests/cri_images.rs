//! Images on a real containerd and a real registry on loopback: pull,
//! re-pull, mirrors, multi-platform indexes, concurrent pulls, imports and
//! the errors an operator sees.

#![allow(clippy::unwrap_used)]

mod common;

use cri::CriError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_from_local_registry_then_repull_is_a_no_op() {
    let Some(env) = common::env() else { return };
    let ns = common::namespace("pull");
    let cri = common::connect(&env, &ns).await;
    let reference = env.image("web:v1");

    let first = cri.pull_with_report(&reference).await.expect("pull");
    assert_eq!(first.image.name, format!("{reference}"));
    assert!(first.image.digest.starts_with("sha256:"));
    assert_eq!(first.fetched_blobs, 3, "config and two layers");
    assert_eq!(first.unpacked_layers, 2);
    assert_eq!(
        first.image.config.entrypoint,
        Some(vec!["/bin/web".to_string()])
    );

    let again = cri.pull_with_report(&reference).await.expect("re-pull");
    assert_eq!(again.image, first.image);
    assert_eq!(
        (again.fetched_blobs, again.unpacked_layers),
        (0, 0),
        "re-pull did work"
    );

    // What containerd now holds is the same image.
    let local = cri.image(&reference).await.expect("image record");
    assert_eq!(local, first.image);

    // v2 shares the base layer: one layer and a config to fetch, and its
    // second layer is an uncompressed tar.
    let v2 = cri
        .pull_with_report(&env.image("web:v2"))
        .await
        .expect("pull v2");
    assert_eq!(v2.fetched_blobs, 2);
    assert_eq!(v2.unpacked_layers, 1);
    common::cleanup(&cri).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_alpine_resolves_through_a_mirror() {
    let Some(env) = common::env() else { return };
    let cri = common::connect(&env, &common::namespace("mirror")).await;
    let image = cri.pull("nginx:alpine").await.expect("pull through mirror");
    assert_eq!(image.name, "docker.io/library/nginx:alpine");
    // The test image behind the mirror, not Docker Hub's nginx.
    assert_eq!(image.config.entrypoint, Some(vec!["/bin/web".to_string()]));
    let test_image = cri.pull(&env.image("web:v1")).await.unwrap();
    assert_eq!(image.manifest_digest, test_image.manifest_digest);
    assert_eq!(
        cri.image("docker.io/library/nginx:alpine").await.unwrap(),
        image
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_pull_picks_the_host_platform() {
    let Some(env) = common::env() else { return };
    let cri = common::connect(&env, &common::namespace("multi")).await;
    let image = cri
        .pull(&env.image("multi:latest"))
        .await
        .expect("pull index");
    assert_ne!(
        image.digest, image.manifest_digest,
        "the name points at the index"
    );
    // The other platform's entry comes first and would run echo.
    assert_eq!(image.config.entrypoint, Some(vec!["/bin/web".to_string()]));
    assert_eq!(cri.image(&env.image("multi:latest")).await.unwrap(), image);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_of_one_image_share_the_work() {
    let Some(env) = common::env() else { return };
    let cri = common::connect(&env, &common::namespace("dedupe")).await;
    // Through a counting proxy, so the registry's work can be seen.
    let proxy = common::counting::start(&env.registry).await;
    let reference = format!("{}/orca-test/logger:latest", proxy.addr);
    let pulls: Vec<_> = (0..6)
        .map(|_| {
            let cri = cri.clone();
            let r = reference.clone();
            tokio::spawn(async move { cri.pull_with_report(&r).await })
        })
        .collect();
    let mut fetched = Vec::new();
    for p in pulls {
        let report = p.await.unwrap().expect("pull");
        fetched.push((report.fetched_blobs, report.image.digest));
    }
    let digests: std::collections::HashSet<_> = fetched.iter().map(|(_, d)| d.clone()).collect();
    assert_eq!(digests.len(), 1);
    // Every caller saw the single pull's report, or a later no-op one.
    assert!(
        fetched.iter().all(|(n, _)| *n == 3 || *n == 0),
        "{fetched:?}"
    );
    assert!(fetched.iter().any(|(n, _)| *n == 3));
    // Each blob was asked of the registry once, for all six pulls.
    let blobs = proxy.all();
    let blob_gets: Vec<_> = blobs
        .iter()
        .filter(|(k, _)| k.starts_with("GET ") && k.contains("/blobs/"))
        .collect();
    assert_eq!(blob_gets.len(), 3, "{blobs:?}");
    assert!(blob_gets.iter().all(|(_, n)| **n == 1), "{blobs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imports_oci_and_docker_save_archives() {
    let Some(env) = common::env() else { return };
    let cri = common::connect(&env, &common::namespace("import")).await;

    let oci = cri
        .import_archive(&env.images.join("web-v1.oci.tar"), Some("edge/web"))
        .await
        .expect("import OCI archive");
    assert_eq!(oci.len(), 1);
    assert_eq!(oci[0].name, "docker.io/edge/web:v1");
    assert_eq!(cri.image("edge/web:v1").await.unwrap(), oci[0]);

    let docker = cri
        .import_archive(&env.images.join("web-v1.docker.tar"), None)
        .await
        .expect("import docker save archive");
    assert_eq!(docker[0].name, "docker.io/orca-test/imported:docker");
    // Same filesystem, different (uncompressed) layers: same chain id.
    assert_eq!(docker[0].chain_id, oci[0].chain_id);
    assert_eq!(
        docker[0].config.entrypoint,
        Some(vec!["/bin/web".to_string()])
    );

    let unnamed = cri
        .import_archive(&env.images.join("web-v1.oci.tar"), None)
        .await;
    assert!(unnamed.unwrap_err().to_string().contains("pass one"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_images_and_bad_references_read_well() {
    let Some(env) = common::env() else { return };
    let cri = common::connect(&env, &common::namespace("errors")).await;

    let err = cri.pull(&env.image("does-not-exist:v1")).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("image not found: {}", env.image("does-not-exist:v1"))
    );
    let err = cri.pull(&env.image("web:no-such-tag")).await.unwrap_err();
    assert!(err.to_string().starts_with("image not found:"), "{err}");

    let err = cri.pull("Not A/Reference").await.unwrap_err();
    assert!(matches!(err, CriError::InvalidReference { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("invalid image reference"),
        "{err}"
    );

    // A registry that is not there: the address is in the message.
    let err = cri.pull("127.0.0.1:1/app:v1").await.unwrap_err();
    assert!(err.to_string().contains("127.0.0.1:1"), "{err}");

    let err = cri.image("never/pulled:v1").await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "image not found: docker.io/never/pulled:v1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absent_containerd_is_named_in_the_error() {
    let err = cri::Cri::connect(cri::ConnectOptions::new(
        "/nonexistent/orca-test.sock",
        "orca",
    ))
    .await
    .unwrap_err();
    assert!(err.is_unavailable());
    assert!(
        err.to_string().contains("/nonexistent/orca-test.sock"),
        "{err}"
    );
}
