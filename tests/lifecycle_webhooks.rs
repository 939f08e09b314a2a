//! Git push webhooks: the signature matrix (GitHub, Gitea, bad, missing),
//! ping, a push to another branch, a replayed delivery, and a push after
//! the image tag moved, which redeploys the service.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::{OrcaServer, DEPLOYER};
use common::webhook::{deliver, github, result_of, sign, SECRET};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_webhooks_verify_then_redeploy() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "webhook").await;
    let c = server.admin();
    let addr = server.addr();

    // A tag of this test's own, pointing at v1 first.
    let tag = format!("{}/orca-test/moving:{}", env.registry, server.namespace);
    common::skopeo_tag(&env, "web-v1", "v1", &tag);
    c.post::<_, Value>("/api/v1/deploy", &json!({ "services": [{ "name": "site", "image": tag, "port": 8080, "stop_grace_secs": 1 }] }))
        .await
        .unwrap();

    let deployer = server.client(Some(DEPLOYER));
    let hook: Value = deployer
        .post(
            "/api/v1/webhooks",
            &json!({ "repo": "acme/site", "service": "site", "branch": "main", "secret": SECRET }),
        )
        .await
        .unwrap();
    let listed = c.get_text("/api/v1/webhooks").await.unwrap();
    assert!(
        listed.contains("acme/site") && !listed.contains(SECRET),
        "{listed}"
    );

    let push_of = |branch: &str, commit: &str| {
        json!({ "ref": format!("refs/heads/{branch}"), "after": commit, "repository": { "full_name": "acme/site" } })
            .to_string()
    };
    let push = |branch: &str| push_of(branch, "c0");

    // Missing and bad signatures: 401, whatever the body says.
    let (status, _) = deliver(&addr, &[("X-GitHub-Event", "push".into())], &push("main")).await;
    assert_eq!(status, 401);
    let (status, _) = deliver(
        &addr,
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
        ],
        &push("main"),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = deliver(
        &addr,
        &[
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", "sha256=nothex".into()),
        ],
        "{not json",
    )
    .await;
    assert_eq!(status, 401);

    // GitHub ping.
    let ping = json!({ "zen": "hi" }).to_string();
    let (status, body) = deliver(&addr, &github("ping", &ping, Some("d-1")), &ping).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(result_of(&body), "pong", "{body}");

    // Gitea push to another branch: ignored.
    let other = push("dev");
    let (status, body) = deliver(
        &addr,
        &[
            ("X-Gitea-Event", "push".into()),
            ("X-Gitea-Signature", sign(&other)),
            ("X-Gitea-Delivery", "d-2".into()),
        ],
        &other,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        result_of(&body).starts_with("ignored: push to dev"),
        "{body}"
    );

    // The tag moves to v2; a signed push to main redeploys.
    common::skopeo_tag(&env, "web-v2", "v2", &tag);
    let main = push_of("main", "c3");
    let (status, body) = deliver(&addr, &github("push", &main, Some("d-3")), &main).await;
    assert_eq!(status, 202, "{body}");
    let s = common::wait_for(&c, "site", "the redeploy to v2", |s| {
        s.version == 2
            && s.instances.len() == 1
            && s.instances[0].version == 2
            && s.instances[0].state == api::status::InstanceState::Running
    })
    .await;
    let cri = server.cri().await;
    let id = s.instances[0].id.clone();
    let out = cri
        .exec(
            &id,
            &["cat".to_string(), "/www/index.html".to_string()],
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.trim(), "web v2");

    // The same delivery again is ignored.
    let (status, body) = deliver(&addr, &github("push", &main, Some("d-3")), &main).await;
    assert_eq!(status, 200);
    assert!(result_of(&body).contains("already handled"), "{body}");
    // So is the same commit replayed under a fresh delivery id, even after
    // the tag moved: nothing is redeployed.
    common::skopeo_tag(&env, "web-v1", "v1", &tag);
    let (status, body) = deliver(&addr, &github("push", &main, Some("d-3-again")), &main).await;
    assert_eq!(status, 200);
    assert!(
        result_of(&body).contains("commit c3 was already deployed"),
        "{body}"
    );

    // Invocations are kept and listed.
    let listed: Value = c.get("/api/v1/webhooks").await.unwrap();
    let invocations = listed["webhooks"][0]["invocations"].as_array().unwrap();
    assert_eq!(invocations.len(), 5, "{listed}");
    assert_eq!(invocations[0]["delivery"], "d-3-again");
    assert_eq!(
        c.get::<Value>("/api/v1/services/site/versions")
            .await
            .unwrap()["versions"][0]["version"],
        2
    );

    // A push without a delivery id cannot be told from a replay: refused.
    let (status, body) = deliver(&addr, &github("push", &main, None), &main).await;
    assert_eq!(status, 400, "{body}");
    // Copies of one new delivery of a new commit at once act once.
    let main = push_of("main", "c4");
    let headers = github("push", &main, Some("d-4"));
    let copies: Vec<_> = (0..8)
        .map(|_| {
            let (addr, headers, main) = (addr.clone(), headers.clone(), main.clone());
            tokio::spawn(async move { deliver(&addr, &headers, &main).await })
        })
        .collect();
    let mut results = Vec::new();
    for copy in copies {
        results.push(result_of(&copy.await.unwrap().1).to_string());
    }
    let redeploys = results.iter().filter(|r| r.starts_with("redeploying"));
    assert_eq!(redeploys.count(), 1, "{results:?}");
    let replays = results.iter().filter(|r| r.contains("already handled"));
    assert_eq!(replays.count(), 7, "{results:?}");
    common::wait_for(&c, "site", "the redeploy to v1's image", |s| {
        s.version == 3 && s.instances.iter().all(|i| i.version == 3)
    })
    .await;
    // A service an operator stopped stays stopped.
    c.delete::<Value>("/api/v1/services/site").await.unwrap();
    let (status, body) = deliver(&addr, &github("push", &main, Some("d-5")), &main).await;
    assert_eq!(status, 200, "{body}");
    assert!(result_of(&body).contains("is stopped"), "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = common::wait_for(&c, "site", "stopped, no replicas", |s| {
        s.instances.is_empty()
    })
    .await;
    assert_eq!(serde_json::to_value(s.status).unwrap(), "stopped");

    let id = hook["id"].as_str().unwrap();
    c.delete::<Value>(&format!("/api/v1/webhooks/{id}"))
        .await
        .unwrap();
    let (status, _) = deliver(&addr, &github("ping", &ping, None), &ping).await;
    assert_eq!(
        status, 401,
        "a deleted webhook's secret no longer opens anything"
    );
}

