//! Signed git push deliveries, for the webhook tests: GitHub's headers
//! and HMAC, and the raw POST of one delivery.

#![allow(dead_code)]

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

pub const SECRET: &str = "hook-secret-1234";

pub fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// GitHub's headers for a signed `event` delivery of `body`.
pub fn github(event: &str, body: &str, delivery: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers = vec![
        ("X-GitHub-Event", event.to_string()),
        ("X-Hub-Signature-256", format!("sha256={}", sign(body))),
    ];
    headers.extend(delivery.map(|d| ("X-GitHub-Delivery", d.to_string())));
    headers
}

/// What orca did with the delivery, from its answer.
pub fn result_of(answer: &Value) -> &str {
    answer["results"][0]["result"].as_str().unwrap_or_default()
}

/// POSTs a delivery; (status, body).
pub async fn deliver(addr: &str, headers: &[(&str, String)], body: &str) -> (u16, Value) {
    let mut req = format!("POST /api/v1/webhooks/github HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    let (status, body) = super::http::exchange(addr, req.as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}
