//! `/api/v1/volumes`: named volumes listed with their nodes, sizes and
//! users, and deleted only by name and only when no service uses them. And
//! the deploy's checks of a spec's mounts that need the server: tmpfs
//! sizes, and bind mount sources under `[volumes] host_paths`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use api::spec::{Mount, ServiceSpec};
use api::volumes::{VolumeInfo, VolumesResponse};
use api::{ApiError, ApiResponse};

use crate::control::ControlPlane;
use crate::store::VolumeRecord;

/// How long a listing waits for a node's sizes.
const SIZES_WAIT: Duration = Duration::from_secs(5);

/// A spec's mounts as this server can check them: tmpfs sizes parse
/// (400); the devices and bind mount sources are allowed by this node's
/// `[volumes]` (existing paths under `host_paths`), or by another node's
/// as it reported them (`elsewhere`; that node checks again at start);
/// else 403, naming the path and the key to set.
pub(crate) fn check_mounts(
    spec: &ServiceSpec,
    host_paths: &[std::path::PathBuf],
    devices: &[String],
    elsewhere: impl Fn(&ServiceSpec) -> bool,
) -> Result<(), ApiError> {
    for m in spec.mounts() {
        if let Mount::Tmpfs {
            size: Some(size),
            target,
        } = m
        {
            cri::tmpfs_size(&size).map_err(|e| {
                ApiError::bad_request(format!(
                    "{}: invalid volumes entry {target:?}: {e}",
                    spec.name
                ))
            })?;
        }
    }
    match here(spec, host_paths, devices) {
        Err(_) if elsewhere(spec) => Ok(()),
        checked => checked,
    }
}

/// Whether this node allows `spec`'s devices and bind mounts.
fn here(
    spec: &ServiceSpec,
    host_paths: &[std::path::PathBuf],
    devices: &[String],
) -> Result<(), ApiError> {
    let local = crate::agent::access::HostAccess::new(&[], devices);
    if let Some(host) = local.refused_device(spec) {
        return Err(ApiError::forbidden(format!(
            "{}: device {host} is not allowed by the node's [volumes] devices; add it (or a pattern) to devices in the node's config",
            spec.name
        )));
    }
    for m in spec.mounts() {
        if let Mount::Bind { source, .. } = m {
            let path = std::path::Path::new(&source);
            let allowed = path.canonicalize().ok().is_some_and(|real| {
                host_paths.iter().any(|root| {
                    root.canonicalize()
                        .is_ok_and(|root| real == root || real.starts_with(&root))
                })
            });
            if !allowed {
                return Err(ApiError::forbidden(format!(
                    "{}: bind mount source {source} is not an existing path under the node's \
                     [volumes] host_paths; add its directory to host_paths in the node's config",
                    spec.name
                )));
            }
        }
    }
    Ok(())
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(unix)).to_string()
}

impl ControlPlane {
    /// Every volume (of `project`), with its size from its node.
    pub(crate) async fn list_volumes(
        &self,
        project: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        let st = self.inner().state();
        let mut by_key: BTreeMap<String, VolumeRecord> = st
            .volumes
            .values()
            .filter(|v| project.is_none_or(|p| v.project == p))
            .map(|v| (v.key(), v.clone()))
            .collect();
        let mut nodes: BTreeSet<String> = by_key.values().map(|v| v.node.clone()).collect();
        nodes.extend(self.inner().nodes.snapshot().nodes.keys().cloned());
        let asked = futures::future::join_all(nodes.iter().map(|node| async move {
            let agent = self.inner().node_agent(node).ok()?;
            let list = tokio::time::timeout(SIZES_WAIT, agent.volumes())
                .await
                .ok()?
                .ok()?;
            Some((node.clone(), list))
        }))
        .await;
        let mut sizes: BTreeMap<(String, String), u64> = BTreeMap::new();
        for (node, list) in asked.into_iter().flatten() {
            for v in list {
                if project.is_some_and(|p| v.project != p) {
                    continue;
                }
                let key = format!("{}/{}", v.project, v.name);
                // A volume on a node with no record (made before a
                // restore of the store): listed where it is.
                by_key.entry(key).or_insert_with(|| VolumeRecord {
                    project: v.project.clone(),
                    name: v.name.clone(),
                    node: node.clone(),
                    created: v.created,
                });
                sizes.insert(
                    (node.clone(), format!("{}/{}", v.project, v.name)),
                    v.size_bytes,
                );
            }
        }
        let volumes = by_key
            .into_values()
            .map(|v| VolumeInfo {
                size_bytes: sizes.get(&(v.node.clone(), v.key())).copied(),
                created: rfc3339(v.created),
                used_by: crate::volumes::used_by(st.records.values(), &v.project, &v.name),
                project: v.project,
                name: v.name,
                node: v.node,
            })
            .collect();
        ApiResponse::ok(&VolumesResponse { volumes })
    }

    /// Deletes volume `project/name` and its data: 409 while a service
    /// uses it or a replica mounts it.
    pub(crate) async fn delete_volume(
        &self,
        project: &str,
        name: &str,
    ) -> Result<ApiResponse, ApiError> {
        let key = format!("{project}/{name}");
        let st = self.inner().state();
        let users = crate::volumes::used_by(st.records.values(), project, name);
        if !users.is_empty() {
            return Err(ApiError::conflict(format!(
                "volume {key} is used by {}: stop {} first",
                users.join(", "),
                if users.len() == 1 { "it" } else { "them" }
            )));
        }
        let node = match st.volumes.get(&key) {
            Some(v) => v.node.clone(),
            None => return Err(ApiError::not_found(format!("no volume {key}"))),
        };
        let agent = self.inner().node_agent(&node).map_err(|e| {
            ApiError::new(
                503,
                format!("volume {key} is on node {node}, which cannot be reached: {e}"),
            )
        })?;
        match agent.remove_volume(project, name).await {
            Ok(_) => {}
            Err(e) if e.to_string().contains("is mounted by") => {
                return Err(ApiError::conflict(e.to_string()))
            }
            Err(e) if e.is_unavailable() => return Err(ApiError::new(503, e.to_string())),
            Err(e) => return Err(ApiError::internal(format!("deleting volume {key}: {e}"))),
        }
        self.inner()
            .repo
            .delete_volume(&key)
            .map_err(super::store_error)?;
        self.inner().state.set_volume(&key, None).await;
        tracing::info!(volume = %key, node = %node, "volume deleted");
        ApiResponse::ok(&serde_json::json!({ "deleted": key }))
    }
}
