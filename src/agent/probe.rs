//! A replica's probes as the node runs them: an HTTP GET answered 2xx or
//! 3xx, a TCP connect, or a command run in the replica (`exec`, exit 0
//! is healthy), each within its timeout. The checks' schedule and the
//! readiness rule are the control plane's (`control::health`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use super::NodeAgent;

/// A probe with its defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Check {
    /// HTTP path, or `None` for a TCP connect.
    pub path: Option<String>,
    pub port: u16,
    /// A command run in the replica instead (exit 0: healthy).
    #[serde(default)]
    pub exec: Option<Vec<String>>,
    pub interval: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
    pub initial_delay: Duration,
}

/// One probe of replica `id` at `ip` on `agent`, its node: the command
/// when the check has one (killed at the timeout, which fails it), else
/// [`probe`].
pub async fn probe_replica(agent: &dyn NodeAgent, id: &str, ip: Ipv4Addr, check: &Check) -> bool {
    match &check.exec {
        Some(command) => match agent.exec(id, command, check.timeout).await {
            Ok(out) => out.code == 0 && !out.timed_out,
            Err(e) => {
                tracing::debug!(instance = %id, error = %e, "exec probe failed to run");
                false
            }
        },
        None => probe(ip, check).await,
    }
}

/// One probe: an HTTP GET answered 2xx/3xx within the timeout, or a TCP
/// connect.
pub async fn probe(ip: Ipv4Addr, check: &Check) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(SocketAddr::from((ip, check.port)))
            .await
            .ok()?;
        let Some(path) = &check.path else {
            return Some(true);
        };
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\nUser-Agent: orca-health\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 16];
        let n = stream.read(&mut head).await.ok()?;
        let line = std::str::from_utf8(&head[..n]).ok()?;
        let code: u16 = line.split(' ').nth(1)?.parse().ok()?;
        Some((200..400).contains(&code))
    };
    matches!(
        tokio::time::timeout(check.timeout, attempt).await,
        Ok(Some(true))
    )
}
