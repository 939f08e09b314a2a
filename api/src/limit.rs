//! Failed authentication, limited per client address: past
//! [`MAX_FAILURES_PER_SEC`] failures in one second, an address's requests
//! with a missing or wrong token (or a git webhook's bad signature) answer
//! 429 until the second is over. A request with a valid token is never
//! limited (it is checked first). At most [`MAX_ADDRESSES`] addresses are
//! remembered: past that the oldest window is forgotten, in O(1) per
//! failure. Pure but for its lock: each decision takes `now`.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed authentications an address may make in one second.
pub const MAX_FAILURES_PER_SEC: u32 = 20;
/// Addresses remembered at most; past this the oldest window is dropped.
pub const MAX_ADDRESSES: usize = 10_000;
const WINDOW: Duration = Duration::from_secs(1);

#[derive(Default)]
struct Windows {
    /// Each address's window: its start and failures in it.
    by_addr: HashMap<IpAddr, (Instant, u32)>,
    /// Window starts in the order they began (some already replaced by a
    /// later window of the same address: skipped when met).
    order: VecDeque<(IpAddr, Instant)>,
}

impl Windows {
    /// Drops queue entries whose window was replaced, from the front.
    fn skip_replaced(&mut self) {
        while let Some((addr, start)) = self.order.front() {
            match self.by_addr.get(addr) {
                Some((current, _)) if current == start => return,
                _ => {
                    self.order.pop_front();
                }
            }
        }
    }

    /// Forgets the oldest window; false when there is none.
    fn evict_oldest(&mut self) -> bool {
        self.skip_replaced();
        match self.order.pop_front() {
            Some((addr, _)) => self.by_addr.remove(&addr).is_some(),
            None => false,
        }
    }
}

/// See the module doc.
#[derive(Default)]
pub struct FailureLimit {
    windows: Mutex<Windows>,
}

impl FailureLimit {
    /// Counts a failed authentication from `addr` at `now`; true if the
    /// address is past its limit (the answer is then 429).
    pub fn failed(&self, addr: IpAddr, now: Instant) -> bool {
        let mut w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let fresh = match w.by_addr.get(&addr) {
            Some((start, _)) => now.duration_since(*start) >= WINDOW,
            None => {
                while w.by_addr.len() >= MAX_ADDRESSES && w.evict_oldest() {}
                true
            }
        };
        if fresh {
            w.by_addr.insert(addr, (now, 0));
            w.order.push_back((addr, now));
            // Replaced windows are skipped lazily; keep them from piling up.
            if w.order.len() > 2 * MAX_ADDRESSES {
                w.skip_replaced();
                let live = w.order.len();
                if live > 2 * MAX_ADDRESSES {
                    let keep: VecDeque<_> = {
                        let by_addr = &w.by_addr;
                        w.order
                            .iter()
                            .filter(|(a, s)| by_addr.get(a).is_some_and(|(c, _)| c == s))
                            .copied()
                            .collect()
                    };
                    w.order = keep;
                }
            }
        }
        let entry = w.by_addr.entry(addr).or_insert((now, 0));
        entry.1 = entry.1.saturating_add(1);
        entry.1 > MAX_FAILURES_PER_SEC
    }

    /// Whether `addr` is past its limit at `now`, without counting a
    /// failure: checked before work that only a valid signature earns.
    pub fn limited(&self, addr: IpAddr, now: Instant) -> bool {
        let w = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        w.by_addr.get(&addr).is_some_and(|(start, count)| {
            now.duration_since(*start) < WINDOW && *count > MAX_FAILURES_PER_SEC
        })
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
        assert!(!limit.limited(a, t0));
        assert!(limit.failed(a, t0 + Duration::from_millis(500)));
        assert!(limit.limited(a, t0 + Duration::from_millis(600)));
        // Another address is not touched.
        assert!(!limit.failed(b, t0 + Duration::from_millis(500)));
        assert!(!limit.limited(b, t0 + Duration::from_millis(500)));
        // A new second starts afresh.
        assert!(!limit.limited(a, t0 + Duration::from_millis(1001)));
        assert!(!limit.failed(a, t0 + Duration::from_millis(1001)));
    }

    #[test]
    fn memory_is_bounded_within_one_second() {
        let limit = FailureLimit::default();
        let t0 = Instant::now();
        let addr = |i: u32| IpAddr::from((0x0a00_0000 + i).to_be_bytes());
        // More live addresses than the bound, all inside one second.
        let started = Instant::now();
        for i in 0..(3 * MAX_ADDRESSES as u32) {
            limit.failed(addr(i), t0 + Duration::from_micros(u64::from(i)));
        }
        let took = started.elapsed();
        {
            let w = limit.windows.lock().unwrap();
            assert_eq!(w.by_addr.len(), MAX_ADDRESSES);
            assert!(w.order.len() <= 2 * MAX_ADDRESSES + 1, "{}", w.order.len());
            // The oldest went first; the newest are kept.
            assert!(!w.by_addr.contains_key(&addr(0)));
            assert!(w.by_addr.contains_key(&addr(3 * MAX_ADDRESSES as u32 - 1)));
        }
        // O(1) per failure: 30,000 of them are far from quadratic work
        // (the old retain walked 10,000 entries each time).
        assert!(took < Duration::from_secs(2), "{took:?}");
        // A recent address over its limit is still limited.
        let hot = addr(3 * MAX_ADDRESSES as u32 - 1);
        let t1 = t0 + Duration::from_millis(100);
        let mut over = false;
        for _ in 0..=MAX_FAILURES_PER_SEC {
            over = limit.failed(hot, t1);
        }
        assert!(over && limit.limited(hot, t1));
    }

    #[test]
    fn replaced_windows_do_not_pile_up() {
        let limit = FailureLimit::default();
        let t0 = Instant::now();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for s in 0..(5 * MAX_ADDRESSES as u64) {
            limit.failed(a, t0 + Duration::from_secs(s));
        }
        let w = limit.windows.lock().unwrap();
        assert_eq!(w.by_addr.len(), 1);
        assert!(w.order.len() <= 2 * MAX_ADDRESSES + 1, "{}", w.order.len());
    }
}
