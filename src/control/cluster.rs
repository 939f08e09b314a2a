//! The cluster side of the API: nodes (this one, for now), drain and
//! undrain, health, and tokens created at run time.

use api::auth::{token_hash, TokenEntry};
use api::status::{ClusterInfo, NodeResources, NodeStatus, TokenCreated, TokenRequest};
use api::{ApiError, ApiResponse};

use super::worker::wake_all;
use super::ControlPlane;
use crate::agent::ProcessState;
use crate::store::NodeRecord;

impl ControlPlane {
    pub(crate) fn cluster_info(&self) -> ClusterInfo {
        let agent = self.agent();
        let capacity = agent.capacity();
        let st = self.inner().state();
        let mut allocated = NodeResources::default();
        let mut instances = 0;
        for (service, list) in &st.instances {
            let Some(record) = st.records.get(service) else {
                continue;
            };
            let resources = record.spec.resources.clone().unwrap_or_default();
            for i in list
                .iter()
                .filter(|i| matches!(i.state, ProcessState::Running))
            {
                instances += 1;
                allocated.cpu += resources.cpu.unwrap_or(0.0);
                allocated.memory_bytes += resources
                    .memory
                    .as_deref()
                    .and_then(|m| cri::MemoryLimit::parse(m).ok())
                    .map(|m| m.bytes())
                    .unwrap_or(0);
                let _ = i;
            }
        }
        let settings = &self.inner().settings;
        ClusterInfo {
            cluster: settings.cluster_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            nodes: vec![NodeStatus {
                id: agent.node_id().to_string(),
                address: settings.api_address.clone(),
                labels: settings.node_labels.clone(),
                drained: st.drained,
                state: if self.inner().containerd_up() {
                    "ready"
                } else {
                    "down"
                }
                .to_string(),
                resources: NodeResources {
                    cpu: capacity.cpu,
                    memory_bytes: capacity.memory_bytes,
                },
                allocated,
                instances,
            }],
        }
    }

    pub(crate) fn set_drained(&self, node: &str, drained: bool) -> Result<ApiResponse, ApiError> {
        if node != self.agent().node_id() {
            return Err(ApiError::not_found(format!("node not found: {node}")));
        }
        self.inner()
            .repo
            .put_node(&NodeRecord {
                id: node.to_string(),
                drained,
            })
            .map_err(|e| ApiError::internal(format!("could not save: {e}")))?;
        self.inner().state_mut().drained = drained;
        wake_all(self.inner());
        ApiResponse::ok(&serde_json::json!({ "node": node, "drained": drained }))
    }

    pub(crate) fn health(&self) -> serde_json::Value {
        let up = self.inner().containerd_up();
        serde_json::json!({
            "status": if up { "ok" } else { "degraded" },
            "containerd": if up { "up" } else { "down" },
            "node": self.agent().node_id(),
        })
    }

    /// The caller a token belongs to: config tokens, then stored ones.
    pub(crate) fn authenticate(&self, token: &str) -> Option<api::Caller> {
        let stored = self
            .inner()
            .stored_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        api::auth::find_token(
            self.inner().settings.tokens.iter().chain(stored.iter()),
            token,
        )
    }

    pub(crate) fn create_token(&self, request: TokenRequest) -> Result<ApiResponse, ApiError> {
        let mut stored = self
            .inner()
            .stored_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let taken = self
            .inner()
            .settings
            .tokens
            .iter()
            .chain(stored.iter())
            .any(|t| t.name == request.name);
        if taken {
            return Err(ApiError::conflict(format!(
                "token {:?} exists already",
                request.name
            )));
        }
        let value: String = (0..4)
            .map(|_| format!("{:016x}", rand::random::<u64>()))
            .collect();
        let entry = TokenEntry {
            name: request.name.clone(),
            role: request.role,
            hash: token_hash(&value),
            project: request.project.clone(),
        };
        self.inner()
            .repo
            .put_token(&entry)
            .map_err(|e| ApiError::internal(format!("could not save: {e}")))?;
        stored.push(entry);
        ApiResponse::json(
            201,
            &TokenCreated {
                name: request.name,
                role: request.role,
                project: request.project,
                token: value,
            },
        )
    }

    pub(crate) fn list_tokens(&self) -> Result<ApiResponse, ApiError> {
        let stored = self
            .inner()
            .stored_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = |t: &TokenEntry, source: &str| serde_json::json!({ "name": t.name, "role": t.role, "project": t.project, "source": source });
        let list: Vec<serde_json::Value> = self
            .inner()
            .settings
            .tokens
            .iter()
            .map(|t| entry(t, "config"))
            .chain(stored.iter().map(|t| entry(t, "api")))
            .collect();
        ApiResponse::ok(&serde_json::json!({ "tokens": list }))
    }

