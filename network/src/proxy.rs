//! The ingress proxy: HTTP by Host header to the ready replicas of the
//! service whose `domain` matches, round robin (weighted, for canaries),
//! streaming bodies both ways, WebSocket upgrades, keep-alive pools to the
//! replicas, and a replica that refuses connections taken out of rotation
//! at once, before any health check notices. JSON errors: 404 for an
//! unknown host, 503 when no replica is ready, 502 when none answers.
//! TLS can be added in front of [`handle`] later; nothing here assumes
//! plain HTTP beyond `X-Forwarded-Proto`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

/// How long a replica that refused a connection stays out of rotation.
const EJECT_FOR: Duration = Duration::from_secs(2);

type Body = BoxBody<Bytes, hyper::Error>;

/// One replica behind a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    /// Relative share of requests (canaries get less).
    pub weight: u32,
}

struct Route {
    backends: Vec<Backend>,
    /// Each backend repeated by its weight, for weighted round robin.
    ring: Vec<usize>,
    next: AtomicUsize,
}

impl Route {
    fn new(backends: Vec<Backend>) -> Self {
        let ring = interleave(&backends);
        Self {
            backends,
            ring,
            next: AtomicUsize::new(0),
        }
    }
}

/// Smooth weighted round robin: each backend appears `weight` times, spread out.
fn interleave(backends: &[Backend]) -> Vec<usize> {
    // Weights up to 10000 (canary shares), reduced by their common divisor
    // to keep the ring short.
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let divisor = backends
        .iter()
        .map(|b| b.weight.min(10_000))
        .fold(0, gcd)
        .max(1);
    let weight = |b: &Backend| i64::from(b.weight.min(10_000) / divisor);
    let total: i64 = backends.iter().map(weight).sum();
    let mut current = vec![0i64; backends.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += weight(b);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

/// The routing table, replaced whole whenever readiness changes.
#[derive(Default)]
pub struct Routes {
    table: RwLock<HashMap<String, Arc<Route>>>,
    ejected: RwLock<HashMap<SocketAddr, Instant>>,
}

impl Routes {
    /// Sets the backends of every domain (domains not listed are removed).
    pub fn replace(&self, routes: HashMap<String, Vec<Backend>>) {
        let table = routes
            .into_iter()
            .map(|(domain, backends)| (domain.to_ascii_lowercase(), Arc::new(Route::new(backends))))
            .collect();
        if let Ok(mut t) = self.table.write() {
            *t = table;
        }
    }

    /// The backends of `domain` now.
    pub fn backends(&self, domain: &str) -> Option<Vec<Backend>> {
        self.table
            .read()
            .ok()?
            .get(&domain.to_ascii_lowercase())
            .map(|r| r.backends.clone())
    }

    fn route(&self, domain: &str) -> Option<Arc<Route>> {
        self.table.read().ok()?.get(domain).cloned()
    }

    fn is_ejected(&self, addr: &SocketAddr) -> bool {
        self.ejected
            .read()
            .ok()
            .and_then(|e| e.get(addr).copied())
            .is_some_and(|until| until > Instant::now())
    }

    fn eject(&self, addr: SocketAddr) {
        if let Ok(mut e) = self.ejected.write() {
            e.retain(|_, until| *until > Instant::now());
            e.insert(addr, Instant::now() + EJECT_FOR);
        }
    }

    /// The next backend of `route` that is not ejected, skipping `tried`.
    fn pick(&self, route: &Route, tried: &[SocketAddr]) -> Option<Backend> {
        if route.ring.is_empty() {
            return None;
        }
        for _ in 0..route.ring.len() {
            let n = route.next.fetch_add(1, Ordering::Relaxed);
            let b = &route.backends[route.ring[n % route.ring.len()]];
            if !tried.contains(&b.addr) && !self.is_ejected(&b.addr) {
                return Some(b.clone());
            }
        }
        // All ejected: try one anyway rather than fail outright.
        route
            .backends
            .iter()
            .find(|b| !tried.contains(&b.addr))
            .cloned()
    }
}

/// The proxy: a routing table and a keep-alive client.
#[derive(Clone)]
pub struct Ingress {
    routes: Arc<Routes>,
    client: Client<HttpConnector, Body>,
}

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<String> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .collect();
    for h in HOP_BY_HOP.iter().map(|s| s.to_string()).chain(named) {
        if let Ok(name) = HeaderName::from_bytes(h.as_bytes()) {
            headers.remove(name);
        }
    }
}

impl Ingress {
    pub fn new(routes: Arc<Routes>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(64)
            .build(connector);
        Self { routes, client }
    }

    /// Serves one request from `client_addr`.
    pub async fn handle(
        &self,
        mut req: Request<Incoming>,
        client_addr: SocketAddr,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().host())
            .unwrap_or("")
            .to_string();
        let domain = host.split(':').next().unwrap_or("").to_ascii_lowercase();
        let Some(route) = self.routes.route(&domain) else {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("no service for host {domain:?}"),
            );
        };
        if route.backends.is_empty() {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no ready replica for {domain}"),
            );
        }
        let upgrade = req.headers().get(http::header::UPGRADE).cloned();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));

        let (mut parts, body) = req.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if let Some(u) = &upgrade {
            parts.headers.insert(
                http::header::CONNECTION,
                HeaderValue::from_static("upgrade"),
            );
            parts.headers.insert(http::header::UPGRADE, u.clone());
        }
        let forwarded_for = match parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
        {
            Some(prev) => format!("{prev}, {}", client_addr.ip()),
            None => client_addr.ip().to_string(),
        };
        if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
            parts.headers.insert("x-forwarded-for", v);
        }
        parts
            .headers
            .insert("x-forwarded-proto", HeaderValue::from_static("http"));
        if let Ok(v) = HeaderValue::from_str(&host) {
            parts.headers.insert("x-forwarded-host", v);
        }
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| "/".into());
        // A request without a body can be sent again to another replica.
        let replayable = body_is_empty(&parts);
        let mut body = Some(body.boxed());
        let mut tried = Vec::new();
        loop {
            let Some(backend) = self.routes.pick(&route, &tried) else {
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("no replica of {domain} answered"),
                );
            };
            tried.push(backend.addr);
            let Ok(uri) = format!("http://{}{}", backend.addr, path).parse::<Uri>() else {
                return json_error(StatusCode::BAD_REQUEST, "bad request path");
            };
            let mut upstream =
                Request::from_parts(parts.clone(), body.take().unwrap_or_else(empty));
            *upstream.uri_mut() = uri;
            match self.client.request(upstream).await {
                Ok(mut resp) => {
                    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_side) = client_upgrade {
                            let server_side = hyper::upgrade::on(&mut resp);
                            tokio::spawn(async move {
                                if let (Ok(c), Ok(s)) = (client_side.await, server_side.await) {
                                    let mut c = TokioIo::new(c);
                                    let mut s = TokioIo::new(s);
                                    let _ = tokio::io::copy_bidirectional(&mut c, &mut s).await;
                                }
                            });
                        }
                        let (parts, _) = resp.into_parts();
                        return Response::from_parts(parts, empty());
                    }
                    let (mut rparts, rbody) = resp.into_parts();
                    strip_hop_by_hop(&mut rparts.headers);
                    return Response::from_parts(rparts, rbody.boxed());
                }
                Err(e) => {
                    if e.is_connect() {
                        tracing::debug!(backend = %backend.id, error = %e, "replica refused; out of rotation");
                        self.routes.eject(backend.addr);
                        if replayable && tried.len() < route.backends.len() {
                            continue;
                        }
                    }
                    return json_error(
                        StatusCode::BAD_GATEWAY,
                        &format!("replica {} of {domain} failed: {e}", backend.id),
                    );
                }
            }
        }
    }
}

