//! Raw HTTP/1.1 over TCP, for tests that must control exactly what goes on
//! the wire (bad requests, signatures, the Host header through the ingress).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// Sends `request` to `addr` and reads until the server closes, for at most
/// 10 s: (status, body with a chunked encoding undone and ends trimmed).
/// Status 0 when nothing answered: no connection, or no answer in time.
pub async fn exchange(addr: impl ToSocketAddrs, request: &[u8]) -> (u16, String) {
    let Ok(mut s) = TcpStream::connect(addr).await else {
        return (0, "no connection".into());
    };
    if s.write_all(request).await.is_err() {
        return (0, "request not sent".into());
    }
    let mut buf = Vec::new();
    if tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .is_err()
    {
        return (0, "no answer within 10 s".into());
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Keep the data lines, drop the chunk sizes.
        body.lines()
            .filter(|l| !l.is_empty() && u64::from_str_radix(l.trim(), 16).is_err())
            .collect::<Vec<_>>()
            .join("\n")
    } else {
        body.to_string()
    };
    (status, body.trim().to_string())
}

/// GET `path` with `Host: host` on 127.0.0.1:`port`, one request per
/// connection: (status, body) as [`exchange`] gives them.
pub async fn get(port: u16, host: &str, path: &str) -> (u16, String) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    exchange(("127.0.0.1", port), request.as_bytes()).await
}

/// The head (status line and headers, lowercased) of the answer to
/// `GET path` with `Host: host` on 127.0.0.1:`port`.
pub async fn head(port: u16, host: &str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)).await else {
        return "no connection".into();
    };
    if s.write_all(request.as_bytes()).await.is_err() {
        return "request not sent".into();
    }
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_string()
}
