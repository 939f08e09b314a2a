//! Registry authentication and mirrors against the real local registry,
//! fronted by a small proxy on loopback that demands credentials the way
//! Docker Hub (Bearer tokens from a realm) or a private registry (Basic)
//! does, and forwards what it accepts.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

use cri::registry::Credentials;
use cri::{ConnectOptions, Cri};

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// Tokens from /token, which wants Basic credentials when `creds` is set.
    Bearer { token_needs_creds: bool },
    /// Basic credentials on every request.
    Basic,
}

const USER: &str = "orca";
const PASS: &str = "s3cret";
const TOKEN: &str = "tok-7f3a";

struct Front {
    addr: SocketAddr,
    token_requests: Arc<AtomicUsize>,
    forwarded: Arc<AtomicUsize>,
}

fn basic_ok(req: &Request<Incoming>) -> bool {
    let want = Credentials {
        username: USER.into(),
        password: PASS.into(),
    }
    .basic_header();
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(want.as_str())
}

async fn start_front(upstream: String, mode: Mode) -> Front {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let token_requests = Arc::new(AtomicUsize::new(0));
    let forwarded = Arc::new(AtomicUsize::new(0));
    let (tr, fw) = (token_requests.clone(), forwarded.clone());
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (tr, fw, client, upstream) =
                (tr.clone(), fw.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (tr, fw, client, upstream) =
                        (tr.clone(), fw.clone(), client.clone(), upstream.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            handle(req, mode, addr, &tr, &fw, &client, &upstream).await,
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Front {
        addr,
        token_requests,
        forwarded,
    }
}

fn reply(status: StatusCode, headers: &[(&str, String)], body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    r.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn handle(
    req: Request<Incoming>,
    mode: Mode,
    addr: SocketAddr,
    token_requests: &AtomicUsize,
    forwarded: &AtomicUsize,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    upstream: &str,
) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    if path == "/token" {
        token_requests.fetch_add(1, Ordering::SeqCst);
        let query = req.uri().query().unwrap_or("");
        assert!(query.contains("service=orca-test"), "token query {query}");
        assert!(
            query.contains("scope=repository%3Aorca-test%2Fweb%3Apull"),
            "token query {query}"
        );
        if let Mode::Bearer {
            token_needs_creds: true,
        } = mode
        {
            if !basic_ok(&req) {
                return reply(
                    StatusCode::UNAUTHORIZED,
                    &[],
                    r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
                );
            }
        }
        return reply(
            StatusCode::OK,
            &[("content-type", "application/json".into())],
            &format!(r#"{{"access_token":"{TOKEN}","expires_in":300}}"#),
        );
    }
    let authorized = match mode {
        Mode::Bearer { .. } => {
            req.headers()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                == Some(&format!("Bearer {TOKEN}"))
        }
        Mode::Basic => basic_ok(&req),
    };
    if !authorized {
        let challenge = match mode {
            Mode::Bearer { .. } => format!(
                r#"Bearer realm="http://{addr}/token",service="orca-test",scope="repository:orca-test/web:pull""#
            ),
            Mode::Basic => r#"Basic realm="orca-test""#.to_string(),
        };
        return reply(
            StatusCode::UNAUTHORIZED,
            &[("www-authenticate", challenge)],
            r#"{"errors":[{"code":"UNAUTHORIZED"}]}"#,
        );
    }
    forwarded.fetch_add(1, Ordering::SeqCst);
    let mut up = Request::get(format!("http://{upstream}{path}"));
    if let Some(accept) = req.headers().get("accept") {
        up = up.header("accept", accept);
    }
    let resp = client
        .request(up.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let mut headers = Vec::new();
    for name in ["content-type", "docker-content-digest"] {
        if let Some(v) = resp.headers().get(name) {
            headers.push((name, v.to_str().unwrap().to_string()));
        }
    }
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let mut r = Response::builder().status(status);
    for (k, v) in headers {
        r = r.header(k, v);
    }
    r.body(Full::new(body)).unwrap()
}

async fn client_with(env: &common::TestEnv, ns: &str, f: impl FnOnce(&mut ConnectOptions)) -> Cri {
    let mut options = ConnectOptions::new(&env.socket, ns);
    f(&mut options);
    Cri::connect(options).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_token_auth_like_docker_hub() {
    let Some(env) = common::env() else { return };
    let front = start_front(
        env.registry.clone(),
        Mode::Bearer {
            token_needs_creds: false,
        },
    )
    .await;
    let cri = client_with(&env, &common::namespace("bearer"), |_| {}).await;
    let image = cri
        .pull(&format!("{}/orca-test/web:v1", front.addr))
        .await
        .expect("pull with a token");
    assert_eq!(image.config.entrypoint, Some(vec!["/bin/web".to_string()]));
    // One token, reused for the manifest and every blob.
    assert_eq!(front.token_requests.load(Ordering::SeqCst), 1);
    assert!(front.forwarded.load(Ordering::SeqCst) >= 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_server_wanting_credentials() {
    let Some(env) = common::env() else { return };
    let front = start_front(
        env.registry.clone(),
        Mode::Bearer {
            token_needs_creds: true,
        },
    )
    .await;
    let reference = format!("{}/orca-test/web:v1", front.addr);

    let anonymous = client_with(&env, &common::namespace("bearer-anon"), |_| {}).await;
    let err = anonymous.pull(&reference).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("registry unauthorized for {reference}")),
        "{err}"
    );

    let host = front.addr.to_string();
    let with_creds = client_with(&env, &common::namespace("bearer-creds"), |o| {
        o.registry.auth.insert(
            host,
            Credentials {
                username: USER.into(),
                password: PASS.into(),
            },
        );
    })
    .await;
    with_creds
        .pull(&reference)
        .await
        .expect("pull with credentials");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth() {
    let Some(env) = common::env() else { return };
    let front = start_front(env.registry.clone(), Mode::Basic).await;
    let reference = format!("{}/orca-test/web:v1", front.addr);
    let host = front.addr.to_string();

    let none = client_with(&env, &common::namespace("basic-none"), |_| {}).await;
    let err = none.pull(&reference).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("wants credentials and none are configured"),
        "{err}"
    );

    let wrong_host = host.clone();
    let wrong = client_with(&env, &common::namespace("basic-wrong"), |o| {
        o.registry.auth.insert(
            wrong_host,
            Credentials {
                username: USER.into(),
                password: "nope".into(),
            },
        );
    })
    .await;
    let err = wrong.pull(&reference).await.unwrap_err();
    assert!(
        err.to_string().starts_with("registry unauthorized"),
        "{err}"
    );

    let right = client_with(&env, &common::namespace("basic-right"), |o| {
        o.registry.auth.insert(
            host,
            Credentials {
                username: USER.into(),
                password: PASS.into(),
            },
        );
    })
    .await;
    right.pull(&reference).await.expect("pull with basic auth");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_are_tried_first_and_a_dead_one_falls_back() {
    let Some(env) = common::env() else { return };
    let front = start_front(
        env.registry.clone(),
        Mode::Bearer {
            token_needs_creds: false,
        },
    )
    .await;
    let reference = format!("{}/orca-test/web:v1", env.registry);

    // A working mirror serves the pull.
    let mirror = format!("http://{}", front.addr);
    let registry = env.registry.clone();
    let cri = client_with(&env, &common::namespace("mirror-ok"), |o| {
        o.registry.mirrors.insert(registry, mirror);
    })
    .await;
    cri.pull(&reference).await.expect("pull via mirror");
    assert!(
        front.forwarded.load(Ordering::SeqCst) >= 4,
        "the mirror was not used"
    );

    // A dead mirror: the registry itself answers.
    let registry = env.registry.clone();
    let cri = client_with(&env, &common::namespace("mirror-dead"), |o| {
        o.registry
            .mirrors
            .insert(registry, "http://127.0.0.1:1".into());
    })
    .await;
    let image = cri
        .pull(&reference)
        .await
        .expect("fallback to the registry");
    assert_eq!(image.name, reference);
}
