//! Pulling an image from a registry into containerd: manifest (through the
//! host platform's entry of an index), blobs streamed into the content store
//! with the GC labels that keep them, unpack, image record. Blobs and
//! snapshots already present are skipped, so re-pulling an unchanged tag costs
//! one manifest request; concurrent pulls of one reference share one run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use containerd_client::services::v1::{
    CreateImageRequest, Image as ImageRecord, UpdateImageRequest,
};
use containerd_client::types::Descriptor as CdDescriptor;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};
use http_body_util::BodyDataStream;
use prost_types::FieldMask;

use super::{
    chain_ids, is_index, parse_json, ConfigFile, Descriptor, Image, Index, Manifest, Platform,
    SharedResult, INDEX_TYPES, MAX_DOC, OCI_MANIFEST,
};
use crate::client::Cri;
use crate::error::{CriError, Result};
use crate::reference::ImageRef;
use crate::registry::Endpoint;

/// Blobs downloaded at once for one image.
const PARALLEL_BLOBS: usize = 3;
/// How long a pull's lease protects half-done work if orca dies mid-pull.
const PULL_LEASE: Duration = Duration::from_secs(3600);

type InFlight = Shared<BoxFuture<'static, SharedResult<Pulled>>>;

/// What a pull did: the image, and how much work it took (zero and zero
/// for an unchanged tag that was pulled before).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    pub image: Image,
    /// Blobs downloaded (config and layers; manifests not counted).
    pub fetched_blobs: usize,
    /// Layers unpacked into new snapshots.
    pub unpacked_layers: usize,
}

/// Deduplicates work: one pull per reference, one download or unpack per
/// digest at a time.
#[derive(Default)]
pub(crate) struct PullGate {
    inflight: Mutex<HashMap<String, InFlight>>,
    keys: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl PullGate {
    /// A lock for one digest or chain id; callers hold it while they check
    /// for and create the thing.
    pub(crate) fn key_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map stays small.
        keys.retain(|_, l| Arc::strong_count(l) > 1);
        keys.entry(key.to_string()).or_default().clone()
    }
}

impl Cri {
    /// Pulls `reference` (for example `nginx:alpine`) and unpacks it, or
    /// joins a pull of the same reference already under way.
    pub async fn pull(&self, reference: &str) -> Result<Image> {
        self.pull_with_report(reference).await.map(|p| p.image)
    }