fn body_is_empty(parts: &http::request::Parts) -> bool {
    let no_length = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|v| v.trim() == "0");
    no_length && !parts.headers.contains_key(http::header::TRANSFER_ENCODING)
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// Accepts connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    ingress: Ingress,
    shutdown: impl std::future::Future<Output = ()>,
) {
    // Upgraded (WebSocket) connections cannot be drained gracefully: on
    // shutdown the proxy stops accepting, and the process exit ends the rest.
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, addr)) = accepted else {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let ingress = ingress.clone();
                let service = hyper::service::service_fn(move |req| {
                    let ingress = ingress.clone();
                    async move { Ok::<_, Infallible>(ingress.handle(req, addr).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, port: u16, weight: u32) -> Backend {
        Backend {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
        }
    }

    #[test]
    fn weighted_round_robin_spreads_by_weight() {
        let routes = Routes::default();
        routes.replace(HashMap::from([(
            "app.test".to_string(),
            vec![b("a", 1, 90), b("b", 2, 10)],
        )]));
        let route = routes.route("app.test").unwrap();
        let mut counts = HashMap::new();
        for _ in 0..1000 {
            *counts
                .entry(routes.pick(&route, &[]).unwrap().id)
                .or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 900);
        assert_eq!(counts["b"], 100);
        // Equal weights alternate.
        routes.replace(HashMap::from([(
            "x".to_string(),
            vec![b("a", 1, 1), b("b", 2, 1)],
        )]));
        let route = routes.route("x").unwrap();
        let seq: Vec<String> = (0..4)
            .map(|_| routes.pick(&route, &[]).unwrap().id)
            .collect();
        assert_ne!(seq[0], seq[1]);
        assert_ne!(seq[1], seq[2]);
    }

    #[test]
    fn ejected_backends_are_skipped() {
        let routes = Routes::default();
        routes.replace(HashMap::from([(
            "x".to_string(),
            vec![b("a", 1, 1), b("b", 2, 1)],
        )]));
        let route = routes.route("x").unwrap();
        routes.eject(SocketAddr::from(([127, 0, 0, 1], 1)));
        for _ in 0..10 {
            assert_eq!(routes.pick(&route, &[]).unwrap().id, "b");
        }
        assert_eq!(routes.backends("X").unwrap().len(), 2);
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }
}
