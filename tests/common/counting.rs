//! A counting HTTP proxy on loopback, in front of the test registry: it
//! forwards every request and counts them by method and path, so a test
//! can prove how often orca asked for what.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

/// A running proxy and what it has counted.
pub struct Counting {
    pub addr: SocketAddr,
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl Counting {
    /// Requests whose `"METHOD path"` satisfies `f`.
    pub fn count(&self, f: impl Fn(&str) -> bool) -> usize {
        let counts = self.counts.lock().unwrap();
        counts.iter().filter(|(k, _)| f(k)).map(|(_, n)| n).sum()
    }

    /// Every `"METHOD path"` seen, with its count.
    pub fn all(&self) -> HashMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }
}

/// Starts a proxy to `upstream` (`host:port`, plain HTTP) for GETs and HEADs.
pub async fn start(upstream: &str) -> Counting {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counts: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let upstream = upstream.to_string();
    let seen = counts.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (seen, client, upstream) = (seen.clone(), client.clone(), upstream.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (seen, client, upstream) = (seen.clone(), client.clone(), upstream.clone());
                    async move { forward(req, &seen, &client, &upstream).await }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Counting { addr, counts }
}

async fn forward(
    req: Request<Incoming>,
    seen: &Mutex<HashMap<String, usize>>,
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    upstream: &str,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let key = format!("{} {}", req.method(), req.uri().path());
    *seen.lock().unwrap().entry(key).or_default() += 1;
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let mut out = Request::builder()
        .method(req.method())
        .uri(format!("http://{upstream}{path}"));
    for (k, v) in req.headers() {
        if k != hyper::header::HOST {
            out = out.header(k, v);
        }
    }
    client.request(out.body(Empty::new()).unwrap()).await
}
