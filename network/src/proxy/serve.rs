//! Where the ingress runs: worker threads, each with its own single-threaded
//! runtime and its own keep-alive pool, sharing one routing table. The first
//! worker accepts (HTTP, and HTTPS when it is served) and deals connections
//! round robin; a connection then stays on its worker, so a request goes
//! from the client's socket to the replica's and back with no hand-off
//! between threads. A TLS handshake runs in the connection's own task.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::sync::{mpsc, watch};

use super::ingress::{Ingress, Scheme};

/// A connection dealt to a worker: the socket, the client, and how it came.
type Dealt = (std::net::TcpStream, SocketAddr, Scheme);

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
                serve_connection(&ingress, stream, addr, Scheme::Http);
            }
            _ = &mut shutdown => break,
        }
    }
}

/// Serves HTTP/1.1 (and upgrades) on one accepted connection, in a task of
/// the current runtime, after a TLS handshake for HTTPS; past the ingress's
/// connection cap, closes it.
fn serve_connection(
    ingress: &Ingress,
    stream: tokio::net::TcpStream,
    addr: SocketAddr,
    scheme: Scheme,
) {
    let Some(permit) = ingress.admit() else {
        tracing::debug!(client = %addr, "ingress: connection cap reached; closed");
        return;
    };
    let _ = stream.set_nodelay(true);
    let ingress = ingress.clone();
    tokio::spawn(async move {
        match (scheme, ingress.acceptor().cloned()) {
            (Scheme::Https, Some(acceptor)) => {
                let timeout = ingress.limits().header_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => serve_io(ingress, tls, addr, scheme).await,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %addr, error = %e, "TLS handshake failed")
                    }
                    Err(_) => tracing::debug!(client = %addr, "TLS handshake timed out"),
                }
            }
            (Scheme::Https, None) => {}
            (Scheme::Http, _) => serve_io(ingress, stream, addr, scheme).await,
        }
        drop(permit);
    });
}

/// HTTP/1.1 on `io` until the client goes or idles past the header timeout.
async fn serve_io<I>(ingress: Ingress, io: I, addr: SocketAddr, scheme: Scheme)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let header_timeout = ingress.limits().header_timeout;
    let service = hyper::service::service_fn(move |req| {
        let ingress = ingress.clone();
        async move { Ok::<_, Infallible>(ingress.handle(req, addr, scheme).await) }
    });
    // The header timeout runs from the moment the connection waits for a
    // request's head, so it also closes idle keep-alive connections.
    let conn = hyper::server::conn::http1::Builder::new()
        .writev(false)
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let _ = conn.await;
}

