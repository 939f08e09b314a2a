//! `/api/v1/cluster/...`: cluster info, and draining nodes.

use http::Method;

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
                ApiRequest::Drain { node }
            } else {
                ApiRequest::Undrain { node }
            })
        }
        _ => Err(call.not_found()),
    }
}
