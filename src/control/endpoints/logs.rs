//! Service logs: the last lines of every replica, merged by time and
//! prefixed with the replica id when there are several; or a chunked stream
//! that follows them until the client goes away.

use bytes::Bytes;

use api::{ApiError, ApiResponse};

use crate::agent::LogLine;
use crate::control::ControlPlane;

/// Lines shown when `tail` is not given.
pub const DEFAULT_TAIL: usize = 200;

fn format_line(prefix: Option<&str>, line: &LogLine) -> String {
    match prefix {
        Some(p) => format!("[{p}] {}\n", line.text),
        None => format!("{}\n", line.text),
    }
}

impl ControlPlane {
    pub(crate) async fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<ApiResponse, ApiError> {
        let mut ids: Vec<String> = {
            let st = self.inner().state();
            let record = st
                .records
                .get(name)
                .ok_or_else(|| ApiError::service_not_found(name))?;
            let mut list: Vec<_> = st.instances.get(name).cloned().unwrap_or_default();
            // Current replicas first, by slot.
            list.sort_by_key(|i| (i.version != record.version, i.slot, i.id.clone()));
            list.into_iter().map(|i| i.id).collect()
        };
        ids.dedup();
        let several = ids.len() > 1;
        let n = tail.unwrap_or(if follow { 10 } else { DEFAULT_TAIL });
        let mut lines: Vec<(String, String)> = Vec::new();
        for id in &ids {
            let tail = match self.inner().agent_of(id) {
                Ok(agent) => agent.logs_tail(id, n).await,
                Err(e) => Err(e),
            };
            match tail {
                Ok(l) => lines.extend(l.iter().map(|line| {
                    (
                        line.time.clone(),
                        format_line(several.then_some(id.as_str()), line),
                    )
                })),
                Err(e) => tracing::debug!(instance = %id, error = %e, "no log"),
            }
        }
        // RFC 3339 times of one clock sort as text; a stable sort keeps
        // each replica's own order.
        lines.sort_by(|a, b| a.0.cmp(&b.0));
        let start = lines.len().saturating_sub(n);
        let text: String = lines[start..].iter().map(|(_, l)| l.as_str()).collect();
        if !follow {
            return Ok(ApiResponse::Text(text));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
        if !text.is_empty() && tx.send(Bytes::from(text)).await.is_err() {
            return Ok(ApiResponse::Stream(rx));
        }
        for id in ids {
            let mut follower = match self.inner().agent_of(&id) {
                Ok(agent) => agent.logs_follow(&id),
                Err(e) => {
                    tracing::debug!(instance = %id, error = %e, "cannot follow");
                    continue;
                }
            };
            let tx = tx.clone();
            self.inner().spawn(async move {
                let prefix = several.then_some(id);
                loop {
                    // The client may go while the replica is quiet: stop
                    // then, not at the next line (which may never come).
                    let line = tokio::select! {
                        _ = tx.closed() => return,
                        line = follower.recv() => line,
                    };
                    let Some(line) = line else { return };
                    let chunk = Bytes::from(format_line(prefix.as_deref(), &line));
                    if tx.send(chunk).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(ApiResponse::Stream(rx))
    }
}
