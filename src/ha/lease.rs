//! When a leader may act, decided from its lease's renewals alone, with
//! `now` passed in. etcd ends a lease its TTL after it took the last
//! renewal, which is after the renewal was sent: so a leader that counts
//! from the moment it sent an answered renewal, and stops a margin before
//! the TTL, has stopped before any other server can be elected.

use std::time::{Duration, Instant};

/// What the leader knows of its lease.
#[derive(Debug, Clone)]
pub struct Lease {
    ttl: Duration,
    acting_until: Option<Instant>,
}

impl Lease {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            acting_until: None,
        }
    }

    /// Kept free before the lease's end, for the work of stopping and for
    /// clocks that run apart: a quarter of the TTL, at least 500 ms.
    pub fn margin(&self) -> Duration {
        (self.ttl / 4).max(Duration::from_millis(500))
    }

    /// How often to renew: five times per TTL, so that a lost answer or
    /// two leave time for a third.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// A renewal (or the grant) sent at `sent` was answered: the lease has
    /// `left` to run from then, as etcd counts.
    pub fn renewed(&mut self, sent: Instant, left: Duration) {
        let until = sent + left.saturating_sub(self.margin());
        self.acting_until = Some(self.acting_until.map_or(until, |u| u.max(until)));
    }

    /// True while the leader may act.
    pub fn acting(&self, now: Instant) -> bool {
        self.acting_until.is_some_and(|u| now < u)
    }

    /// When it must stop, unless renewed before.
    pub fn deadline(&self) -> Option<Instant> {
        self.acting_until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(5);

    #[test]
    fn acts_only_until_a_margin_before_the_ttl_from_the_last_answered_renewal() {
        let t0 = Instant::now();
        let mut lease = Lease::new(TTL);
        assert!(!lease.acting(t0), "nothing granted yet");
        lease.renewed(t0, TTL);
        assert_eq!(lease.margin(), Duration::from_millis(1250));
        assert!(lease.acting(t0 + Duration::from_millis(3700)));
        assert!(!lease.acting(t0 + Duration::from_millis(3750)));
        // Renewed a second later: counted from when it was sent.
        lease.renewed(t0 + Duration::from_secs(1), TTL);
        assert!(lease.acting(t0 + Duration::from_millis(4700)));
        assert!(!lease.acting(t0 + Duration::from_millis(4750)));
        // A late answer to an older renewal takes nothing back.
        lease.renewed(t0, TTL);
        assert!(lease.acting(t0 + Duration::from_millis(4700)));
        // etcd says less time is left than the TTL: that counts.
        let mut short = Lease::new(TTL);
        short.renewed(t0, Duration::from_secs(2));
        assert!(!short.acting(t0 + Duration::from_millis(750)));
    }

    #[test]
    fn renews_several_times_per_margin_and_keeps_half_a_second_on_short_ttls() {
        let lease = Lease::new(TTL);
        assert!(lease.renew_every() * 2 < TTL - lease.margin());
        let short = Lease::new(Duration::from_secs(2));
        assert_eq!(short.margin(), Duration::from_millis(500));
        assert!(short.renew_every() * 2 < Duration::from_secs(2) - short.margin());
    }
}
