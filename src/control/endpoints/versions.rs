//! Moving between versions: promoting a canary, and rolling back to the
//! previous or a numbered version (itself recorded as a new version, so
//! history stays linear). Both roll out health-gated like any deploy.

use api::{ApiError, ApiResponse};

use crate::control::deploy::now_rfc3339;
use crate::control::ControlPlane;
use crate::store::{VersionRecord, MAX_HISTORY};

impl ControlPlane {
    /// Makes the canary the stable version; the old stable replicas are
    /// replaced health-gated, like any rollout.
    pub(crate) async fn promote(&self, name: &str) -> Result<ApiResponse, ApiError> {
        let (_held, mut record) = self.lock_service(name).await?;
        let Some(canary) = record.canary.take() else {
            return Err(ApiError::conflict(format!(
                "service {name} has no canary to promote"
            )));
        };
        let replicas = record.spec.replicas;
        record.spec = canary.spec;
        record.spec.replicas = replicas;
        record.version = canary.version;
        record.image_digest = canary.image_digest;
        record.reverted = None;
        record.changed_at(now_rfc3339());
        let generation = record.generation;
        let version = record.version;
        self.save(record).await?;
        ApiResponse::ok(
            &serde_json::json!({ "name": name, "version": version, "generation": generation }),
        )
    }

    /// Goes back to `version`, or to the version before the current one, as
    /// a new version (so history stays linear), rolled out health-gated.
    pub(crate) async fn rollback(
        &self,
        name: &str,
        version: Option<u64>,
        caller: &str,
    ) -> Result<ApiResponse, ApiError> {
        let (_held, mut record) = self.lock_service(name).await?;
        if version.is_none() && record.canary.is_some() {
            // During a canary, rolling back means dropping the canary.
            let canary = record.canary.take().map(|c| c.version).unwrap_or_default();
            record.changed_at(now_rfc3339());
            let generation = record.generation;
            let stable = record.version;
            self.save(record).await?;
            return ApiResponse::ok(
                &serde_json::json!({ "name": name, "version": stable, "removed_canary": canary, "generation": generation }),
            );
        }
        let target = match version {
            Some(v) => v,
            None => {
                let position = record
                    .history
                    .iter()
                    .position(|v| v.version == record.version);
                match position
                    .and_then(|p| p.checked_sub(1))
                    .and_then(|p| record.history.get(p))
                {
                    Some(previous) => previous.version,
                    None => {
                        return Err(ApiError::conflict(format!(
                            "{name} has no earlier version to roll back to"
                        )))
                    }
                }
            }
        };
        if target == record.version {
            return Err(ApiError::conflict(format!(
                "{name} is at version {target} already"
            )));
        }
        let Some(entry) = record.history.iter().find(|v| v.version == target).cloned() else {
            return Err(ApiError::not_found(format!(
                "version {target} of {name} not found (versions kept: {})",
                record.history.len()
            )));
        };
        let new_version = record
            .history
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(record.version)
            + 1;
        let replicas = record.spec.replicas;
        let now = now_rfc3339();
        record.spec = entry.spec.clone();
        record.spec.replicas = replicas;
        record.version = new_version;
        record.image_digest = entry.image_digest.clone();
        record.stopped = false;
        record.reverted = None;
        record.canary = None;
        record.changed_at(now.clone());
        record.history.push(VersionRecord {
            version: new_version,
            spec: record.spec.clone(),
            image_digest: entry.image_digest,
            deployed_at: now,
            deployed_by: caller.to_string(),
            note: Some(format!("rollback to {target}")),
        });
        if record.history.len() > MAX_HISTORY {
            let excess = record.history.len() - MAX_HISTORY;
            record.history.drain(..excess);
        }
        let generation = record.generation;
        self.save(record).await?;
        ApiResponse::ok(
            &serde_json::json!({ "name": name, "version": new_version, "rolled_back_to": target, "generation": generation }),
        )
    }
}
