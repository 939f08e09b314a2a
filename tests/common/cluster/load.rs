//! Continuous load through one lab node's ingress: a thread of its own
//! enters the node's network namespace (sockets it opens live there, so
//! nothing leaves the lab) and sends requests one after another, each on
//! a new connection, until told to stop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::LabCluster;

/// What the load saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bodies of the 200 answers, counted.
    pub bodies: BTreeMap<String, usize>,
    /// Every other outcome, in order.
    pub failures: Vec<String>,
}

impl Seen {
    pub fn ok(&self) -> usize {
        self.bodies.values().sum()
    }

    /// Asserts that no request failed during `what`, and that both
    /// versions of the test page answered.
    pub fn assert_no_failure_and_both_versions(&self, what: &str) {
        assert!(
            self.failures.is_empty(),
            "failed requests during {what}: {:?} ({} ok)",
            self.failures,
            self.ok()
        );
        assert!(
            self.bodies.contains_key("web v1") && self.bodies.contains_key("web v2"),
            "{self:?}"
        );
    }
}

/// See the module doc.
pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Seen>>,
}

/// Moves the calling thread into the network namespace at `netns`: the
/// sockets it opens from then on live there.
pub fn enter(netns: &std::path::Path) {
    let ns = std::fs::File::open(netns).unwrap();
    nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
}

/// One request to the ingress on 127.0.0.1:8080 of the calling thread's
/// namespace: the status and the body, or what went wrong.
pub fn get(host: &str) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&"127.0.0.1:8080".parse().unwrap(), Duration::from_secs(3))
            .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut answer = Vec::new();
    s.read_to_end(&mut answer)
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no head: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status: {head:?}"))?;
    Ok((status, body.trim().to_string()))
}

impl Load {
    /// Starts the load on node `i`'s ingress for `host`.
    pub fn start(c: &LabCluster, i: usize, host: &str) -> Load {
        let netns = std::path::PathBuf::from(format!("/run/netns/{}", c.lab.nodes[i].netns));
        let stop = Arc::new(AtomicBool::new(false));
        let host = host.to_string();
        let thread = std::thread::spawn({
            let stop = stop.clone();
            move || {
                enter(&netns);
                let mut seen = Seen::default();
                while !stop.load(Ordering::Relaxed) {
                    match get(&host) {
                        Ok((200, body)) => *seen.bodies.entry(body).or_default() += 1,
                        Ok((status, body)) => seen.failures.push(format!("{status} {body}")),
                        Err(e) => seen.failures.push(e),
                    }
                }
                seen
            }
        });
        Load {
            stop,
            thread: Some(thread),
        }
    }

    /// Waits until node `i`'s ingress serves `host` with no failure (a
    /// short load each time).
    pub async fn until_served(c: &LabCluster, i: usize, host: &str, within: Duration) {
        let what = format!("n{i}'s ingress serves {host}");
        super::super::eventually(&what, within, async || {
            let seen = Load::start(c, i, host).finish().await;
            if seen.ok() > 0 && seen.failures.is_empty() {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        })
        .await;
    }

    /// Goes on a moment longer, then stops: what was seen.
    pub async fn finish(mut self) -> Seen {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().unwrap();
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