/// Worker 0 accepts (on the HTTP listener, and the HTTPS one when there
/// is one) and deals connections round robin, itself included; the others
/// serve what they are dealt. Dealing, rather than every worker racing on
/// accept, keeps the connections (and so the work) even.
async fn work(
    n: usize,
    listeners: Listeners,
    mut dealt: mpsc::UnboundedReceiver<Dealt>,
    peers: Vec<mpsc::UnboundedSender<Dealt>>,
    ingress: Ingress,
    mut stopped: watch::Receiver<bool>,
) {
    let mut shutdown = std::pin::pin!(async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    });
    let to_tokio =
        |l: Option<std::net::TcpListener>| l.map(tokio::net::TcpListener::from_std).transpose();
    let (http, https) = match (to_tokio(listeners.http), to_tokio(listeners.https)) {
        (Ok(http), Ok(https)) => (http, https),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, worker = n, "ingress worker cannot listen");
            return;
        }
    };
    let mut turn = 0usize;
    loop {
        let (accepted, scheme) = tokio::select! {
            a = async { http.as_ref()?.accept().await.ok() }, if http.is_some() => (a, Scheme::Http),
            a = async { https.as_ref()?.accept().await.ok() }, if https.is_some() => (a, Scheme::Https),
            Some((stream, addr, scheme)) = dealt.recv() => {
                match tokio::net::TcpStream::from_std(stream) {
                    Ok(s) => serve_connection(&ingress, s, addr, scheme),
                    Err(e) => tracing::debug!(error = %e, "ingress: take-over failed"),
                }
                continue;
            }
            _ = &mut shutdown => break,
        };
        let Some((stream, addr)) = accepted else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        turn = (turn + 1) % (peers.len() + 1);
        if turn == 0 {
            serve_connection(&ingress, stream, addr, scheme);
            continue;
        }
        // Hand the socket over as a std one: it joins the peer's runtime there.
        match stream.into_std() {
            Ok(std_stream) => {
                if let Err(mpsc::error::SendError((s, a, scheme))) =
                    peers[turn - 1].send((std_stream, addr, scheme))
                {
                    if let Ok(s) = tokio::net::TcpStream::from_std(s) {
                        serve_connection(&ingress, s, a, scheme);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "ingress: hand-off failed"),
        }
    }
}

/// What worker 0 accepts on.
#[derive(Default)]
struct Listeners {
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
}

/// The ingress on its own worker threads.
pub struct IngressWorkers {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
}

impl IngressWorkers {
    /// Starts `workers` threads (at least one) serving `listener`, each
    /// with its own keep-alive pool, all under `ingress`'s limits.
    pub fn start(
        listener: std::net::TcpListener,
        ingress: Ingress,
        workers: usize,
    ) -> std::io::Result<Self> {
        Self::start_with_https(listener, None, ingress, workers)
    }

    /// The same, also serving HTTPS on `https` (the ingress must have been
    /// made [`Ingress::with_https`]).
    pub fn start_with_https(
        listener: std::net::TcpListener,
        https: Option<std::net::TcpListener>,
        ingress: Ingress,
        workers: usize,
    ) -> std::io::Result<Self> {
        listener.set_nonblocking(true)?;
        if let Some(l) = &https {
            l.set_nonblocking(true)?;
        }
        let local_addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let workers = workers.max(1);
        let (senders, mut receivers): (Vec<_>, Vec<_>) =
            (0..workers).map(|_| mpsc::unbounded_channel()).unzip();
        let mut first = Some(Listeners {
            http: Some(listener),
            https,
        });
        let mut threads = Vec::new();
        for n in 0..workers {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let ingress = ingress.for_worker();
            let stopped = stopped.clone();
            let dealt = receivers.remove(0);
            let (own, peers) = if n == 0 {
                (first.take().unwrap_or_default(), senders[1..].to_vec())
            } else {
                (Listeners::default(), Vec::new())
            };
            let thread = std::thread::Builder::new()
                .name(format!("orca-ingress-{n}"))
                .spawn(move || runtime.block_on(work(n, own, dealt, peers, ingress, stopped)))?;
            threads.push(thread);
        }
        Ok(Self {
            local_addr,
            stop,
            threads,
        })
    }

    /// The address the workers accept on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting and waits for the worker threads to end. Requests in
    /// flight are cut off with their runtime.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let threads = self.threads;
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashMap;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::proxy::ingress::Limits;
    use crate::proxy::{Backend, Routes};
    use std::sync::Arc;

    async fn ask(addr: SocketAddr, host: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn a_silent_replica_gets_a_504_and_an_unknown_host_a_404() {
        // A replica that takes the request and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            loop {
                let (s, _) = silent.accept().await.unwrap();
                held.push(s);
            }
        });
        let routes = Arc::new(Routes::default());
        routes.replace(HashMap::from([(
            "slow.test".to_string(),
            vec![Backend {
                id: "slow.0.aaaaaa".into(),
                addr: silent_addr,
                weight: 1,
                strip_prefix: false,
            }],
        )]));
        let ingress =
            Ingress::new(routes.clone()).with_response_timeout(Duration::from_millis(300));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, ingress, std::future::pending()));

        let started = std::time::Instant::now();
        let answer = ask(addr, "slow.test").await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(
            answer.contains(r#"{"error":"slow.test did not answer within 0.3 s"}"#),
            "{answer}"
        );
        assert!(
            !answer.contains("slow.0.aaaaaa"),
            "a replica id leaked: {answer}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));

        let answer = ask(addr, "nobody.test").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
        assert!(
            answer.contains(r#"{"error":"no service for host \"nobody.test\""}"#),
            "{answer}"
        );

        let traffic = routes.traffic();
        assert_eq!(traffic[0].1.responses(), [0, 0, 0, 0, 1]);
        assert_eq!(traffic[0].1.upstream_errors(), 1);
        assert_eq!(routes.unrouted(), 1);
    }

    #[tokio::test]
    async fn connections_past_the_cap_and_idle_ones_are_closed() {
        let routes = Arc::new(Routes::default());
        let limits = Limits {
            max_connections: 2,
            header_timeout: Duration::from_millis(300),
        };
        let ingress = Ingress::with_limits(routes, limits);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, ingress, std::future::pending()));

        // Two connections held open take the two places.
        let mut held = Vec::new();
        for _ in 0..2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
                .await
                .unwrap();
            let mut buf = [0u8; 12];
            s.read_exact(&mut buf).await.unwrap();
            assert_eq!(&buf, b"HTTP/1.1 404");
            held.push(s);
        }
        // A third is closed without an answer.
        let mut third = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = third
            .write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
            .await;
        let mut buf = Vec::new();
        let n = tokio::time::timeout(Duration::from_secs(2), third.read_to_end(&mut buf))
            .await
            .unwrap()
            .unwrap_or(0);
        assert_eq!(n, 0, "past the cap: {}", String::from_utf8_lossy(&buf));

        // Idle keep-alive connections close after the header timeout,
        // which frees their places.
        for s in &mut held {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut rest)).await;
            assert!(read.is_ok(), "an idle connection stayed open");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let answer = ask(addr, "a.test").await;
        assert!(answer.starts_with("HTTP/1.1 404"), "{answer}");
    }

    #[tokio::test]
    async fn a_request_a_replica_refused_goes_whole_to_another_body_included() {
        // A port nothing listens on, and a replica that echoes the body.
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let echo_addr = echo.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (s, _) = echo.accept().await.unwrap();
                let service = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = http_body_util::BodyExt::collect(req.into_body())
                            .await
                            .unwrap()
                            .to_bytes();
                        Ok::<_, Infallible>(http::Response::new(http_body_util::Full::new(body)))
                    },
                );
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), service),
                );
            }
        });
        let routes = Arc::new(Routes::default());
        let backend = |id: &str, addr| Backend {
            id: id.into(),
            addr,
            weight: 1,
            strip_prefix: false,
        };
        routes.replace(HashMap::from([(
            "post.test".to_string(),
            vec![
                backend("post.0.aaaaaa", closed),
                backend("post.1.bbbbbb", echo_addr),
            ],
        )]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            Ingress::new(routes),
            std::future::pending(),
        ));
        // Enough requests that some pick the closed port first.
        for n in 0..4 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let body = format!("order {n}");
            let req = format!(
                "POST / HTTP/1.1\r\nHost: post.test\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            assert!(out.starts_with("HTTP/1.1 200"), "{out}");
            assert!(out.ends_with(&body), "{out}");
        }
    }
}
