//! The HTTP side, on raw hyper: body limits and timeouts, parsing, auth,
//! dispatch to a [`Handler`], and the one place where an [`ApiError`]
//! becomes `{"error": "..."}` with its status.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::auth::{bearer, Access, Caller};
use crate::error::ApiError;
use crate::request::{body_route_access, parse, ApiRequest, RawRequest};

/// Largest request body accepted.
pub const MAX_BODY: usize = 1024 * 1024;
/// How long a client may take to send its body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// What a handler answers.
pub enum ApiResponse {
    /// JSON (already encoded) with a status.
    Json(u16, Bytes),
    /// Plain text (logs).
    Text(String),
    /// Prometheus text format.
    Metrics(String),
    /// Chunked plain text until the sender goes away (log follow).
    Stream(mpsc::Receiver<Bytes>),
    /// Server-Sent Events until the sender goes away.
    Events(mpsc::Receiver<Bytes>),
    /// The status page.
    Page,
    /// An interactive exec: the request is upgraded to a WebSocket that
    /// carries this session (see [`crate::attach`]).
    Attach(crate::attach::Session),
    /// A binary stream (an archive) with its media type and headers.
    Download {
        data: mpsc::Receiver<Bytes>,
        content_type: &'static str,
        headers: Vec<(&'static str, String)>,
    },
}

impl ApiResponse {
    /// 200 with `value` serialised.
    pub fn ok<T: serde::Serialize>(value: &T) -> Result<Self, ApiError> {
        Self::json(200, value)
    }
    /// 201 with `value` serialised.
    pub fn created<T: serde::Serialize>(value: &T) -> Result<Self, ApiError> {
        Self::json(201, value)
    }
    /// `status` with `value` serialised.
    pub fn json<T: serde::Serialize>(status: u16, value: &T) -> Result<Self, ApiError> {
        serde_json::to_vec(value)
            .map(|v| ApiResponse::Json(status, Bytes::from(v)))
            .map_err(|e| ApiError::internal(format!("cannot encode the answer: {e}")))
    }
}

/// Whoever owns the state behind the API.
#[async_trait::async_trait]
pub trait Handler: Send + Sync + 'static {
    /// The caller a bearer token belongs to, if any.
    fn authenticate(&self, token: &str) -> Option<Caller>;
    /// Does what the request asks. `caller` is `None` for public and
    /// signature-checked requests.
    async fn handle(
        &self,
        request: ApiRequest,
        caller: Option<Caller>,
    ) -> Result<ApiResponse, ApiError>;
    /// Called once per request, for metrics.
    fn observe(&self, _route: &'static str, _method: &str, _status: u16, _elapsed: Duration) {}
    /// What `request` needs; the request's own rule unless the handler's
    /// settings say more (a token for `/metrics`).
    fn access_of(&self, request: &ApiRequest) -> Access {
        request.access()
    }
    /// Where to send a request on rather than answer it here (a server
    /// that does not lead sends it to the one that does); `None`: here.
    fn forward_to(&self, _method: &http::Method, _path: &str) -> Option<crate::forward::Forward> {
        None
    }
}

pub(crate) type Body = BoxBody<Bytes, Infallible>;

fn full(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

impl From<ApiError> for Response<Body> {
    fn from(e: ApiError) -> Self {
        let mut r = full(e.status, "application/json", e.body());
        if e.status == 401 {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        if e.status == 429 {
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

fn into_response(answer: ApiResponse) -> Response<Body> {
    match answer {
        ApiResponse::Json(status, bytes) => full(status, "application/json", bytes),
        ApiResponse::Text(text) => full(200, "text/plain; charset=utf-8", text),
        ApiResponse::Metrics(text) => full(200, "text/plain; version=0.0.4; charset=utf-8", text),
        ApiResponse::Stream(rx) => streamed(rx, "text/plain; charset=utf-8"),
        ApiResponse::Download {
            data,
            content_type,
            headers,
        } => {
            let mut r = streamed(data, content_type);
            for (name, value) in headers {
                if let Ok(v) = header::HeaderValue::from_str(&value) {
                    r.headers_mut().insert(name, v);
                }
            }
            r
        }
        ApiResponse::Page => {
            let mut r = full(200, "text/html; charset=utf-8", crate::page::INDEX);
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                header::HeaderValue::from_static(crate::page::CSP),
            );
            h.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                header::HeaderValue::from_static("nosniff"),
            );
            h.insert(
                header::REFERRER_POLICY,
                header::HeaderValue::from_static("no-referrer"),
            );
            r
        }
        ApiResponse::Attach(_) => {
            ApiError::bad_request("exec with a WebSocket needs an upgrade").into()
        }
        ApiResponse::Events(rx) => {
            let mut r = streamed(rx, "text/event-stream");
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                header::HeaderValue::from_static("no-cache"),
            );
            r
        }
    }
}

/// Switches the connection to a WebSocket that carries `session`: 101
/// now, the session once hyper hands the connection over.
fn upgraded(
    upgrade: Option<hyper::upgrade::OnUpgrade>,
    key: Option<&header::HeaderValue>,
    session: crate::attach::Session,
) -> Response<Body> {
    let (Some(upgrade), Some(key)) = (upgrade, key) else {
        return ApiError::bad_request("exec with a WebSocket needs an upgrade").into();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut r = Response::new(Full::new(Bytes::new()).boxed());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        header::UPGRADE,
        header::HeaderValue::from_static("websocket"),
    );
    h.insert(
        header::CONNECTION,
        header::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = header::HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    tokio::spawn(async move {
        match upgrade.await {
            Ok(io) => {
                let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(io),
                    tokio_tungstenite::tungstenite::protocol::Role::Server,
                    None,
                )
                .await;
                crate::attach::serve(ws, session).await;
            }
            // The session is dropped with it: the command is killed.
            Err(e) => tracing::debug!(error = %e, "the upgrade did not happen"),
        }
    });
    r
}

/// A chunked body fed by `rx` until its sender goes away.
fn streamed(rx: mpsc::Receiver<Bytes>, content_type: &'static str) -> Response<Body> {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx)
        .map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let mut r = Response::new(BodyExt::boxed(StreamBody::new(stream)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

async fn read_body(body: Incoming) -> Result<Bytes, ApiError> {
    let limited = Limited::new(body, MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Err(_) => Err(ApiError::new(
            408,
            format!(
                "request body not received within {}s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_large())
        }
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "cannot read the request body: {e}"
        ))),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
    }
}

/// A body handed on as it arrives (an upload), in the order it comes; a
/// broken one ends with an error.
fn pump(mut body: Incoming) -> mpsc::Receiver<Result<Bytes, String>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            match body.frame().await {
                None => return,
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        if tx.send(Ok(data)).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    let _ = tx.send(Err(e.to_string())).await;
                    return;
                }
            }
        }
    });
    rx
}

