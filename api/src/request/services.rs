//! `/api/v1/services/{name}[/action]`: stop, scale, logs, promote,
//! rollback, versions and exec of one service.

use http::Method;

use super::params::{bool_param, json, query_pairs};
use super::{ApiRequest, Call, MAX_TAIL};
use crate::error::ApiError;
use crate::names::checked_name;
use crate::spec::ScaleRequest;

/// `rest` is the path after `services`.
pub(super) fn parse(call: &Call<'_, '_>, rest: &[&str]) -> Result<ApiRequest, ApiError> {
    let raw = call.raw;
    match rest {
        [name] => {
            call.only(Method::DELETE)?;
            Ok(ApiRequest::StopService {
                name: checked_name("service name", name)?.to_string(),
            })
        }
        [name, action] => {
            // The path's shape and the method first (404, 405), then the name.
            let name = || checked_name("service name", name).map(str::to_string);
            match *action {
                "scale" => {
                    call.only(Method::POST)?;
                    let name = name()?;
                    let body: ScaleRequest = json(&raw.body)?;
                    Ok(ApiRequest::Scale {
                        name,
                        replicas: body.replicas,
                    })
                }
                "logs" => {
                    call.only(Method::GET)?;
                    let name = name()?;
                    let (tail, follow) = logs_query(raw.query)?;
                    Ok(ApiRequest::Logs { name, tail, follow })
                }
                "promote" => {
                    call.only(Method::POST)?;
                    Ok(ApiRequest::Promote { name: name()? })
                }
                "run" => {
                    call.only(Method::POST)?;
                    Ok(ApiRequest::Run { name: name()? })
                }
                "rollback" => {
                    call.only(Method::POST)?;
                    let name = name()?;
                    let version = if raw.body.iter().all(|b| b.is_ascii_whitespace()) {
                        None
                    } else {
                        #[derive(serde::Deserialize)]
                        #[serde(deny_unknown_fields)]
                        struct Body {
                            version: Option<u64>,
                        }
                        json::<Body>(&raw.body)?.version
                    };
                    Ok(ApiRequest::Rollback { name, version })
                }
                "versions" => {
                    call.only(Method::GET)?;
                    Ok(ApiRequest::Versions { name: name()? })
                }
                "exec" if *call.method() == Method::GET => {
                    if !websocket(raw.headers) {
                        return Err(ApiError::bad_request(
                            "GET on exec is the interactive WebSocket: send Upgrade: websocket (POST runs a command and collects its output)",
                        ));
                    }
                    let name = name()?;
                    let request = crate::attach::AttachRequest::from_query(raw.query)?;
                    Ok(ApiRequest::Attach { name, request })
                }
                "exec" => {
                    call.only(Method::POST)?;
                    let name = name()?;
                    let request: crate::status::ExecRequest = json(&raw.body)?;
                    request.check()?;
                    Ok(ApiRequest::Exec { name, request })
                }
                _ => Err(call.not_found()),
            }
        }
        _ => Err(call.not_found()),
    }
}

/// True if the request asks to become a WebSocket (RFC 6455, version 13).
pub fn websocket(headers: &http::HeaderMap) -> bool {
    let has = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    has(http::header::UPGRADE, "websocket")
        && has(http::header::CONNECTION, "upgrade")
        && headers.contains_key(http::header::SEC_WEBSOCKET_KEY)
        && has(http::header::SEC_WEBSOCKET_VERSION, "13")
}

/// `tail` and `follow` of a logs call.
fn logs_query(query: Option<&str>) -> Result<(Option<usize>, bool), ApiError> {
    let (mut tail, mut follow) = (None, false);
    for (k, v) in query_pairs(query) {
        match k.as_str() {
            "tail" => {
                let n: usize = v.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid tail {v:?}: must be a number"))
                })?;
                if n > MAX_TAIL {
                    return Err(ApiError::bad_request(format!(
                        "invalid tail {n}: at most {MAX_TAIL}"
                    )));
                }
                tail = Some(n);
            }
            "follow" => follow = bool_param("follow", &v)?,
            _ => {}
        }
    }
    Ok((tail, follow))
}
