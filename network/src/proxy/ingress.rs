//! One proxied request: the route by Host header, the forwarded headers,
//! the upstream call over a keep-alive pool, a retry elsewhere when a replica
//! refuses a body-less request, a 504 when a replica does not answer in
//! time, and WebSocket upgrades.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::headers;
use super::routes::{Route, Routes};
use super::upstream::{Failed, Upstreams};
use super::Body;

/// The proxy: a routing table and keep-alive connections to the replicas.
#[derive(Clone)]
pub struct Ingress {
    routes: Arc<Routes>,
    upstreams: Arc<Upstreams>,
    response_timeout: Duration,
    limits: Limits,
    /// Client connections open now, across every worker.
    connections: Arc<tokio::sync::Semaphore>,
    /// The TLS acceptor and port, when the ingress serves HTTPS too.
    https: Option<(tokio_rustls::TlsAcceptor, u16)>,
}

/// How a request came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

/// Paths a certificate authority fetches over plain HTTP to check a domain
/// (ACME HTTP-01): never redirected.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// What one ingress (all its workers together) holds at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Client connections open at once; more are closed as they arrive.
    pub max_connections: usize,
    /// A client has this long to send a request's head, and an idle
    /// keep-alive connection is closed after it.
    pub header_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 10_000,
            header_timeout: Duration::from_secs(30),
        }
    }
}

/// How long a replica has to start answering (nginx's proxy_read_timeout).
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

fn json_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": message }).to_string();
    let mut r = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

impl Ingress {
    /// A proxy over `routes` with its own connection pool (one per worker
    /// thread, since the pool's connections live on that thread's runtime).
    pub fn new(routes: Arc<Routes>) -> Self {
        Self::with_limits(routes, Limits::default())
    }

    /// A proxy over `routes` held to `limits`.
    pub fn with_limits(routes: Arc<Routes>, limits: Limits) -> Self {
        Self {
            routes,
            upstreams: Arc::new(Upstreams::default()),
            response_timeout: RESPONSE_TIMEOUT,
            connections: Arc::new(tokio::sync::Semaphore::new(limits.max_connections)),
            limits,
            https: None,
        }
    }

    /// The same proxy, also serving HTTPS on `port` with the certificates
    /// of its routes; plain HTTP to a domain with a certificate is then
    /// redirected there.
    pub fn with_https(mut self, port: u16) -> Self {
        self.https = Some((super::tls::acceptor(self.routes.clone()), port));
        self
    }

    /// The TLS acceptor, when HTTPS is served.
    pub fn acceptor(&self) -> Option<&tokio_rustls::TlsAcceptor> {
        self.https.as_ref().map(|(a, _)| a)
    }

    /// The same proxy with its own keep-alive pool (for another worker
    /// thread), sharing the routes, the limits and the connection count.
    pub fn for_worker(&self) -> Self {
        Self {
            upstreams: Arc::new(Upstreams::default()),
            ..self.clone()
        }
    }

