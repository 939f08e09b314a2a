//! Starting a replica on the local node: its image pinned to the
//! version's digest, its network, its mounts (volumes made and filled,
//! the lease checked), then the container and its task; nothing left
//! behind when any step fails. And starting an exited one again, under
//! the same lease.

use std::collections::HashMap;

use cri::{ContainerConfig, NetworkMode};

use super::local::{LocalAgent, NODE_LABEL, RESTART_LABEL, RUN_LABEL, SLOT_LABEL};
use super::{AgentError, InstanceSpec};

impl LocalAgent {
    pub(super) async fn start_replica(
        &self,
        spec: &InstanceSpec,
    ) -> Result<super::Started, AgentError> {
        let image = super::image::pinned_image(
            &self.cri,
            &spec.image,
            spec.image_digest.as_deref(),
            spec.pull_never,
        )
        .await?;
        let log = self.log_target(&spec.id);
        // The user's labels first: orca's own (validated apart) come after.
        let mut labels: HashMap<String, String> = spec.labels.clone().into_iter().collect();
        labels.extend([
            (cri::labels::SERVICE.to_string(), spec.service.clone()),
            (cri::labels::PROJECT.to_string(), spec.project.clone()),
            (cri::labels::VERSION.to_string(), spec.version.to_string()),
            (cri::labels::INSTANCE.to_string(), spec.id.clone()),
            (SLOT_LABEL.to_string(), spec.slot.to_string()),
            (NODE_LABEL.to_string(), self.node_id.clone()),
        ]);
        if spec.restart != api::spec::RestartPolicy::Always {
            labels.insert(RUN_LABEL.to_string(), spec.run.to_string());
            labels.insert(RESTART_LABEL.to_string(), spec.restart.as_str().to_string());
        }
        if spec.files.iter().any(|f| f.secret) {
            labels.insert(super::files::SECRET_FILES_LABEL.to_string(), "1".into());
        }
        if let Some(f) = log.file() {
            labels.insert(cri::labels::LOG_PATH.to_string(), f.display().to_string());
        }
        let resources = cri::Resources {
            memory: spec.memory_bytes.map(cri::MemoryLimit),
            cpu: spec.cpu.map(cri::CpuLimit::new).transpose()?,
            pids: Some(spec.pids),
        };
        let mounts = self.mounts_for(spec)?;
        if let Some(l) = &mounts.label {
            labels.insert(super::volumes::VOLUMES_LABEL.to_string(), l.clone());
        }
        // From the lease check to the start, no other start on a volume.
        let _lease = match &mounts.label {
            Some(label) => {
                let guard = self.volume_starts.lock().await;
                if let Some(why) = self
                    .lease_conflict(&spec.service, spec.version, label)
                    .await?
                {
                    return Err(AgentError::Other(why));
                }
                Some(guard)
            }
            None => None,
        };
        let hostname = format!("{}-{}", spec.service, spec.slot);
        let attachment = match &self.network {
            Some(net) => Some(
                net.attach(&spec.id)
                    .await
                    .map_err(|e| AgentError::Other(e.to_string()))?,
            ),
            None => None,
        };
        let result = async {
            let mut binds =
                self.net_files(&spec.id, &hostname, attachment.as_ref().map(|a| a.ip))?;
            binds.extend(mounts.binds.iter().cloned());
            binds.extend(self.files.binds(&spec.id, &spec.files));
            let config = ContainerConfig {
                id: spec.id.clone(),
                hostname: Some(hostname.clone()),
                command: spec.command.clone(),
                entrypoint: spec.entrypoint.clone(),
                args: spec.args.clone(),
                working_dir: spec.working_dir.clone(),
                env: spec.env.clone(),
                resources,
                network: match &attachment {
                    Some(a) => NetworkMode::Join(a.netns.clone()),
                    None => NetworkMode::Isolated,
                },
                mounts: binds,
                tmpfs: mounts.tmpfs.clone(),
                devices: mounts.devices.clone(),
                labels,
                cap_add: spec.cap_add.clone(),
                cap_drop: spec.cap_drop.clone(),
                seccomp_unconfined: spec.seccomp_unconfined,
                read_only_rootfs: spec.read_only_rootfs,
                user: spec.user.clone(),
            };
            self.cri.create_container(&image, &config).await?;
            self.fill(spec, &mounts).await?;
            if !spec.files.is_empty() {
                let owner = self.cri.process_user(&spec.id).await?;
                self.files
                    .write(&spec.id, &spec.files, owner)
                    .map_err(AgentError::Other)?;
            }
            self.cri
                .start_task(&spec.id, &log)
                .await
                .map_err(AgentError::from)
        }
        .await;
        match result {
            Ok(pid) => Ok(super::Started {
                pid,
                ip: attachment.as_ref().map(|a| a.ip),
            }),
            Err(e) => {
                match self.cri.remove_container(&spec.id).await {
                    Ok(()) => {
                        cri::logs::remove_logs(&self.log_file(&spec.id));
                        self.release_network(&spec.id).await;
                        self.files.release(&spec.id);
                    }
                    // The container may still be there (containerd went
                    // away): it keeps its network and log until it is
                    // restarted or removed, as any replica found listed.
                    Err(cleanup) => {
                        tracing::warn!(instance = %spec.id, error = %cleanup, "cleanup after a failed start");
                    }
                }
                Err(e)
            }
        }
    }

    pub(super) async fn restart_replica(&self, id: &str) -> Result<u32, AgentError> {
        if let Some(task) = self.cri.task(id).await? {
            if task.state.is_alive() {
                return Ok(task.pid);
            }
            self.cri.delete_task(id).await?;
        }
        let info = self.cri.container(id).await?;
        // Its secrets went with the tmpfs (a host reboot): a new replica,
        // given them afresh, takes its slot.
        if info.labels.contains_key(super::files::SECRET_FILES_LABEL)
            && !self.files.secrets_present(id)
        {
            return Err(AgentError::NotFound(format!(
                "{id} cannot start again: its secret files are gone (the node restarted)"
            )));
        }
        // A replica on a volume starts again only while no other version
        // holds the volume.
        let label = info.labels.get(super::volumes::VOLUMES_LABEL);
        let _lease = match label {
            Some(label) => {
                let guard = self.volume_starts.lock().await;
                let service = info
                    .labels
                    .get(cri::labels::SERVICE)
                    .cloned()
                    .unwrap_or_default();
                let version = info
                    .labels
                    .get(cri::labels::VERSION)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if let Some(why) = self.lease_conflict(&service, version, label).await? {
                    return Err(AgentError::Other(why));
                }
                Some(guard)
            }
            None => None,
        };
        Ok(self.cri.start_task(id, &self.log_target(id)).await?)
    }
}
