//! The HTTP client of the API, for the CLI and tests: JSON in and out, the
//! server's `{"error": ...}` surfaced as the error message, and streaming
//! bodies for `logs -f`.

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Failures of an API call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    /// The server could not be reached.
    #[error("cannot reach the orca API at {base}: {reason}")]
    Unreachable { base: String, reason: String },
    /// The answer did not parse.
    #[error("unexpected answer from {path}: {reason}")]
    Decode { path: String, reason: String },
}

/// A client of one orca server.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    token: Option<String>,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// `base` like `http://127.0.0.1:6880`.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let http = Client::builder(TokioExecutor::new()).build_http();
        Self {
            base: base.trim_end_matches('/').to_string(),
            token,
            http,
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request; on a non-2xx answer, the server's error message.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if body.is_some() {
            builder = builder.header(header::CONTENT_TYPE, "application/json");
        }
        let request = builder
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| ClientError::Unreachable {
                base: self.base.clone(),
                reason: e.to_string(),
            })?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| ClientError::Unreachable {
                base: self.base.clone(),
                reason: chain(&e),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        Err(error_of(response).await)
    }

    /// An interactive exec of service `name` (see [`crate::attach`]).
    pub async fn attach(
        &self,
        name: &str,
        request: &crate::attach::AttachRequest,
    ) -> Result<crate::attach::Session, ClientError> {
        use tokio_tungstenite::tungstenite::handshake;
        let path = format!("/api/v1/services/{name}/exec?{}", request.to_query());
        let key = handshake::client::generate_key();
        let mut builder = Request::builder()
            .method(Method::GET)
            .uri(format!("{}{}", self.base, path))
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "websocket")
            .header(header::SEC_WEBSOCKET_VERSION, "13")
            .header(header::SEC_WEBSOCKET_KEY, &key);
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let unreachable = |reason: String| ClientError::Unreachable {
            base: self.base.clone(),
            reason,
        };
        let request = builder
            .body(Full::new(Bytes::new()))
            .map_err(|e| unreachable(e.to_string()))?;
        let response = self
            .http
            .request(request)
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        let status = response.status();
        if status != http::StatusCode::SWITCHING_PROTOCOLS {
            return Err(error_of(response).await);
        }
        let accept = handshake::derive_accept_key(key.as_bytes());
        let accepted = response
            .headers()
            .get(header::SEC_WEBSOCKET_ACCEPT)
            .is_some_and(|v| v.as_bytes() == accept.as_bytes());
        if !accepted {
            return Err(ClientError::Decode {
                path,
                reason: "the server did not accept the WebSocket key".into(),
            });
        }
        let io = hyper::upgrade::on(response)
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            hyper_util::rt::TokioIo::new(io),
            tokio_tungstenite::tungstenite::protocol::Role::Client,
            None,
        )
        .await;
        Ok(crate::attach::client(ws))
    }

    async fn json_of<T: DeserializeOwned>(
        &self,
        path: &str,
        response: hyper::Response<Incoming>,
    ) -> Result<T, ClientError> {
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                path: path.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// GET, decoding JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self.send(Method::GET, path, None).await?;
        self.json_of(path, r).await
    }

    /// POST `body` as JSON, decoding JSON.
    pub async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(Method::POST, path, body).await
    }

    /// PUT `body` as JSON, decoding JSON.
    pub async fn put<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        self.send_json(Method::PUT, path, body).await
    }

    /// `method` with `body` as JSON, decoding JSON.
    async fn send_json<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let bytes = serde_json::to_vec(body).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })?;
        let r = self.send(method, path, Some(bytes)).await?;
        self.json_of(path, r).await
    }

    /// DELETE, decoding JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let r = self.send(Method::DELETE, path, None).await?;
        self.json_of(path, r).await
    }

    /// GET, the body as text.
    pub async fn get_text(&self, path: &str) -> Result<String, ClientError> {
        let r = self.send(Method::GET, path, None).await?;
        let bytes = r
            .into_body()
            .collect()
            .await
            .map_err(|e| ClientError::Decode {
                path: path.to_string(),
                reason: e.to_string(),
            })?
            .to_bytes();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// GET, handing each chunk of the body to `each` as it arrives, until
    /// the body ends or `each` breaks.
    /// `PUT path` with `file` as the body, streamed (an archive of any
    /// size); the JSON answer.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: tokio::fs::File,
    ) -> Result<T, ClientError> {
        use futures::StreamExt;
        let unreachable = |reason: String| ClientError::Unreachable {
            base: self.base.clone(),
            reason,
        };
        let frames = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map(|chunk| chunk.map(hyper::body::Frame::data));
        let body = http_body_util::StreamBody::new(frames);
        let http = Client::builder(TokioExecutor::new()).build_http();
        let mut builder = Request::builder()
            .method(Method::PUT)
            .uri(format!("{}{}", self.base, path))
            .header(header::CONTENT_TYPE, "application/octet-stream");
        if let Some(t) = &self.token {
            builder = builder.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let request = builder.body(body).map_err(|e| unreachable(e.to_string()))?;
        let response = http
            .request(request)
            .await
            .map_err(|e| unreachable(chain(&e)))?;
        if !response.status().is_success() {
            return Err(error_of(response).await);
        }
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    pub async fn stream(
        &self,
        path: &str,
        mut each: impl FnMut(&[u8]) -> std::ops::ControlFlow<()>,
    ) -> Result<(), ClientError> {
        let r = self.send(Method::GET, path, None).await?;
        let mut body = r.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ClientError::Decode {
                path: path.to_string(),
                reason: e.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                if each(data).is_break() {
                    break;
                }
            }
        }
        Ok(())
    }
}

/// The server's error answer: its `{"error": ...}` message, or the status
/// and body.
async fn error_of(response: hyper::Response<Incoming>) -> ClientError {
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let message = serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or_else(|| format!("{status}: {}", String::from_utf8_lossy(&bytes).trim()));
    ClientError::Api {
        status: status.as_u16(),
        message,
    }
}

/// An error with its sources, `outer: inner: innermost`.
fn chain(e: &dyn std::error::Error) -> String {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ")
}
