//! What a webhook remembers between deliveries, in its stored record: the
//! delivery ids it handled (each kept [`KEEP_DELIVERIES_FOR`], at most
//! [`MAX_DELIVERIES`]), so a copy of one delivery acts once however late
//! it comes, and the commits it redeployed (the last [`KEEP_COMMITS`]), so
//! a push of a commit already deployed, replayed with a fresh delivery id,
//! does nothing. Pure: each change takes `now` (Unix seconds).

use serde::{Deserialize, Serialize};

/// How long a delivery id is remembered.
pub const KEEP_DELIVERIES_FOR: u64 = 7 * 24 * 3600;
/// Most delivery ids kept per webhook, however recent.
pub const MAX_DELIVERIES: usize = 10_000;
/// Commits remembered per webhook.
pub const KEEP_COMMITS: usize = 100;

/// See the module doc.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Delivery ids and when they came (Unix seconds), oldest first.
    #[serde(default)]
    pub deliveries: Vec<(String, u64)>,
    /// Commits a push redeployed, oldest first.
    #[serde(default)]
    pub commits: Vec<String>,
}

impl Seen {
    /// Whether delivery `id` was handled already.
    pub fn has_delivery(&self, id: &str) -> bool {
        self.deliveries.iter().any(|(d, _)| d == id)
    }

    /// Records delivery `id` at `now`, forgetting those past their time
    /// and the oldest past the bound.
    pub fn add_delivery(&mut self, id: &str, now: u64) {
        self.deliveries
            .retain(|(_, at)| now.saturating_sub(*at) < KEEP_DELIVERIES_FOR);
        if !self.has_delivery(id) {
            self.deliveries.push((id.to_string(), now));
        }
        let excess = self.deliveries.len().saturating_sub(MAX_DELIVERIES);
        self.deliveries.drain(..excess);
    }

    /// Whether a push of `commit` was redeployed already.
    pub fn has_commit(&self, commit: &str) -> bool {
        self.commits.iter().any(|c| c == commit)
    }

    pub fn add_commit(&mut self, commit: &str) {
        if !self.has_commit(commit) {
            self.commits.push(commit.to_string());
        }
        let excess = self.commits.len().saturating_sub(KEEP_COMMITS);
        self.commits.drain(..excess);
    }

    /// Forgets `commit` (its redeploy failed: a later push of it may try
    /// again).
    pub fn remove_commit(&mut self, commit: &str) {
        self.commits.retain(|c| c != commit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_are_kept_for_a_time_and_bounded() {
        let mut seen = Seen::default();
        seen.add_delivery("d-1", 1_000);
        seen.add_delivery("d-1", 1_001);
        assert_eq!(seen.deliveries.len(), 1);
        assert!(seen.has_delivery("d-1") && !seen.has_delivery("d-2"));
        // Far more than the 200 once kept, all remembered within the time.
        for i in 0..5_000 {
            seen.add_delivery(&format!("x-{i}"), 2_000);
        }
        assert!(seen.has_delivery("d-1") && seen.has_delivery("x-0"));
        // Past its time a delivery is forgotten.
        seen.add_delivery("late", 1_000 + KEEP_DELIVERIES_FOR);
        assert!(!seen.has_delivery("d-1") && seen.has_delivery("x-0"));
        // And the count is bounded, the oldest going first.
        for i in 0..MAX_DELIVERIES {
            seen.add_delivery(&format!("y-{i}"), 3_000);
        }
        assert_eq!(seen.deliveries.len(), MAX_DELIVERIES);
        assert!(!seen.has_delivery("x-0") && seen.has_delivery("y-0"));
    }

    #[test]
    fn commits_are_remembered_until_a_failure_forgets_them() {
        let mut seen = Seen::default();
        seen.add_commit("abc");
        assert!(seen.has_commit("abc") && !seen.has_commit("def"));
        seen.remove_commit("abc");
        assert!(!seen.has_commit("abc"));
        for i in 0..(KEEP_COMMITS + 5) {
            seen.add_commit(&format!("c{i}"));
        }
        assert_eq!(seen.commits.len(), KEEP_COMMITS);
        assert!(!seen.has_commit("c0") && seen.has_commit(&format!("c{}", KEEP_COMMITS + 4)));
    }
}
