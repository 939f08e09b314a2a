//! Which server an agent asks next: the servers of `--join a:6881,b:6881`
//! in order, each name looked up to all of its addresses (again at each
//! round, so a name that moves is followed), and how long to wait between
//! rounds.

use std::time::Duration;

use super::enroll::Fatal;

/// The wait between two rounds while the servers hold an election
/// (jittered by half either way).
const ELECTION_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// The entries of `--join` (one or several, comma-separated), in order.
pub fn list(join: &str) -> Vec<String> {
    let list: Vec<String> = join
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if list.is_empty() {
        vec![join.to_string()]
    } else {
        list
    }
}

/// Each entry of `join` as `IP:PORT`: a name becomes every address it
/// has; one that does not resolve stays as it is (its dial says why).
pub async fn resolved(join: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in join {
        if entry.parse::<std::net::SocketAddr>().is_ok() {
            out.push(entry.clone());
            continue;
        }
        let found: Vec<String> = match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        if found.is_empty() {
            out.push(entry.clone());
        }
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// Asks each server of `join` in turn with `ask` until one takes it (a
/// server that does not lead turns it away): a [`Fatal`] refusal ends
/// the round at once, else the last failure is the answer.
pub async fn first_taken<T, F, Fut>(join: &str, what: &str, mut ask: F) -> anyhow::Result<T>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let mut last = None;
    for one in list(join) {
        match ask(one.clone()).await {
            Ok(v) => return Ok(v),
            Err(e) if e.downcast_ref::<Fatal>().is_some() => return Err(e),
            Err(e) => {
                tracing::warn!(server = %one, error = %format!("{e:#}"), "{what} not taken here");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("--join names no server")))
}

/// The wait while an election is on.
pub fn election_retry() -> Duration {
    ELECTION_RETRY.mul_f64(0.5 + rand::random::<f64>())
}

/// Jittered exponential backoff: about 0.5 s, 1 s, 2 s ... up to 15 s.
pub fn backoff(failures: u32) -> Duration {
    let base = Duration::from_millis(500) * 2u32.pow(failures.min(5));
    let base = base.min(MAX_BACKOFF);
    base.mul_f64(0.5 + rand::random::<f64>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_becomes_each_of_its_addresses_and_addresses_stay() {
        let join = list("10.0.0.1:6881, localhost:6881,,nowhere.invalid:6881");
        assert_eq!(
            join,
            ["10.0.0.1:6881", "localhost:6881", "nowhere.invalid:6881"]
        );
        let round = resolved(&join).await;
        assert_eq!(round[0], "10.0.0.1:6881");
        // localhost: 127.0.0.1 (and ::1 where the host has it), each once.
        assert!(round.contains(&"127.0.0.1:6881".to_string()), "{round:?}");
        assert!(!round.contains(&"localhost:6881".to_string()), "{round:?}");
        assert_eq!(round.last().unwrap(), "nowhere.invalid:6881");
        let mut unique = round.clone();
        unique.dedup();
        assert_eq!(unique.len(), round.len());
    }

    #[test]
    fn waits_grow_and_stay_bounded() {
        for _ in 0..100 {
            let e = election_retry();
            assert!(e >= Duration::from_millis(250) && e <= Duration::from_millis(750));
            assert!(backoff(10) <= MAX_BACKOFF.mul_f64(1.5));
        }
    }
}
