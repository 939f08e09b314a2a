//! `/api/v1/tokens[...]` and `/api/v1/secrets[...]`: the admin's
//! credentials. Parse errors never quote a body here: it may hold a value.

use http::Method;

use super::params::{checked_secret_name, json, query_pairs};
use super::{ApiRequest, Call};
use crate::error::ApiError;
use crate::names::checked_name;
use crate::status::TokenRequest;

/// `rest` is the path after `tokens`.
pub(super) fn tokens(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    match rest {
        [] => match *call.method() {
            Method::GET => Ok(ApiRequest::ListTokens),
            Method::POST => {
                let body: TokenRequest = json(&call.raw.body)?;
                checked_name("token name", &body.name)?;
                if let Some(p) = &body.project {
                    checked_name("project", p)?;
                }
                Ok(ApiRequest::CreateToken(body))
            }
            _ => Err(call.wrong_method("GET, POST")),
        },
        [name] => {
            call.only(Method::DELETE)?;
            Ok(ApiRequest::DeleteToken {
                name: checked_name("token name", name)?.to_string(),
            })
        }
        _ => Err(call.not_found()),
    }
}

/// The project a secrets call names (`?project=`, default "default").
fn secret_project(call: &Call<'_, '_>) -> Result<String, ApiError> {
    let mut project = "default".to_string();
    for (k, v) in query_pairs(call.raw.query) {
        if k == "project" {
            project = checked_name("project", &v)?.to_string();
        }
    }
    Ok(project)
}

/// `rest` is the path after `secrets`. Secrets belong to a project
/// (`?project=`, or `project` in a PUT body; default "default").
pub(super) fn secrets(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    match rest {
        [] => {
            call.only(Method::GET)?;
            Ok(ApiRequest::ListSecrets {
                project: secret_project(call)?,
            })
        }
        [name] => {
            // The method first (405), then the name (400).
            if ![Method::PUT, Method::DELETE].contains(call.method()) {
                return Err(call.wrong_method("PUT, DELETE"));
            }
            let name = checked_secret_name(name)?.to_string();
            match *call.method() {
                Method::PUT => {
                    #[derive(serde::Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Body {
                        value: String,
                        #[serde(default)]
                        project: Option<String>,
                    }
                    // The parser's message could quote the value: say less.
                    let body: Body = serde_json::from_slice(&call.raw.body).map_err(|_| {
                        ApiError::bad_request(
                            "malformed JSON: expected {\"value\": \"...\", \"project\": \"...\"}",
                        )
                    })?;
                    let project = match body.project {
                        Some(p) => checked_name("project", &p)?.to_string(),
                        None => secret_project(call)?,
                    };
                    Ok(ApiRequest::PutSecret {
                        project,
                        name,
                        value: body.value,
                    })
                }
                Method::DELETE => Ok(ApiRequest::DeleteSecret {
                    project: secret_project(call)?,
                    name,
                }),
                _ => Err(call.wrong_method("PUT, DELETE")),
            }
        }
        _ => Err(call.not_found()),
    }
}