fn too_large() -> ApiError {
    ApiError::new(413, format!("request body larger than {} bytes", MAX_BODY))
}

/// Who asks, as far as limits go: the client's address, and the failed
/// authentications counted per address.
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    pub addr: std::net::IpAddr,
    pub limit: &'a crate::limit::FailureLimit,
}

fn too_many_failures(peer: Peer<'_>) -> ApiError {
    ApiError::new(
        429,
        format!(
            "too many failed authentications from {} (more than {} a second); try again in a second",
            peer.addr,
            crate::limit::MAX_FAILURES_PER_SEC
        ),
    )
}

fn authorize(
    handler: &dyn Handler,
    access: Access,
    auth_header: Option<&str>,
    peer: Peer<'_>,
) -> Result<Option<Caller>, ApiError> {
    match access {
        Access::Public | Access::Signature => Ok(None),
        Access::Role(needed) => {
            let caller = bearer(auth_header)
                .ok_or_else(|| ApiError::unauthorized("missing bearer token"))
                .and_then(|token| {
                    handler
                        .authenticate(token)
                        .ok_or_else(|| ApiError::unauthorized("invalid token"))
                });
            let caller = match caller {
                Ok(c) => c,
                Err(_) if peer.limit.failed(peer.addr, Instant::now()) => {
                    return Err(too_many_failures(peer));
                }
                Err(e) => return Err(e),
            };
            if caller.role < needed {
                return Err(ApiError::forbidden(format!(
                    "token {:?} has role {}, this needs {}",
                    caller.name,
                    caller.role.as_str(),
                    needed.as_str()
                )));
            }
            Ok(Some(caller))
        }
    }
}

