//! Failed authentication, limited per client address: past
//! [`MAX_FAILURES_PER_SEC`] failures in one second, an address's requests
//! with a missing or wrong token answer 429 until the second is over. A
//! request with a valid token is never limited (it is checked first).
//! Pure but for its lock: each decision takes `now`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in one second.
pub const MAX_FAILURES_PER_SEC: u32 = 20;
/// Addresses remembered at most; past this, windows that are over are
/// forgotten first.
const MAX_ADDRESSES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(1);

/// See the module doc.
#[derive(Default)]
pub struct FailureLimit {
    windows: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimit {
    /// Counts a failed authentication from `addr` at `now`; true if the
    /// address is past its limit (the answer is then 429).
    pub fn failed(&self, addr: IpAddr, now: Instant) -> bool {
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        if windows.len() >= MAX_ADDRESSES {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
        }
        let (start, count) = windows.entry(addr).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count = count.saturating_add(1);
        *count > MAX_FAILURES_PER_SEC
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_past_its_failures_is_limited_for_the_rest_of_its_second() {
        let limit = FailureLimit::default();
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_SEC {
            assert!(!limit.failed(a, t0));
        }
        assert!(limit.failed(a, t0 + Duration::from_millis(500)));
        // Another address is not touched.
        assert!(!limit.failed(b, t0 + Duration::from_millis(500)));
        // A new second starts afresh.
        assert!(!limit.failed(a, t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn memory_is_bounded() {
        let limit = FailureLimit::default();
        let t0 = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 10) {
            limit.failed(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(2);
        limit.failed("10.9.9.9".parse().unwrap(), later);
        assert!(limit.windows.lock().unwrap().len() <= 2);
    }
}
