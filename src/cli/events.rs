//! `orca events`: follows the event stream, one line per event (or one
//! JSON object per line), and picks it up again from the last id when the
//! server ends it (a client too slow for the feed is cut off).

use std::ops::ControlFlow;
use std::time::Duration;

use api::client::ApiClient;
use api::events::{Event, SseReader};

use super::out;

/// What to follow.
pub struct Follow {
    pub service: Option<String>,
    pub project: Option<String>,
    pub since: Option<u64>,
}

/// An event as a line for people.
fn line(e: &Event) -> String {
    format!("{}  {:<18}  {}\n", e.time, e.kind.as_str(), e.message)
}

pub async fn run(client: &ApiClient, follow: Follow, json: bool) -> anyhow::Result<()> {
    let mut last = follow.since;
    loop {
        let mut query = Vec::new();
        if let Some(s) = &follow.service {
            query.push(format!("service={s}"));
        }
        if let Some(p) = &follow.project {
            query.push(format!("project={p}"));
        }
        if let Some(id) = last {
            query.push(format!("since={id}"));
        }
        let path = format!("/api/v1/events?{}", query.join("&"));
        let mut reader = SseReader::default();
        let mut failed: Option<anyhow::Error> = None;
        client
            .stream(&path, |chunk| {
                let shown = reader
                    .push(chunk)
                    .map_err(anyhow::Error::msg)
                    .and_then(|events| {
                        for e in events {
                            last = Some(e.id);
                            let text = if json {
                                format!("{}\n", serde_json::to_string(&e)?)
                            } else {
                                line(&e)
                            };
                            out::write(&text)?;
                        }
                        Ok(())
                    });
                match shown {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(e) => {
                        failed = Some(e);
                        ControlFlow::Break(())
                    }
                }
            })
            .await?;
        if let Some(e) = failed {
            return Err(e);
        }
        // The server ended the stream: resume from the last event seen.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
