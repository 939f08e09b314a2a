//! `/api/v1/webhooks[...]`: registering git webhooks, and the push
//! notifications themselves (kept raw until their signature is checked).

use http::Method;

use super::params::header;
use super::{ApiRequest, Call, GitWebhook};
use crate::error::ApiError;
use crate::names::checked_name;
use crate::status::WebhookRequest;

/// `rest` is the path after `webhooks`.
pub(super) fn parse(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    let raw = call.raw;
    match rest {
        [] => match *call.method() {
            Method::GET => Ok(ApiRequest::ListWebhooks),
            Method::POST => {
                // Never echo a parse error: the body holds a secret.
                let body: WebhookRequest = serde_json::from_slice(&raw.body).map_err(|_| {
                    ApiError::bad_request(
                        "malformed JSON: expected {\"repo\", \"service\", \"branch\", \"secret\"}",
                    )
                })?;
                body.validate()?;
                Ok(ApiRequest::CreateWebhook(body))
            }
            _ => Err(call.wrong_method("GET, POST")),
        },
        ["github"] => {
            call.only(Method::POST)?;
            let h = raw.headers;
            Ok(ApiRequest::GitWebhook(GitWebhook {
                event: header(h, "x-github-event").or_else(|| header(h, "x-gitea-event")),
                github_signature: header(h, "x-hub-signature-256"),
                gitea_signature: header(h, "x-gitea-signature"),
                delivery: header(h, "x-github-delivery").or_else(|| header(h, "x-gitea-delivery")),
                body: raw.body.clone(),
            }))
        }
        [id] => {
            call.only(Method::DELETE)?;
            Ok(ApiRequest::DeleteWebhook {
                id: checked_name("webhook id", id)?.to_string(),
            })
        }
        _ => Err(call.not_found()),
    }
}
