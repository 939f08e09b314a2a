//! The cluster side of the API: nodes, drain and undrain, node removal,
//! health, and tokens created at run time.

use api::auth::{token_hash, TokenEntry};
use std::collections::HashMap;

use api::status::{
    ClusterInfo, DrainProgress, NodeResources, NodeStatus, TokenCreated, TokenRequest,
};
use api::{ApiError, ApiResponse};

use crate::agent::ProcessState;
use crate::control::worker::wake_all;
use crate::control::ControlPlane;
use crate::nodes::NodeError;

/// A drain stops what has not moved after this long, unless told otherwise.
pub const DEFAULT_DRAIN_DEADLINE_SECS: u64 = 3600;

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

fn node_error(e: NodeError) -> ApiError {
    match e {
        NodeError::NotFound(_) => ApiError::not_found(e.to_string()),
        NodeError::Conflict(_) | NodeError::Refused(_) | NodeError::NotMember(_) => {
            ApiError::conflict(e.to_string())
        }
        NodeError::Full(_) => ApiError::new(
            507,
            format!("{e}; nothing was changed: free some space and try again"),
        ),
        NodeError::Store(_) | NodeError::Stopped => ApiError::internal(e.to_string()),
    }
}

impl ControlPlane {
    pub(crate) fn cluster_info(&self) -> ClusterInfo {
        let table = self.inner().nodes.snapshot();
        let st = self.inner().state();
        let loads = st.node_loads();
        let mut instances: HashMap<&str, u32> = HashMap::new();
        for i in st.instances.values().flatten() {
            if matches!(i.state, ProcessState::Running) {
                *instances.entry(i.node.as_str()).or_default() += 1;
            }
        }
        let on_node = |id: &str| {
            st.instances
                .values()
                .flatten()
                .filter(|i| i.node == id)
                .count() as u32
        };
        let reserved = |id: &str| {
            loads
                .get(id)
                .map(|l| NodeResources {
                    cpu: l.reserved.cpu,
                    memory_bytes: l.reserved.memory_bytes,
                })
                .unwrap_or_default()
        };
        let settings = &self.inner().settings;
        let published = self.inner().published.borrow().published.clone();
        let nodes = table
            .nodes
            .values()
            .map(|n| {
                let remaining = on_node(n.id());
                NodeStatus {
                    id: n.id().to_string(),
                    address: n.record.address.clone(),
                    labels: n.record.labels.clone(),
                    drained: n.record.drained,
                    drain: (n.record.drained && remaining > 0).then(|| DrainProgress {
                        deadline: n.record.drain_deadline.map(rfc3339),
                        remaining,
                    }),
                    state: n.state.as_str().to_string(),
                    containerd: if (n.local && self.inner().containerd_up())
                        || (!n.local && n.containerd_up)
                    {
                        "up"
                    } else {
                        "down"
                    }
                    .to_string(),
                    resources: NodeResources {
                        cpu: n.record.cpu,
                        memory_bytes: n.record.memory_bytes,
                    },
                    reserved: reserved(n.id()),
                    allocated: reserved(n.id()),
                    cpu_limits: loads.get(n.id()).map_or(0.0, |l| l.cpu_limits),
                    instances: instances.get(n.id()).copied().unwrap_or(0),
                    last_heartbeat: n.last_seen(),
                    version: n.record.version.clone(),
                    server: n.local,
                    ports: node_ports(&published.ports, n.id(), n.ready()),
                    subnet: n.record.subnet_index.and_then(|i| {
                        network::Ipv4Net::parse(&settings.subnet)
                            .and_then(|net| net.node_slice(i))
                            .ok()
                            .map(|net| net.to_string())
                    }),
                }
            })
            .collect();
        ClusterInfo {
            cluster: settings.cluster_name.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            nodes,
            servers: settings
                .servers
                .as_ref()
                .map(|s| s.borrow().clone())
                .unwrap_or_default(),
        }
    }

