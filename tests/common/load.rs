//! Requests through a test server's ingress, one after another, with each
//! failure kept: the probe of "no failed request" under a rollout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Requests through the ingress, one after another, until finished.
pub struct Load {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<(HashMap<String, usize>, Vec<String>)>,
}

impl Load {
    pub fn start(port: u16, host: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut seen: HashMap<String, usize> = HashMap::new();
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (status, body) = super::http::get(port, host, "/").await;
                    if status == 200 {
                        *seen.entry(body).or_default() += 1;
                    } else {
                        failures.push(format!("{status} {body}"));
                    }
                }
                (seen, failures)
            }
        });
        Load { stop, task }
    }

    /// Goes on a moment longer, then stops; the bodies seen, after
    /// asserting that no request failed `during` what was under load.
    pub async fn finish(self, during: &str) -> HashMap<String, usize> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        self.stop.store(true, Ordering::Relaxed);
        let (seen, failures) = self.task.await.unwrap();
        assert!(
            failures.is_empty(),
            "failed requests during {during}: {failures:?}"
        );
        seen
    }
}
