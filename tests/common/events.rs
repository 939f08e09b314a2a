//! A client of `GET /api/v1/events` for tests: opens the stream (with a
//! query and an optional `Last-Event-ID`), and hands out the events as they
//! come, keeping every one seen.

use std::time::{Duration, Instant};

use api::events::{Event, EventKind, SseReader};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::mpsc;

pub struct EventStream {
    /// The answer's Content-Type.
    pub content_type: String,
    rx: mpsc::UnboundedReceiver<(Instant, Event)>,
    /// Every event taken so far, with when it arrived.
    pub seen: Vec<(Instant, Event)>,
    reader: tokio::task::JoinHandle<()>,
}

impl EventStream {
    /// Opens `/api/v1/events?{query}` on `port` with `token`.
    pub async fn open(port: u16, token: &str, query: &str, last_id: Option<u64>) -> EventStream {
        let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
        let mut request =
            hyper::Request::get(format!("http://127.0.0.1:{port}/api/v1/events?{query}"))
                .header("authorization", format!("Bearer {token}"));
        if let Some(id) = last_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = client
            .request(request.body(Empty::new()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let (tx, rx) = mpsc::unbounded_channel();
        let mut body = response.into_body();
        let reader = tokio::spawn(async move {
            let mut sse = SseReader::default();
            while let Some(Ok(frame)) = body.frame().await {
                let Some(data) = frame.data_ref() else {
                    continue;
                };
                for event in sse.push(data).unwrap() {
                    if tx.send((Instant::now(), event)).is_err() {
                        return;
                    }
                }
            }
        });
        EventStream {
            content_type,
            rx,
            seen: Vec::new(),
            reader,
        }
    }

    /// The next event that satisfies `f` (others are kept in `seen`), and
    /// when it arrived; fails after `within`.
    pub async fn until(
        &mut self,
        what: &str,
        within: Duration,
        f: impl Fn(&Event) -> bool,
    ) -> (Instant, Event) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((at, event))) => {
                    self.seen.push((at, event.clone()));
                    if f(&event) {
                        return (at, event);
                    }
                }
                _ => panic!(
                    "no event {what} within {within:?}; seen: {:#?}",
                    self.seen.iter().map(|(_, e)| e).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// The kinds seen so far, in order.
    pub fn kinds(&self) -> Vec<EventKind> {
        self.seen.iter().map(|(_, e)| e.kind).collect()
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}
