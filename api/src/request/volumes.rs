//! `/api/v1/volumes[...]`: named volumes, listed, removed and moved.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Method;
use tokio::sync::mpsc;

use super::params::{bool_param, json, query_pairs};
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

/// A request body handed to the handler as it arrives (a restore's
/// archive), instead of read whole first.
#[derive(Clone, Default)]
pub struct Upload(Arc<Mutex<Option<UploadBody>>>);

/// An upload's parts as they arrive; a broken one ends with an error.
pub type UploadBody = mpsc::Receiver<Result<Bytes, String>>;

impl Upload {
    pub fn new(rx: UploadBody) -> Self {
        Upload(Arc::new(Mutex::new(Some(rx))))
    }

    /// The body, once (none: it was taken, or never given).
    pub fn take(&self) -> Option<UploadBody> {
        self.0.lock().ok()?.take()
    }
}

impl PartialEq for Upload {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Upload")
    }
}

/// Whether `method path` is a route whose body streams to the handler.
pub fn is_upload(method: &Method, path: &str) -> bool {
    let path = path.strip_suffix('/').unwrap_or(path);
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    *method == Method::PUT
        && matches!(
            segments.as_slice(),
            ["api", "v1", "volumes", _, _, "restore"]
        )
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
        [project, name, "backup"] => {
            call.only(Method::GET)?;
            let (project, name) = named(project, name)?;
            let mut live = false;
            for (k, v) in query_pairs(call.raw.query) {
                match k.as_str() {
                    "live" => live = bool_param("live", &v)?,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "unknown query parameter {other:?} (live)"
                        )))
                    }
                }
            }
            Ok(ApiRequest::BackupVolume {
                project,
                name,
                live,
            })
        }
        [project, name, "restore"] => {
            call.only(Method::PUT)?;
            let (project, name) = named(project, name)?;
            Ok(ApiRequest::RestoreVolume {
                project,
                name,
                body: Upload::default(),
            })
        }
        _ => Err(call.not_found()),
    }
}
