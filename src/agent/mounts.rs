//! A replica's mounts on the local node: named volumes made on first use
//! and filled from the image (the copy-up) between the container's
//! creation and its start, bind mounts checked against the node's
//! `[volumes] host_paths`, tmpfs, and the volume lease checked against
//! the replicas already running.

use cri::{BindMount, TmpfsMount};

use super::local::LocalAgent;
use super::volumes::{conflict, label_of, Holder, MountSpec, VOLUMES_LABEL};
use super::{AgentError, InstanceSpec};

/// What a start mounts, and which new volumes to fill before it runs.
#[derive(Debug, Default)]
pub(super) struct Mounts {
    pub binds: Vec<BindMount>,
    pub tmpfs: Vec<TmpfsMount>,
    /// (volume name, target in the image, data directory) to copy up.
    pub fill: Vec<(String, String, std::path::PathBuf)>,
    /// Names of new volumes that asked for no copy.
    pub empty: Vec<String>,
    /// The `orca.volumes` label.
    pub label: Option<String>,
    /// Host device nodes, checked against `[volumes] devices`.
    pub devices: Vec<cri::DeviceNode>,
}

impl LocalAgent {
    /// Makes the replica's volumes and checks its bind mounts.
    pub(super) fn mounts_for(&self, spec: &InstanceSpec) -> Result<Mounts, AgentError> {
        let mut out = Mounts {
            label: label_of(&spec.project, &spec.mounts),
            ..Default::default()
        };
        for d in &spec.devices {
            out.devices
                .push(super::files::device_node(d, &self.devices).map_err(AgentError::Other)?);
        }
        for m in &spec.mounts {
            match m {
                MountSpec::Volume {
                    name,
                    target,
                    read_only,
                    nocopy,
                } => {
                    let p = self
                        .volumes
                        .prepare(&spec.project, name)
                        .map_err(AgentError::Other)?;
                    if p.fill {
                        if *nocopy {
                            out.empty.push(name.clone());
                        } else {
                            out.fill
                                .push((name.clone(), target.clone(), p.data.clone()));
                        }
                    }
                    out.binds.push(BindMount {
                        source: p.data,
                        destination: target.clone(),
                        read_only: *read_only,
                    });
                }
                MountSpec::Bind {
                    source,
                    target,
                    read_only,
                } => out.binds.push(BindMount {
                    source: self
                        .volumes
                        .bind_source(source)
                        .map_err(AgentError::Other)?,
                    destination: target.clone(),
                    read_only: *read_only,
                }),
                MountSpec::Tmpfs { target, size_bytes } => out.tmpfs.push(TmpfsMount {
                    destination: target.clone(),
                    size_bytes: *size_bytes,
                }),
            }
        }
        Ok(out)
    }

    /// Why the replica may not start now: a volume it mounts is held by
    /// a running replica of another version.
    pub(super) async fn lease_conflict(
        &self,
        service: &str,
        version: u64,
        label: &str,
    ) -> Result<Option<String>, AgentError> {
        let all = self
            .cri
            .list_containers(&[cri::labels::has(VOLUMES_LABEL)])
            .await?;
        let running: Vec<Holder> = all
            .into_iter()
            .filter(|c| c.task.as_ref().is_some_and(|t| t.state.is_alive()))
            .filter_map(|c| {
                Some(Holder {
                    service: c.labels.get(cri::labels::SERVICE)?.clone(),
                    version: c.labels.get(cri::labels::VERSION)?.parse().ok()?,
                    volumes: c.labels.get(VOLUMES_LABEL)?.clone(),
                    id: c.id,
                })
            })
            .collect();
        Ok(conflict(service, version, label, &running))
    }

    /// The replicas (any state) that mount volume `project/name`.
    pub(super) async fn mounted_by(
        &self,
        project: &str,
        name: &str,
    ) -> Result<Vec<String>, AgentError> {
        let key = format!("{project}/{name}");
        let all = self
            .cri
            .list_containers(&[cri::labels::has(VOLUMES_LABEL)])
            .await?;
        Ok(all
            .into_iter()
            .filter(|c| {
                c.labels.get(VOLUMES_LABEL).is_some_and(|v| {
                    super::volumes::parse_label(v)
                        .iter()
                        .any(|(k, _)| *k == key)
                })
            })
            .map(|c| c.id)
            .collect())
    }

    /// Fills new volumes from the created container's image, once.
    pub(super) async fn fill(&self, spec: &InstanceSpec, m: &Mounts) -> Result<(), AgentError> {
        for name in &m.empty {
            self.volumes
                .filled(&spec.project, name)
                .map_err(AgentError::Other)?;
        }
        if m.fill.is_empty() {
            return Ok(());
        }
        let owner = self.cri.process_user(&spec.id).await?;
        for (name, target, data) in &m.fill {
            let copied = self.cri.copy_up(&spec.id, target, data, owner).await?;
            tracing::info!(instance = %spec.id, volume = %name, ?copied, "new volume filled");
            self.volumes
                .filled(&spec.project, name)
                .map_err(AgentError::Other)?;
        }
        Ok(())
    }
}
