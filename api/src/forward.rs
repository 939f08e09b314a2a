//! Sends a request on to another server as it came (method, path, query,
//! headers, body) and gives back that server's answer as it comes: how a
//! server that does not lead hands requests to the one that does.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response};

use crate::ApiError;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;

/// Set on a request one server sent on: the next one answers it itself.
pub const FORWARDED_BY: &str = "x-orca-forwarded-by";
/// How long the other server may take to take the connection.
const CONNECT: Duration = Duration::from_secs(1);

/// Why a request could not be sent on.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// Nothing was sent: the request is given back.
    #[error("{reason}")]
    Unreached {
        reason: String,
        request: Box<Request<Incoming>>,
    },
    /// It was sent, and the answer failed.
    #[error("{0}")]
    Failed(String),
}

/// Sends `request` to `to` (`HOST:PORT`), marked as forwarded by `by`.
pub async fn send(
    to: &str,
    by: &str,
    mut request: Request<Incoming>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, ForwardError> {
    let tcp = match tokio::time::timeout(CONNECT, tokio::net::TcpStream::connect(to)).await {
        Ok(Ok(tcp)) => tcp,
        Ok(Err(e)) => {
            return Err(ForwardError::Unreached {
                reason: format!("connect to {to}: {e}"),
                request: Box::new(request),
            })
        }
        Err(_) => {
            return Err(ForwardError::Unreached {
                reason: format!(
                    "connect to {to}: no answer within {} ms",
                    CONNECT.as_millis()
                ),
                request: Box::new(request),
            })
        }
    };
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| ForwardError::Failed(format!("{to}: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    if let Ok(v) = HeaderValue::from_str(by) {
        request.headers_mut().insert(FORWARDED_BY, v);
    }
    if let Ok(v) = HeaderValue::from_str(to) {
        request.headers_mut().insert(header::HOST, v);
    }
    let answer = sender
        .send_request(request)
        .await
        .map_err(|e| ForwardError::Failed(format!("{to}: {e}")))?;
    Ok(answer.map(|body| {
        // A body cut off midway ends there, as the other server's would.
        let data = body
            .into_data_stream()
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()))
            .map(|d| Ok::<_, Infallible>(Frame::data(d)));
        BodyExt::boxed(StreamBody::new(data))
    }))
}

/// Where a request goes on to, and who sends it.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `HOST:PORT` of the other server's API.
    pub to: String,
    /// This server's id, set on the request (see [`crate::forward`]).
    pub by: String,
}

/// Sends `request` on where `handler` says, unless it says here or
/// another server sent it on already; gives back what is answered here.
pub(crate) async fn elsewhere(
    handler: &dyn crate::server::Handler,
    request: Request<Incoming>,
) -> Result<Response<crate::server::Body>, Request<Incoming>> {
    if request.headers().contains_key(FORWARDED_BY) {
        return Err(request);
    }
    match handler.forward_to(request.method(), request.uri().path()) {
        Some(f) => forwarded(handler, f, request).await,
        None => Err(request),
    }
}

/// Sends `request` on as `forward` says. Gives it back when it could not
/// be sent and is a read, which this server then answers itself.
async fn forwarded(
    handler: &dyn crate::server::Handler,
    forward: Forward,
    request: Request<Incoming>,
) -> Result<Response<crate::server::Body>, Request<Incoming>> {
    let started = Instant::now();
    let method = request.method().clone();
    if crate::request::websocket(request.headers()) {
        return Ok(ApiError::new(
            503,
            format!(
                "an interactive exec runs through the leading server, at {}: ask it",
                forward.to
            ),
        )
        .into());
    }
    let response = match send(&forward.to, &forward.by, request).await {
        Ok(r) => r,
        Err(ForwardError::Unreached { request, .. })
            if matches!(method, http::Method::GET | http::Method::HEAD) =>
        {
            return Err(*request);
        }
        Err(ForwardError::Unreached { reason, .. }) => ApiError::new(
            503,
            format!(
                "this server does not lead and the leader at {} did not answer ({reason}); nothing was changed: try again",
                forward.to
            ),
        )
        .into(),
        Err(e) => ApiError::new(
            502,
            format!(
                "the answer of the leader at {} failed ({e}); the change may or may not have been made",
                forward.to
            ),
        )
        .into(),
    };
    handler.observe(
        "forwarded",
        method.as_str(),
        response.status().as_u16(),
        started.elapsed(),
    );
    Ok(response)
}
