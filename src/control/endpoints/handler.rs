//! Phase two of routing: each [`ApiRequest`] to the code that owns it.

use std::time::Duration;

use api::{ApiError, ApiRequest, ApiResponse, Caller, Handler};

use crate::control::ControlPlane;

impl super::scope::Lookup for ControlPlane {
    fn service_project(&self, name: &str) -> Option<String> {
        let st = self.inner().state();
        st.records.get(name).map(|r| r.spec.project.clone())
    }

    fn webhook_project(&self, id: &str) -> Option<String> {
        self.webhook_record(id)
            .ok()
            .flatten()
            .and_then(|hook| hook.project.or_else(|| self.service_project(&hook.service)))
    }
}

#[async_trait::async_trait]
impl Handler for ControlPlane {
    fn authenticate(&self, token: &str) -> Option<Caller> {
        ControlPlane::authenticate(self, token)
    }

    async fn handle(
        &self,
        request: ApiRequest,
        caller: Option<Caller>,
    ) -> Result<ApiResponse, ApiError> {
        let caller_name = caller.as_ref().map(|c| c.name.clone()).unwrap_or_default();
        let request = super::scope::scoped(caller.as_ref(), request, self)?;
        let scope = caller.as_ref().and_then(|c| c.project.as_deref());
        match request {
            ApiRequest::Page => Ok(ApiResponse::Page),
            ApiRequest::Health => ApiResponse::ok(&self.health()),
            ApiRequest::OpenApi => Ok(ApiResponse::Json(200, api::openapi::document_bytes())),
            ApiRequest::Metrics => Ok(ApiResponse::Metrics(
                self.inner().metrics.render(self).await,
            )),
            ApiRequest::Deploy(d) => self.deploy(d, &caller_name, caller.as_ref()).await,
            ApiRequest::Status { project } => self.status_answer(project.as_deref()),
            ApiRequest::Scale { name, replicas } => self.scale(&name, replicas).await,
            ApiRequest::StopService { name } => self.stop_service(&name).await,
            ApiRequest::StopProject { name } => self.stop_project(&name).await,
            ApiRequest::StopAll => self.stop_all().await,
            ApiRequest::Logs { name, tail, follow } => self.logs(&name, tail, follow).await,
            ApiRequest::Versions { name } => self.versions(&name),
            ApiRequest::Exec { name, request } => self.exec(&name, request).await,
            ApiRequest::Attach { name, request } => self.attach(&name, request).await,
            ApiRequest::Events(query) => self.events(query),
            ApiRequest::Promote { name } => self.promote(&name).await,
            ApiRequest::Run { name } => {
                let run =
                    crate::control::jobs::runs::run_now(self.inner(), &name, &caller_name).await?;
                ApiResponse::ok(&serde_json::json!({ "name": name, "run": run }))
            }
            ApiRequest::Rollback { name, version } => {
                self.rollback(&name, version, &caller_name).await
            }
            ApiRequest::ClusterInfo => ApiResponse::ok(&self.cluster_info()),
            ApiRequest::StoreBackup | ApiRequest::StoreFreeze => {
                let freeze = matches!(request, ApiRequest::StoreFreeze);
                let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
                let repo = &self.inner().repo;
                let snapshot = if freeze {
                    repo.freeze(now.to_string())
                } else {
                    repo.snapshot(now.to_string())
                }
                .map_err(super::store_error)?;
                if freeze {
                    tracing::warn!(
                        entries = snapshot.entries.len(),
                        "store frozen for a move to another store: restart this server on it (changes are refused until then)"
                    );
                }
                ApiResponse::ok(&snapshot)
            }
            ApiRequest::Drain {
                node,
                deadline_secs,
                move_volumes,
            } => {
                let answer = self.set_drained(&node, true, deadline_secs).await?;
                match (move_volumes, answer) {
                    (true, ApiResponse::Json(status, bytes)) => {
                        let mut drained: serde_json::Value = serde_json::from_slice(&bytes)
                            .map_err(|e| ApiError::internal(e.to_string()))?;
                        let moves = self.move_volumes_off(&node).await?;
                        for key in ["moving_volumes", "unmovable_volumes"] {
                            drained[key] = moves[key].clone();
                        }
                        ApiResponse::json(status, &drained)
                    }
                    (_, answer) => Ok(answer),
                }
            }
            ApiRequest::Undrain { node } => self.set_drained(&node, false, None).await,
            ApiRequest::RemoveNode { node } => self.remove_node(&node).await,
            ApiRequest::CreateJoinToken(t) => self.create_join_token(t).await,
            ApiRequest::ListJoinTokens => self.list_join_tokens(),
            ApiRequest::DeleteJoinToken { id } => self.delete_join_token(&id).await,
            ApiRequest::ListWebhooks => self.list_webhooks(scope),
            ApiRequest::CreateWebhook(w) => self.create_webhook(w),
            ApiRequest::DeleteWebhook { id } => self.delete_webhook(&id),
            ApiRequest::GitWebhook(delivery) => self.git_webhook(delivery).await,
            ApiRequest::CreateToken(t) => self.create_token(t),
            ApiRequest::ListTokens => self.list_tokens(),
            ApiRequest::DeleteToken { name } => self.delete_token(&name),
            ApiRequest::PutSecret {
                project,
                name,
                value,
            } => self.put_secret(&project, &name, &value),
            ApiRequest::ListSecrets { project } => self.list_secrets(&project),
            ApiRequest::DeleteSecret { project, name } => self.delete_secret(&project, &name),
            ApiRequest::ListVolumes { project } => self.list_volumes(project.as_deref()).await,
            ApiRequest::DeleteVolume { project, name } => self.delete_volume(&project, &name).await,
            ApiRequest::MoveVolume {
                project,
                name,
                node,
            } => self.move_volume(&project, &name, &node).await,
            ApiRequest::BackupVolume {
                project,
                name,
                live,
            } => self.backup_volume(&project, &name, live).await,
            ApiRequest::RestoreVolume {
                project,
                name,
                body,
            } => self.restore_volume(&project, &name, body).await,
        }
    }

    fn access_of(&self, request: &ApiRequest) -> api::auth::Access {
        match request {
            ApiRequest::Metrics if self.inner().settings.metrics_token => {
                api::auth::Access::Role(api::Role::Viewer)
            }
            other => other.access(),
        }
    }

    fn observe(&self, route: &'static str, method: &str, status: u16, elapsed: Duration) {
        self.inner()
            .metrics
            .observe_request(route, method, status, elapsed);
    }
}