    pub(crate) fn delete_token(&self, name: &str) -> Result<ApiResponse, ApiError> {
        if self.inner().settings.tokens.iter().any(|t| t.name == name) {
            return Err(ApiError::conflict(format!(
                "token {name:?} comes from cluster.toml; remove it there"
            )));
        }
        let mut stored = self
            .inner()
            .stored_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let existed = self
            .inner()
            .repo
            .delete_token(name)
            .map_err(|e| ApiError::internal(format!("could not save: {e}")))?;
        if !existed {
            return Err(ApiError::not_found(format!("token not found: {name}")));
        }
        stored.retain(|t| t.name != name);
        ApiResponse::ok(&serde_json::json!({ "deleted": name }))
    }
}

impl ControlPlane {
    /// The server's secret box; 503 when it keeps no secrets.
    pub(super) fn secret_box(&self) -> Result<&crate::secrets::SecretBox, ApiError> {
        self.inner()
            .settings
            .secrets
            .as_deref()
            .ok_or_else(|| ApiError::unavailable("this server keeps no secrets"))
    }

    pub(crate) fn put_secret(
        &self,
        project: &str,
        name: &str,
        value: &str,
    ) -> Result<ApiResponse, ApiError> {
        let key = secret_key(project, name);
        let sealed = self.secret_box()?.seal(&key, value);
        self.inner()
            .repo
            .put_secret(&key, &sealed)
            .map_err(|e| ApiError::internal(format!("could not save: {e}")))?;
        // Running replicas keep the value they started with; a redeploy picks the new one.
        ApiResponse::ok(&serde_json::json!({ "project": project, "name": name, "stored": true }))
    }

    pub(crate) fn list_secrets(&self, project: &str) -> Result<ApiResponse, ApiError> {
        let mut names: Vec<String> = self
            .inner()
            .repo
            .secret_names()
            .map_err(|e| ApiError::internal(e.to_string()))?
            .into_iter()
            .filter_map(|key| match key.split_once('/') {
                Some((p, name)) if p == project => Some(name.to_string()),
                // Stored before secrets had projects: the default project's.
                None if project == "default" => Some(key),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        ApiResponse::ok(&serde_json::json!({ "project": project, "secrets": names }))
    }

    pub(crate) fn delete_secret(&self, project: &str, name: &str) -> Result<ApiResponse, ApiError> {
        let repo = &self.inner().repo;
        let mut existed = repo
            .delete_secret(&secret_key(project, name))
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if project == "default" {
            existed |= repo
                .delete_secret(name)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
        if !existed {
            return Err(ApiError::not_found(format!(
                "secret not found: {name} (project {project})"
            )));
        }
        ApiResponse::ok(&serde_json::json!({ "project": project, "deleted": name }))
    }

    /// The sealed values of the secrets `spec` refers to, with the key each
    /// was sealed under, or the first that its project does not have.
    pub(crate) fn sealed_refs(
        &self,
        spec: &api::spec::ServiceSpec,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        let mut refs = super::access::secret_refs(spec);
        refs.sort();
        refs.dedup();
        let mut out = Vec::new();
        for name in refs {
            let sealed = if self.inner().settings.secrets.is_some() {
                sealed_secret(&self.inner().repo, &spec.project, &name)
                    .map_err(|e| ApiError::internal(e.to_string()))?
            } else {
                None
            };
            match sealed {
                Some(s) => out.push(s),
                None => {
                    return Err(ApiError::bad_request(format!(
                        "{}: unknown secret {name:?} in env (project {} has no such secret)",
                        spec.name, spec.project
                    )))
                }
            }
        }
        Ok(out)
    }
}

/// Where a secret of `project` is stored, and the name it is sealed under.
pub(crate) fn secret_key(project: &str, name: &str) -> String {
    format!("{project}/{name}")
}

/// Secret `name` of `project`, sealed, with the key it was sealed under.
/// Secrets stored before they had projects belong to the default project.
pub(crate) fn sealed_secret(
    repo: &crate::store::Repo,
    project: &str,
    name: &str,
) -> Result<Option<(String, Vec<u8>)>, crate::store::StoreError> {
    let key = secret_key(project, name);
    if let Some(sealed) = repo.secret(&key)? {
        return Ok(Some((key, sealed)));
    }
    if project == "default" {
        return Ok(repo.secret(name)?.map(|sealed| (name.to_string(), sealed)));
    }
    Ok(None)
}
