//! Join tokens on the API side: created (admin) with a time to live,
//! listed without their secrets, revoked by deletion, and checked when an
//! agent joins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use api::status::{JoinTokenCreated, JoinTokenInfo, JoinTokenRequest};
use api::{ApiError, ApiResponse};
use subtle::ConstantTimeEq;

use crate::cluster::token::JoinToken;
use crate::control::ControlPlane;
use crate::store::JoinTokenRecord;

/// A token lives an hour unless asked otherwise, and at most 30 days.
pub const DEFAULT_TTL_SECS: u64 = 3600;
pub const MAX_TTL_SECS: u64 = 30 * 86_400;

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

use super::store_error;

impl ControlPlane {
    pub(crate) async fn create_join_token(
        &self,
        request: JoinTokenRequest,
    ) -> Result<ApiResponse, ApiError> {
        let ttl = request.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=MAX_TTL_SECS).contains(&ttl) {
            return Err(ApiError::bad_request(format!(
                "ttl_secs must be between 1 and {MAX_TTL_SECS}"
            )));
        }
        let Some(ca) = self.inner().settings.ca_sha256.clone() else {
            return Err(ApiError::unavailable(
                "this server has no cluster CA: agents cannot join it",
            ));
        };
        let token = JoinToken::generate(&ca);
        let record = JoinTokenRecord {
            id: token.id.clone(),
            secret_sha256: token.secret_sha256(),
            expires_at: unix_now() + ttl,
            server: request.server,
        };
        let repo = self.inner().repo.clone();
        let saved = record.clone();
        tokio::task::spawn_blocking(move || repo.put_join_token(&saved))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(store_error)?;
        ApiResponse::created(&JoinTokenCreated {
            id: record.id,
            token: token.to_string(),
            expires_at: rfc3339(record.expires_at),
        })
    }

    pub(crate) fn list_join_tokens(&self) -> Result<ApiResponse, ApiError> {
        let now = unix_now();
        let mut list: Vec<JoinTokenInfo> = self
            .inner()
            .repo
            .join_tokens()
            .map_err(store_error)?
            .into_iter()
            .map(|t| JoinTokenInfo {
                expired: t.expires_at <= now,
                expires_at: rfc3339(t.expires_at),
                id: t.id,
                server: t.server,
            })
            .collect();
        list.sort_by(|a, b| a.id.cmp(&b.id));
        ApiResponse::ok(&serde_json::json!({ "tokens": list }))
    }

    pub(crate) async fn delete_join_token(&self, id: &str) -> Result<ApiResponse, ApiError> {
        let repo = self.inner().repo.clone();
        let key = id.to_string();
        let existed = tokio::task::spawn_blocking(move || repo.delete_join_token(&key))
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?
            .map_err(store_error)?;
        if !existed {
            return Err(ApiError::not_found(format!("join token not found: {id}")));
        }
        ApiResponse::ok(&serde_json::json!({ "id": id, "revoked": true }))
    }

    /// Checks a join token an agent sent. The error is what both sides see.
    /// Checks a join token of an agent (`server` false) or of a server.
    pub fn redeem_join_token(&self, text: &str, server: bool) -> Result<(), String> {
        let token = JoinToken::parse(text).map_err(|e| e.to_string())?;
        let refused = || "join token refused: unknown, revoked or wrong".to_string();
        let record = self
            .inner()
            .repo
            .join_token(&token.id)
            .map_err(|e| format!("cannot read join tokens: {e}"))?
            .ok_or_else(refused)?;
        let same: bool = record
            .secret_sha256
            .as_bytes()
            .ct_eq(token.secret_sha256().as_bytes())
            .into();
        if !same {
            return Err(refused());
        }
        if record.server != server {
            return Err(if server {
                "join token refused: it is an agent's; make a server's with `orca cluster join-token --server`".into()
            } else {
                "join token refused: it is a server's (`orca server --join-server`), not an agent's"
                    .into()
            });
        }
        if record.expires_at <= unix_now() {
            return Err(format!(
                "join token {} expired at {}: create a new one with `orca cluster join-token`",
                record.id,
                rfc3339(record.expires_at)
            ));
        }
        Ok(())
    }
}
