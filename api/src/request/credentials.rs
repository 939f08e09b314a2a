//! `/api/v1/tokens[...]` and `/api/v1/secrets[...]`: the admin's
//! credentials. Parse errors never quote a body here: it may hold a value.

use http::Method;

use super::params::{checked_secret_name, json};
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

/// `rest` is the path after `secrets`.
pub(super) fn secrets(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    match rest {
        [] => {
            call.only(Method::GET)?;
            Ok(ApiRequest::ListSecrets)
        }
        [name] => {
            let name = checked_secret_name(name)?.to_string();
            match *call.method() {
                Method::PUT => {
                    #[derive(serde::Deserialize)]
                    #[serde(deny_unknown_fields)]
                    struct Body {
                        value: String,
                    }
                    // The parser's message could quote the value: say less.
                    let body: Body = serde_json::from_slice(&call.raw.body).map_err(|_| {
                        ApiError::bad_request("malformed JSON: expected {\"value\": \"...\"}")
                    })?;
                    Ok(ApiRequest::PutSecret {
                        name,
                        value: body.value,
                    })
                }
                Method::DELETE => Ok(ApiRequest::DeleteSecret { name }),
                _ => Err(call.wrong_method("PUT, DELETE")),
            }
        }
        _ => Err(call.not_found()),
    }
}
