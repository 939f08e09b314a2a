//! One ingress worker's keep-alive connections to the replicas. A request
//! takes an idle connection to its replica, or opens one; the connection
//! stays in the pool while it is busy and is free again as soon as hyper's
//! connection task wants the next request, so nothing has to hand it back.
//! Each worker owns its pool, and the lock around it is never contended
//! across threads or held across an await.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

use super::Body;

/// How long a replica has to accept a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Connections kept per replica and worker.
pub const MAX_POOLED: usize = 64;
/// An idle connection unused for this long is closed.
const IDLE_FOR: Duration = Duration::from_secs(30);
/// How often connections to replicas no longer asked for are swept.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// Why a request did not get a response from a replica.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("connect: no answer within {0:?}")]
    ConnectTimeout(Duration),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl UpstreamError {
    /// The replica could not be reached at all (so the request was not sent).
    pub fn is_connect(&self) -> bool {
        !matches!(self, Self::Http(_))
    }
}

struct Conn {
    sender: SendRequest<Body>,
    /// When the last request was sent on it.
    used: Instant,
}

impl Conn {
    /// Worth keeping: open, and either busy or idle for less than [`IDLE_FOR`].
    fn keep(&self, now: Instant) -> bool {
        let idle_too_long = self.sender.is_ready() && now.duration_since(self.used) > IDLE_FOR;
        !self.sender.is_closed() && !idle_too_long
    }
}

struct Pool {
    conns: HashMap<SocketAddr, Vec<Conn>>,
    swept: Instant,
}

/// The keep-alive connections of one worker, by replica address.
pub struct Upstreams {
    pool: Mutex<Pool>,
}

impl Default for Upstreams {
    fn default() -> Self {
        Self {
            pool: Mutex::new(Pool {
                conns: HashMap::new(),
                swept: Instant::now(),
            }),
        }
    }
}

/// A request that got no response: why, and the request itself when it
/// never left because the replica could not be reached (so it may go to
/// another one as it is, body included).
pub struct Failed {
    pub error: UpstreamError,
    pub unsent: Option<Request<Body>>,
}

/// What sending on a connection yields: the response, or the error with
/// the request given back if it never left.
type Sent = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<Body>>>;

impl Upstreams {
    /// Sends `req` (origin-form URI, with a Host header) to `addr` on an idle
    /// connection, or on a new one. A request that a closing connection
    /// gave back unsent goes out on another.
    #[cfg(test)]
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, UpstreamError> {
        self.try_send(addr, req).await.map_err(|f| f.error)
    }

