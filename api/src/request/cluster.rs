//! `/api/v1/cluster/...`: cluster info, draining and removing nodes, and
//! join tokens.

use http::Method;

use super::params::{json, query_pairs};
use super::{ApiRequest, Call};
use crate::error::ApiError;
use crate::names::checked_name;

/// `rest` is the path after `cluster`.
pub(super) fn parse(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    match rest {
        ["info"] => {
            call.only(Method::GET)?;
            Ok(ApiRequest::ClusterInfo)
        }
        ["nodes", node, action @ ("drain" | "undrain")] => {
            call.only(Method::POST)?;
            let node = checked_name("node id", node)?.to_string();
            Ok(if *action == "drain" {
                let (deadline_secs, move_volumes) = drain_query(call.raw.query)?;
                ApiRequest::Drain {
                    node,
                    deadline_secs,
                    move_volumes,
                }
            } else {
                ApiRequest::Undrain { node }
            })
        }
        ["nodes", node] => {
            call.only(Method::DELETE)?;
            let node = checked_name("node id", node)?.to_string();
            Ok(ApiRequest::RemoveNode { node })
        }
        ["join-tokens"] => match *call.method() {
            Method::POST => Ok(ApiRequest::CreateJoinToken(json(&call.raw.body)?)),
            Method::GET => Ok(ApiRequest::ListJoinTokens),
            _ => Err(call.wrong_method("GET, POST")),
        },
        ["join-tokens", id] => {
            call.only(Method::DELETE)?;
            let id = checked_name("join token id", id)?.to_string();
            Ok(ApiRequest::DeleteJoinToken { id })
        }
        _ => Err(call.not_found()),
    }
}

/// `?deadline_secs=N` of a drain (at least one second, at most a week)
/// and `?move_volumes=true`.
fn drain_query(query: Option<&str>) -> Result<(Option<u64>, bool), ApiError> {
    let mut out = None;
    let mut move_volumes = false;
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "move_volumes" => move_volumes = super::params::bool_param("move_volumes", &v)?,
            "deadline_secs" => {
                let secs: u64 = v.parse().map_err(|_| {
                    ApiError::bad_request(format!("deadline_secs {v:?} is not a number of seconds"))
                })?;
                if !(1..=7 * 86_400).contains(&secs) {
                    return Err(ApiError::bad_request(
                        "deadline_secs must be between 1 and 604800",
                    ));
                }
                out = Some(secs);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter {other:?} (deadline_secs, move_volumes)"
                )))
            }
        }
    }
    Ok((out, move_volumes))
}
