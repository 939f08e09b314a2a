//! `/api/v1/volumes[...]`: named volumes, listed, removed and moved.

use http::Method;

use super::params::{json, query_pairs};
use super::{ApiRequest, Call};
use crate::error::ApiError;
use crate::names::checked_name;

/// `POST /api/v1/volumes/{project}/{name}/move` body.
#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct MoveVolumeRequest {
    /// The node to move it to.
    pub node: String,
}

/// `rest` is the path after `volumes`.
pub(super) fn parse(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    let named = |project: &str, name: &str| -> Result<(String, String), ApiError> {
        Ok((
            checked_name("project", project)?.to_string(),
            checked_name("volume", name)?.to_string(),
        ))
    };
    match rest {
        [] => {
            call.only(Method::GET)?;
            let mut project = None;
            for (k, v) in query_pairs(call.raw.query) {
                match k.as_str() {
                    "project" if !v.is_empty() => {
                        project = Some(checked_name("project", &v)?.to_string())
                    }
                    "project" => {}
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown query parameter {other:?} (project)"
                        )))
                    }
                }
            }
            Ok(ApiRequest::ListVolumes { project })
        }
        [project, name] => {
            call.only(Method::DELETE)?;
            let (project, name) = named(project, name)?;
            Ok(ApiRequest::DeleteVolume { project, name })
        }
        [project, name, "move"] => {
            call.only(Method::POST)?;
            let (project, name) = named(project, name)?;
            let body: MoveVolumeRequest = json(&call.raw.body)?;
            checked_name("node", &body.node)?;
            Ok(ApiRequest::MoveVolume {
                project,
                name,
                node: body.node,
            })
        }
        _ => Err(call.not_found()),
    }
}