/// Bad signatures count as failed authentication: past 20 in a second an
/// address gets 429 for the rest of it, before any secret is opened; a
/// valid token is still served meanwhile, and a validly signed delivery
/// goes through once the second is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_limited_like_bad_tokens() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "webhook-limit").await;
    let c = server.admin();
    let addr = server.addr();
    c.post::<_, Value>(
        "/api/v1/webhooks",
        &json!({ "repo": "acme/site", "service": "site", "branch": "main", "secret": SECRET }),
    )
    .await
    .unwrap();
    let ping = json!({ "zen": "hi" }).to_string();
    let forged = [
        ("X-GitHub-Event", "ping".to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", "0".repeat(64))),
        ("X-GitHub-Delivery", "forged".to_string()),
    ];
    let started = std::time::Instant::now();
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(deliver(&addr, &forged, &ping).await.0);
    }
    let _: Value = c.get("/api/v1/status").await.unwrap();
    let (signed, _) = deliver(&addr, &github("ping", &ping, Some("p-1")), &ping).await;
    assert!(
        started.elapsed() < Duration::from_millis(950),
        "too slow to test within a second: {:?}",
        started.elapsed()
    );
    assert_eq!(statuses[..20], [401; 20], "{statuses:?}");
    assert!(statuses[21..].iter().all(|s| *s == 429), "{statuses:?}");
    assert_eq!(
        signed, 429,
        "the address is limited for the rest of the second"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = deliver(&addr, &github("ping", &ping, Some("p-2")), &ping).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(result_of(&body), "pong");
}
