//! Unpacking layers into overlayfs snapshots named by chain id, the way
//! containerd's own unpacker does, so that `ctr` sees the image as unpacked
//! and the snapshots stay referenced from the image config.

use std::collections::HashMap;

use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::ApplyRequest;
use containerd_client::types::Descriptor as CdDescriptor;

use super::{chain_ids, ConfigFile, Manifest};
use crate::client::{Cri, SNAPSHOTTER};
use crate::error::{CriError, Result};

impl Cri {
    /// Unpacks every layer not yet unpacked; returns the top chain id and
    /// how many layers it unpacked.
    pub(crate) async fn unpack(
        &self,
        lease: &str,
        manifest: &Manifest,
        config: &ConfigFile,
        config_digest: &str,
    ) -> Result<(String, usize)> {
        let diff_ids = &config.rootfs.diff_ids;
        if diff_ids.len() != manifest.layers.len() {
            return Err(CriError::content(
                "image",
                format!(
                    "{} layers in the manifest but {} diff ids in the config",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            ));
        }
        let chain = chain_ids(diff_ids);
        let mut unpacked = 0;
        for (i, layer) in manifest.layers.iter().enumerate() {
            let lock = self.pulls().key_lock(&chain[i]);
            let _held = lock.lock().await;
            if self.snapshot_exists(&chain[i]).await? {
                continue;
            }
            let parent = if i == 0 { "" } else { chain[i - 1].as_str() };
            self.apply_layer(lease, layer, &diff_ids[i], &chain[i], parent)
                .await?;
            unpacked += 1;
            if layer.media_type.contains("gzip") || layer.media_type.contains("zstd") {
                self.set_blob_labels(
                    &layer.digest,
                    HashMap::from([(
                        "containerd.io/uncompressed".to_string(),
                        diff_ids[i].clone(),
                    )]),
                )
                .await?;
            }
        }
        let top = chain.last().cloned().unwrap_or_default();
        if !top.is_empty() {
            self.set_blob_labels(
                config_digest,
                HashMap::from([(
                    format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"),
                    top.clone(),
                )]),
            )
            .await?;
        }
        Ok((top, unpacked))
    }

    /// True if containerd has a snapshot named `key` (a chain id or a container id).
    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match self
            .snapshots()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(false),
            Err(s) => Err(self.unavailable_or("Snapshots.Stat", key, s)),
        }
    }

    async fn apply_layer(
        &self,
        lease: &str,
        layer: &super::Descriptor,
        diff_id: &str,
        chain_id: &str,
        parent: &str,
    ) -> Result<()> {
        let key = format!("extract-{}-{}", rand::random::<u32>(), chain_id);
        let mounts = self
            .snapshots()
            .prepare(self.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: key.clone(),
                    parent: parent.to_string(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await
            .map_err(|s| self.unavailable_or("Snapshots.Prepare", chain_id, s))?
            .into_inner()
            .mounts;

        let applied = self
            .diff()
            .apply(self.req_leased(
                ApplyRequest {
                    diff: Some(CdDescriptor {
                        media_type: layer.media_type.clone(),
                        digest: layer.digest.clone(),
                        size: layer.size,
                        annotations: HashMap::new(),
                    }),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                lease,
            ))
            .await;
        let applied = match applied {
            Ok(r) => r.into_inner().applied.map(|d| d.digest).unwrap_or_default(),
            Err(s) => {
                self.remove_snapshot(&key).await;
                return Err(self.unavailable_or("Diff.Apply", &layer.digest, s));
            }
        };
        if applied != diff_id {
            self.remove_snapshot(&key).await;
            return Err(CriError::DigestMismatch {
                what: format!("layer {}", layer.digest),
                expected: diff_id.to_string(),
                actual: applied,
            });
        }
        let committed = self
            .snapshots()
            .commit(self.req_leased(
                CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    name: chain_id.to_string(),
                    key: key.clone(),
                    labels: HashMap::new(),
                },
                lease,
            ))
            .await;
        match committed {
            Ok(_) => Ok(()),
            // Someone else (another orca, ctr) unpacked it meanwhile.
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.remove_snapshot(&key).await;
                Ok(())
            }
            Err(s) => {
                self.remove_snapshot(&key).await;
                Err(self.unavailable_or("Snapshots.Commit", chain_id, s))
            }
        }
    }

    /// Removes a snapshot, logging (not failing) when that does not work.
    pub(crate) async fn remove_snapshot(&self, key: &str) {
        let result = self
            .snapshots()
            .remove(self.req(RemoveSnapshotRequest {
                snapshotter: SNAPSHOTTER.to_string(),
                key: key.to_string(),
            }))
            .await;
        if let Err(s) = result {
            if s.code() != tonic::Code::NotFound {
                tracing::warn!(snapshot = %key, status = %s, "could not remove snapshot");
            }
        }
    }
}
