//! The newest leader term an agent has seen. A command of an older term
//! comes from a leader that was deposed (it may not know yet): the agent
//! refuses it. Each new term is logged, so that the order in which a node
//! followed its leaders can be read back.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Terms {
    newest: AtomicU64,
}

impl Terms {
    /// True if a command of `term` may run: no newer term has been seen.
    pub fn admit(&self, term: u64) -> bool {
        let before = self.newest.fetch_max(term, Ordering::SeqCst);
        if term > before {
            tracing::info!(term, before, "following the leader of term {term}");
        }
        term >= before
    }

    /// The newest term seen.
    pub fn newest(&self) -> u64 {
        self.newest.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_terms_are_refused_once_a_newer_one_was_seen() {
        let terms = Terms::default();
        assert!(terms.admit(0), "a server without an election");
        assert!(terms.admit(7));
        assert!(terms.admit(7));
        assert!(!terms.admit(6));
        assert!(!terms.admit(0));
        assert!(terms.admit(12));
        assert!(!terms.admit(7));
        assert_eq!(terms.newest(), 12);
    }
}