    /// The limits it holds to.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// A place for one more client connection, unless the cap is reached.
    pub fn admit(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// The same proxy, waiting `timeout` for a replica's response head.
    pub fn with_response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// Serves one request from `client_addr` that came in over `scheme`,
    /// and counts the answer.
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client_addr: SocketAddr,
        scheme: Scheme,
    ) -> Response<Body> {
        let host = req
            .headers()
            .get(HOST)
            .cloned()
            .or_else(|| req.uri().host().and_then(|h| HeaderValue::from_str(h).ok()))
            .unwrap_or(HeaderValue::from_static(""));
        let domain = host.to_str().unwrap_or("").split(':').next().unwrap_or("");
        let domain = if domain.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(domain.to_ascii_lowercase())
        } else {
            Cow::Borrowed(domain)
        };
        if let Some(token) = req.uri().path().strip_prefix(ACME_CHALLENGE) {
            if let Some(answer) = self.routes.challenge(token) {
                let mut r = Response::new(
                    Full::new(Bytes::from(answer))
                        .map_err(|never| match never {})
                        .boxed(),
                );
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/octet-stream"),
                );
                return r;
            }
        }
        let route = match self.routes.route(&domain, req.uri().path()) {
            Ok(route) => route,
            Err(has_routes) => {
                self.routes.count_unrouted();
                let why = if has_routes {
                    format!("no service for path {:?} on {domain:?}", req.uri().path())
                } else {
                    format!("no service for host {domain:?}")
                };
                return json_error(StatusCode::NOT_FOUND, &why);
            }
        };
        if let (Scheme::Http, Some((_, port))) = (scheme, &self.https) {
            if !req.uri().path().starts_with(ACME_CHALLENGE) && self.routes.certs().has(&domain) {
                let response = redirect(&domain, *port, req.uri());
                route.traffic.respond(response.status());
                return response;
            }
        }
        let response = self
            .forward(req, client_addr, &route, &domain, host.clone(), scheme)
            .await;
        route.traffic.respond(response.status());
        response
    }

    /// Sends a request for `domain` to one of `route`'s replicas.
    async fn forward(
        &self,
        mut req: Request<Incoming>,
        client_addr: SocketAddr,
        route: &Route,
        domain: &str,
        host: HeaderValue,
        scheme: Scheme,
    ) -> Response<Body> {
        if route.backends.is_empty() {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("no ready replica for {domain}"),
            );
        }
        let upgrade = req.headers().get(header::UPGRADE).cloned();
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        headers::to_replica(&mut parts, client_addr.ip(), scheme, host, upgrade.as_ref());
        if route.strip {
            headers::strip_prefix(&mut parts, &route.prefix);
        }
        // A request that could not reach a replica is given back whole
        // (it never left), and goes to another one as it is.
        let mut request = Some(Request::from_parts(parts, body.boxed()));
        let mut tried = Vec::new();
        loop {
            let Some(i) = self.routes.pick(route, &tried) else {
                return json_error(
                    StatusCode::BAD_GATEWAY,
                    &format!("no replica of {domain} answered"),
                );
            };
            let backend = &route.backends[i];
            tried.push(backend.addr);
            let may_retry = tried.len() < route.backends.len();
            let Some(upstream) = request.take() else {
                return json_error(StatusCode::BAD_GATEWAY, "request already sent");
            };
            let sent = self.upstreams.try_send(backend.addr, upstream);
            let Ok(sent) = tokio::time::timeout(self.response_timeout, sent).await else {
                // Dropping the exchange closes that connection to the replica.
                route.traffic.upstream_error();
                tracing::debug!(backend = %backend.id, "replica did not answer in time");
                return json_error(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "{domain} did not answer within {} s",
                        self.response_timeout.as_secs_f64()
                    ),
                );
            };
            match sent {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    return splice(resp, client_upgrade);
                }
                Ok(resp) => {
                    let (mut rparts, rbody) = resp.into_parts();
                    headers::to_client(&mut rparts);
                    return Response::from_parts(rparts, rbody.boxed());
                }
                Err(Failed { error: e, unsent }) => {
                    route.traffic.upstream_error();
                    if e.is_connect() {
                        tracing::debug!(backend = %backend.id, error = %e, "replica refused; out of rotation");
                        self.routes.eject(backend.addr);
                        if let (true, Some(unsent)) = (may_retry, unsent) {
                            request = Some(unsent);
                            continue;
                        }
                    }
                    // The detail stays in orca's log: a client learns
                    // nothing about replicas or orca's insides.
                    tracing::debug!(backend = %backend.id, error = %e, "replica failed");
                    return json_error(
                        StatusCode::BAD_GATEWAY,
                        &format!("{domain} failed to answer"),
                    );
                }
            }
        }
    }
}

/// Answers a replica's 101 to the client, and once both sides have
/// switched, copies bytes both ways until either closes. A client that did
/// not ask for the upgrade gets the 101 and nothing more.
fn splice(
    mut resp: Response<Incoming>,
    client_side: Option<hyper::upgrade::OnUpgrade>,
) -> Response<Body> {
    if let Some(client_side) = client_side {
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
    Response::from_parts(parts, empty())
}

/// 308 to the same path and query over HTTPS.
fn redirect(domain: &str, port: u16, uri: &Uri) -> Response<Body> {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = match port {
        443 => format!("https://{domain}{path}"),
        port => format!("https://{domain}:{port}{path}"),
    };
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

pub(crate) fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}