    /// [`Cri::pull`], also telling how much work the pull did. Callers that
    /// joined a pull under way get the report of that pull.
    pub async fn pull_with_report(&self, reference: &str) -> Result<Pulled> {
        let image_ref = ImageRef::parse(reference)?;
        let key = image_ref.to_string();
        let shared = {
            let mut inflight = self
                .pulls()
                .inflight
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match inflight.get(&key) {
                Some(f) => f.clone(),
                None => {
                    let cri = self.clone();
                    let k = key.clone();
                    // Spawned so the pull finishes even if every caller goes away.
                    let task = tokio::spawn(async move {
                        let result = cri.pull_once(&image_ref).await.map_err(Arc::new);
                        cri.pulls()
                            .inflight
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&k);
                        result
                    });
                    let f: InFlight = async move {
                        task.await
                            .unwrap_or_else(|e| Err(Arc::new(CriError::registry("(pull task)", e))))
                    }
                    .boxed()
                    .shared();
                    inflight.insert(key, f.clone());
                    f
                }
            }
        };
        shared.await.map_err(CriError::Shared)
    }

    async fn pull_once(&self, image_ref: &ImageRef) -> Result<Pulled> {
        let started = std::time::Instant::now();
        let lease = self.lease(PULL_LEASE).await?;
        let result = self.pull_leased(image_ref, &lease.id).await;
        lease.release().await;
        if let Ok(p) = &result {
            tracing::info!(image = %p.image.name, digest = %p.image.digest, fetched = p.fetched_blobs, unpacked = p.unpacked_layers, ms = started.elapsed().as_millis() as u64, "pulled");
        }
        result
    }

    async fn pull_leased(&self, image_ref: &ImageRef, lease: &str) -> Result<Pulled> {
        let registry = self.registry();
        let top = registry.fetch_manifest(image_ref).await?;
        let name = image_ref.to_string();
        let top_is_index = is_index(&top.media_type, &top.bytes);
        let top_media_type = match (top.media_type.is_empty(), top_is_index) {
            (false, _) => top.media_type.clone(),
            (true, true) => INDEX_TYPES[0].to_string(),
            (true, false) => OCI_MANIFEST.to_string(),
        };

        let (manifest_raw, index_pick) = if top_is_index {
            let index: Index = parse_json("image index", &top.bytes)?;
            let platform = Platform::host();
            let (position, entry) = index
                .manifests
                .iter()
                .enumerate()
                .find(|(_, d)| Some(*d) == index.select(&platform))
                .ok_or_else(|| CriError::NoMatchingPlatform {
                    reference: name.clone(),
                    platform: platform.to_string(),
                })?;
            let m = registry
                .fetch_manifest_at(&top.endpoint, image_ref, &entry.digest)
                .await?;
            (m, Some((position, entry.digest.clone())))
        } else {
            (top.clone(), None)
        };
        let manifest: Manifest = parse_json("image manifest", &manifest_raw.bytes)?;

        let mut wanted = vec![manifest.config.clone()];
        wanted.extend(manifest.layers.iter().cloned());
        let fetched_blobs = futures::stream::iter(wanted)
            .map(|d| self.fetch_blob_if_missing(lease, image_ref, &top.endpoint, d))
            .buffer_unordered(PARALLEL_BLOBS)
            .try_collect::<Vec<bool>>()
            .await?
            .into_iter()
            .filter(|fetched| *fetched)
            .count();

        let mut labels = HashMap::from([(
            "containerd.io/gc.ref.content.config".to_string(),
            manifest.config.digest.clone(),
        )]);
        for (i, layer) in manifest.layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{i}"),
                layer.digest.clone(),
            );
        }
        self.put_blob(
            lease,
            &manifest_raw.digest,
            manifest_raw.bytes.clone(),
            labels,
        )
        .await?;
        if let Some((position, digest)) = &index_pick {
            let labels = HashMap::from([(
                format!("containerd.io/gc.ref.content.m.{position}"),
                digest.clone(),
            )]);
            self.put_blob(lease, &top.digest, top.bytes.clone(), labels)
                .await?;
        }

        let config_bytes = self.read_blob(&manifest.config.digest, MAX_DOC).await?;
        let config: ConfigFile = parse_json("image config", &config_bytes)?;
        let (chain_id, unpacked_layers) = self
            .unpack(lease, &manifest, &config, &manifest.config.digest)
            .await?;

        self.put_image_record(
            &name,
            CdDescriptor {
                media_type: top_media_type,
                digest: top.digest.clone(),
                size: top.bytes.len() as i64,
                annotations: HashMap::new(),
            },
        )
        .await?;
        debug_assert_eq!(Some(&chain_id), chain_ids(&config.rootfs.diff_ids).last());
        let image = Image {
            name,
            digest: top.digest,
            manifest_digest: manifest_raw.digest,
            config_digest: manifest.config.digest.clone(),
            config: config.config.unwrap_or_default(),
            chain_id,
            size: manifest.layers.iter().map(|l| l.size).sum(),
        };
        Ok(Pulled {
            image,
            fetched_blobs,
            unpacked_layers,
        })
    }

    async fn fetch_blob_if_missing(
        &self,
        lease: &str,
        image_ref: &ImageRef,
        endpoint: &Endpoint,
        blob: Descriptor,
    ) -> Result<bool> {
        let lock = self.pulls().key_lock(&blob.digest);
        let _held = lock.lock().await;
        if self.blob_info(&blob.digest).await?.is_some() {
            return Ok(false);
        }
        let body = self
            .registry()
            .fetch_blob(endpoint, image_ref, &blob.digest)
            .await?;
        self.write_blob(
            lease,
            &format!("orca-pull-{}", blob.digest),
            Some(&blob.digest),
            Some(blob.size),
            HashMap::new(),
            BodyDataStream::new(body),
        )
        .await?;
        Ok(true)
    }

    /// Creates the image record, or points an existing one at `target`.
    pub(crate) async fn put_image_record(&self, name: &str, target: CdDescriptor) -> Result<()> {
        let record = ImageRecord {
            name: name.to_string(),
            labels: HashMap::new(),
            target: Some(target),
            created_at: None,
            updated_at: None,
        };
        match self
            .images()
            .create(self.req(CreateImageRequest {
                image: Some(record.clone()),
                source_date_epoch: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::AlreadyExists => {
                self.images()
                    .update(self.req(UpdateImageRequest {
                        image: Some(record),
                        update_mask: Some(FieldMask {
                            paths: vec!["target".to_string()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(|s| self.unavailable_or("Images.Update", name, s))?;
                Ok(())
            }
            Err(s) => Err(self.unavailable_or("Images.Create", name, s)),
        }
    }
}