/// Serves one request.
pub async fn serve_request(
    handler: Arc<dyn Handler>,
    request: Request<Incoming>,
    peer: Peer<'_>,
) -> Response<Body> {
    let request = match crate::forward::elsewhere(handler.as_ref(), request).await {
        Ok(response) => return response,
        Err(request) => request,
    };
    let started = Instant::now();
    let method = request.method().clone();
    let mut request = request;
    let upgrade =
        crate::request::websocket(request.headers()).then(|| hyper::upgrade::on(&mut request));
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let auth_header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut route = "unknown";
    let result: Result<ApiResponse, ApiError> = async {
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let upload = crate::request::is_upload(&method, &path);
        if declared.is_some_and(|n| n > MAX_BODY as u64) && !upload {
            return Err(too_large());
        }
        let mut caller = None;
        let early = body_route_access(&method, &path);
        if let Some(access) = early {
            caller = authorize(handler.as_ref(), access, auth_header.as_deref(), peer)?;
        }
        let (bytes, streamed_body) = if upload {
            (Bytes::new(), Some(pump(body)))
        } else {
            (read_body(body).await?, None)
        };
        let mut parsed = parse(RawRequest {
            method: &method,
            path: &path,
            query: parts.uri.query(),
            headers: &parts.headers,
            body: bytes,
        })?;
        if let (ApiRequest::RestoreVolume { body, .. }, Some(rx)) = (&mut parsed, streamed_body) {
            *body = crate::request::Upload::new(rx);
        }
        route = parsed.route();
        let signed = match early {
            Some(access) => access == Access::Signature,
            None => {
                let access = handler.access_of(&parsed);
                caller = authorize(handler.as_ref(), access, auth_header.as_deref(), peer)?;
                access == Access::Signature
            }
        };
        // A signature costs work to check: an address past its failures
        // gets none of it, and a bad signature counts as a failure.
        if signed && peer.limit.limited(peer.addr, Instant::now()) {
            return Err(too_many_failures(peer));
        }
        let answer = handler.handle(parsed, caller).await;
        if signed && matches!(&answer, Err(e) if e.status == 401) {
            peer.limit.failed(peer.addr, Instant::now());
        }
        answer
    }
    .await;
    let response = match result {
        Ok(ApiResponse::Attach(session)) => upgraded(
            upgrade,
            parts.headers.get(header::SEC_WEBSOCKET_KEY),
            session,
        ),
        Ok(answer) => into_response(answer),
        Err(e) => {
            if e.status >= 500 {
                tracing::error!(%path, status = e.status, error = %e.message, "request failed");
            }
            e.into()
        }
    };
    handler.observe(
        route,
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}

/// Accepts connections until `shutdown` resolves, then lets in-flight
/// requests finish (up to 5 s).
pub async fn serve(
    listener: TcpListener,
    handler: Arc<dyn Handler>,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // Connections can be upgraded (interactive exec), which hyper-util's
    // graceful shutdown does not take: each connection watches `stop`.
    let stop = tokio_util::sync::CancellationToken::new();
    let connections = tokio_util::task::TaskTracker::new();
    let limit = Arc::new(crate::limit::FailureLimit::default());
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, from) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let handler = handler.clone();
                let limit = limit.clone();
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    let limit = limit.clone();
                    async move {
                        let peer = Peer {
                            addr: from.ip(),
                            limit: &limit,
                        };
                        Ok::<_, Infallible>(serve_request(handler, req, peer).await)
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades();
                let stop = stop.clone();
                connections.spawn(async move {
                    let mut conn = std::pin::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => return,
                        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    stop.cancel();
    connections.close();
    let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    Ok(())
}