    /// Drains (replicas move off, one service at a time, until the
    /// deadline) or undrains a node.
    pub(crate) async fn set_drained(
        &self,
        node: &str,
        drained: bool,
        deadline_secs: Option<u64>,
    ) -> Result<ApiResponse, ApiError> {
        let deadline = drained.then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            now + deadline_secs.unwrap_or(DEFAULT_DRAIN_DEADLINE_SECS)
        });
        self.inner()
            .nodes
            .set_drained(node, drained, deadline)
            .await
            .map_err(node_error)?;
        wake_all(self.inner());
        ApiResponse::ok(&serde_json::json!({
            "node": node,
            "drained": drained,
            "deadline": deadline.map(rfc3339),
        }))
    }

    /// Removes a node: its certificate no longer connects, and its
    /// replicas are placed elsewhere.
    pub(crate) async fn remove_node(&self, node: &str) -> Result<ApiResponse, ApiError> {
        // One change in the registry's owner: the node goes and the agent
        // connected at that moment is told to, with no gap for a reconnect.
        let removed = self.inner().nodes.remove(node).await.map_err(node_error)?;
        wake_all(self.inner());
        ApiResponse::ok(&serde_json::json!({
            "node": node,
            "removed": true,
            "instances": removed.inventory.len(),
        }))
    }

    pub(crate) fn health(&self) -> serde_json::Value {
        let up = self.inner().containerd_up();
        serde_json::json!({
            "status": if up { "ok" } else { "degraded" },
            "containerd": if up { "up" } else { "down" },
            "node": self.inner().local_node(),
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
            .map_err(super::store_error)?;
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
            .map_err(super::store_error)?;
        if !existed {
            return Err(ApiError::not_found(format!("token not found: {name}")));
        }
        stored.retain(|t| t.name != name);
        ApiResponse::ok(&serde_json::json!({ "deleted": name }))
    }
}

impl ControlPlane {
    /// The server's secret box; 503 when it keeps no secrets.
    pub(crate) fn secret_box(&self) -> Result<&crate::secrets::SecretBox, ApiError> {
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
            .map_err(super::store_error)?;
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
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        ApiResponse::ok(&serde_json::json!({ "project": project, "secrets": names }))
    }

    pub(crate) fn delete_secret(&self, project: &str, name: &str) -> Result<ApiResponse, ApiError> {
        let repo = &self.inner().repo;
        let existed = repo
            .delete_secret(&secret_key(project, name))
            .map_err(super::store_error)?;
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
        let mut out = Vec::new();
        for name in spec.secret_refs() {
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
                    "{}: unknown secret {name:?} in env or files (project {} has no such secret)",
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

/// Secret `name` of `project`, sealed, with the key it was sealed under:
/// exactly `project/name`, never another key. `name` must be a plain
/// secret name (so it cannot climb into another project's keys).
pub(crate) fn sealed_secret(
    repo: &crate::store::Repo,
    project: &str,
    name: &str,
) -> Result<Option<(String, Vec<u8>)>, crate::store::StoreError> {
    if !api::spec::is_secret_name(name) {
        return Ok(None);
    }
    let key = secret_key(project, name);
    Ok(repo.secret(&key)?.map(|sealed| (key, sealed)))
}

/// Moves secrets stored before secrets had projects (a plain key) to the
/// default project's (`default/NAME`), sealed again under their new key,
/// so that lookups never fall back to another key. One whose new key is
/// taken already is left where it is, unused, and logged. Returns how many
/// moved.
pub(crate) fn migrate_legacy_secrets(
    repo: &crate::store::Repo,
    secrets: &crate::secrets::SecretBox,
) -> Result<usize, crate::store::StoreError> {
    let mut moved = 0;
    for key in repo.secret_names()? {
        if key.contains('/') {
            continue;
        }
        let new_key = secret_key("default", &key);
        let Some(sealed) = repo.secret(&key)? else {
            continue;
        };
        if repo.secret(&new_key)?.is_some() {
            tracing::warn!(secret = %key, "a secret without a project is shadowed by default/{key}; left unused");
            continue;
        }
        let Ok(value) = secrets.open_value(&key, &sealed) else {
            tracing::warn!(secret = %key, "a secret without a project does not open; left unused");
            continue;
        };
        repo.put_secret(&new_key, &secrets.seal(&new_key, &value))?;
        repo.delete_secret(&key)?;
        moved += 1;
    }
    Ok(moved)
}

/// The published ports node `id` accepts on (see [`NodePort`]).
fn node_ports(
    rules: &[network::ports::PortRule],
    id: &str,
    ready: bool,
) -> Vec<api::status::NodePort> {
    rules
        .iter()
        .filter(|r| ready && r.backends.iter().any(|(_, n)| r.mesh || n == id))
        .map(|r| api::status::NodePort {
            port: format!("{}/{}", r.published, r.protocol.as_str()),
            service: r.service.clone(),
            mode: if r.mesh { "mesh" } else { "host" }.to_string(),
        })
        .collect()
}