    /// Like [`Upstreams::send`], with the request given back when the
    /// replica could not be reached.
    pub async fn try_send(
        &self,
        addr: SocketAddr,
        mut req: Request<Body>,
    ) -> Result<Response<Incoming>, Failed> {
        loop {
            // Two awaits rather than one boxed future: no allocation per request.
            let sent = match self.send_on_idle(addr, req) {
                Ok(sending) => sending.await,
                Err(unsent) => self.send_on_new(addr, unsent).await?.await,
            };
            match sent {
                Ok(resp) => return Ok(resp),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => {
                        return Err(Failed {
                            error: e.into_error().into(),
                            unsent: None,
                        })
                    }
                },
            }
        }
    }

    /// Sends on a connection to `addr` that wants a request, if there is one;
    /// otherwise gives the request back (by value, as hyper does).
    #[allow(clippy::result_large_err)]
    fn send_on_idle(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<impl Future<Output = Sent> + Send, Request<Body>> {
        let now = Instant::now();
        let Ok(mut pool) = self.pool.lock() else {
            return Err(req);
        };
        if now.duration_since(pool.swept) > SWEEP_EVERY {
            pool.conns.retain(|_, conns| {
                conns.retain(|c| c.keep(now));
                !conns.is_empty()
            });
            pool.swept = now;
        }
        let Some(conns) = pool.conns.get_mut(&addr) else {
            return Err(req);
        };
        conns.retain(|c| c.keep(now));
        match conns.iter_mut().find(|c| c.sender.is_ready()) {
            Some(conn) => {
                conn.used = now;
                Ok(conn.sender.try_send_request(req))
            }
            None => Err(req),
        }
    }

    /// Opens a connection to `addr`, sends `req` on it and pools it.
    async fn send_on_new(
        &self,
        addr: SocketAddr,
        req: Request<Body>,
    ) -> Result<impl Future<Output = Sent> + Send, Failed> {
        let mut sender = match connect(addr).await {
            Ok(sender) => sender,
            Err(error) => {
                return Err(Failed {
                    error,
                    unsent: Some(req),
                })
            }
        };
        // A new connection takes its first request before it is polled.
        let sent = sender.try_send_request(req);
        // Pooled up to a bound per replica; past it the connection serves
        // this one request and closes.
        if let Ok(mut pool) = self.pool.lock() {
            let conns = pool.conns.entry(addr).or_default();
            if conns.len() < MAX_POOLED {
                conns.push(Conn {
                    sender,
                    used: Instant::now(),
                });
            }
        }
        Ok(sent)
    }

    /// Connections held to `addr` (busy or idle).
    #[cfg(test)]
    fn held(&self, addr: SocketAddr) -> usize {
        self.pool
            .lock()
            .map(|p| p.conns.get(&addr).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

/// A new HTTP/1.1 connection to `addr`, its task spawned.
async fn connect(addr: SocketAddr) -> Result<SendRequest<Body>, UpstreamError> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(UpstreamError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(%addr, error = %e, "ingress: replica connection ended");
        }
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A keep-alive server that answers every request, after 30 ms, with
    /// the number of the connection it came on.
    async fn server() -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut n = 0;
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                n += 1;
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut have = Vec::new();
                    loop {
                        let Ok(read) = s.read(&mut buf).await else {
                            return;
                        };
                        if read == 0 {
                            return;
                        }
                        have.extend_from_slice(&buf[..read]);
                        while let Some(end) = have.windows(4).position(|w| w == b"\r\n\r\n") {
                            have.drain(..end + 4);
                            // Slow enough for requests sent together to overlap.
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let body = n.to_string();
                            let resp = format!(
                                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                                body.len()
                            );
                            if s.write_all(resp.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    fn get() -> Request<Body> {
        Request::builder()
            .uri("/")
            .header("host", "x")
            .body(super::super::ingress::empty())
            .unwrap()
    }

    async fn text(resp: Response<Incoming>) -> String {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_in_turn_share_one_connection() {
        let addr = server().await;
        let ups = Upstreams::default();
        for _ in 0..5 {
            let resp = ups.send(addr, get()).await.unwrap();
            assert_eq!(text(resp).await, "1");
        }
        assert_eq!(ups.held(addr), 1);
    }

    #[tokio::test]
    async fn concurrent_requests_open_connections_then_reuse_them() {
        let addr = server().await;
        let ups = Upstreams::default();
        // Three in flight at once need three connections.
        let (a, b, c) = tokio::join!(
            ups.send(addr, get()),
            ups.send(addr, get()),
            ups.send(addr, get())
        );
        let mut seen = Vec::new();
        for r in [a, b, c] {
            seen.push(text(r.unwrap()).await);
        }
        seen.sort();
        assert_eq!(seen, ["1", "2", "3"]);
        assert_eq!(ups.held(addr), 3);
        // Then, one at a time, they are reused and none is added.
        for _ in 0..6 {
            let n: u32 = text(ups.send(addr, get()).await.unwrap())
                .await
                .parse()
                .unwrap();
            assert!(n <= 3);
        }
        assert_eq!(ups.held(addr), 3);
    }

    #[tokio::test]
    async fn the_pool_keeps_at_most_its_bound() {
        let addr = server().await;
        let ups = Upstreams::default();
        let all = (0..MAX_POOLED + 8).map(|_| ups.send(addr, get()));
        for r in futures::future::join_all(all).await {
            text(r.unwrap()).await;
        }
        assert_eq!(ups.held(addr), MAX_POOLED);
    }

    #[tokio::test]
    async fn a_closed_connection_is_replaced() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Answers one request per connection and closes without saying so.
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = vec![0u8; 4096];
                let _ = s.read(&mut buf).await;
                let _ = s
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
            }
        });
        let ups = Upstreams::default();
        for _ in 0..3 {
            let resp = ups.send(addr, get()).await.unwrap();
            assert_eq!(text(resp).await, "ok");
            // Let the connection task see the close.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(ups.held(addr) <= 1);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = Upstreams::default().send(addr, get()).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
    }
}
