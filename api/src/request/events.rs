//! `GET /api/v1/events`: the event stream, filtered by `service` and
//! `project`, resumed after `since` or the `Last-Event-ID` header (the
//! query wins when both are there).

use http::Method;

use super::params::query_pairs;
use super::{ApiRequest, Call};
use crate::error::ApiError;
use crate::names::checked_name;

/// The filter and resume point of an event stream.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventsQuery {
    pub service: Option<String>,
    pub project: Option<String>,
    /// Events after this id (those still kept).
    pub since: Option<u64>,
}

pub(super) fn parse(call: &Call<'_, '_>) -> Result<ApiRequest, ApiError> {
    call.only(Method::GET)?;
    let raw = call.raw;
    let id = |what: &str, v: &str| {
        v.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!("invalid {what} {v:?}: must be an event id"))
        })
    };
    let mut query = EventsQuery::default();
    if let Some(h) = raw.headers.get("last-event-id") {
        let v = h
            .to_str()
            .map_err(|_| ApiError::bad_request("invalid Last-Event-ID header"))?;
        if !v.is_empty() {
            query.since = Some(id("Last-Event-ID", v)?);
        }
    }
    for (k, v) in query_pairs(raw.query) {
        match k.as_str() {
            "service" if !v.is_empty() => {
                query.service = Some(checked_name("service name", &v)?.to_string())
            }
            "project" if !v.is_empty() => {
                query.project = Some(checked_name("project", &v)?.to_string())
            }
            "since" if !v.is_empty() => query.since = Some(id("since", &v)?),
            _ => {}
        }
    }
    Ok(ApiRequest::Events(query))
}
