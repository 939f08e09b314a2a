//! Importing images from archives for air-gapped hosts: an OCI image layout
//! in a tar (`skopeo copy ... oci-archive:`, `docker save` of Docker 25+) or
//! the classic `docker save` format (`manifest.json` + layer tars). One pass
//! over the tar streams every file into the content store; the documents are
//! then read to build manifests, labels, snapshots and image records.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use containerd_client::types::Descriptor as CdDescriptor;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::{
    is_index, parse_json, ConfigFile, Descriptor, Image, Index, Manifest, Platform, MAX_DOC,
    OCI_MANIFEST,
};
use crate::client::Cri;
use crate::content::Written;
use crate::error::{CriError, Result};
use crate::reference::ImageRef;

/// Archive members kept in memory rather than stored as blobs.
const DOCUMENTS: [&str; 4] = ["index.json", "oci-layout", "manifest.json", "repositories"];
const READ_CHUNK: usize = 256 * 1024;

/// An image created by an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    pub image: Image,
}

enum Member {
    Document(String, Vec<u8>),
    Blob {
        path: String,
        size: u64,
        chunks: mpsc::Receiver<std::io::Result<Bytes>>,
    },
}

struct StoredBlob {
    written: Written,
    gzip: bool,
}

/// One entry of a classic `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerSaveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Cri {
    /// Imports every image of the archive at `path`. `name` names an image
    /// the archive leaves unnamed (or tagged only, like `v1`).
    pub async fn import_archive(&self, path: &Path, name: Option<&str>) -> Result<Vec<Image>> {
        let lease = self.lease(Duration::from_secs(3600)).await?;
        let result = self.import_leased(path, name, &lease.id).await;
        lease.release().await;
        result
    }

    async fn import_leased(
        &self,
        path: &Path,
        name: Option<&str>,
        lease: &str,
    ) -> Result<Vec<Image>> {
        let (tx, mut rx) = mpsc::channel::<Member>(1);
        let reader_path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || read_archive(&reader_path, tx));

        let mut documents: HashMap<String, Vec<u8>> = HashMap::new();
        let mut blobs: HashMap<String, StoredBlob> = HashMap::new();
        while let Some(member) = rx.recv().await {
            match member {
                Member::Document(p, bytes) => {
                    documents.insert(p, bytes);
                }
                Member::Blob {
                    path: p,
                    size,
                    mut chunks,
                } => {
                    let expected = p
                        .strip_prefix("blobs/sha256/")
                        .map(|hex| format!("sha256:{hex}"));
                    // Peek at the first chunk to tell gzip from plain tar.
                    let first = chunks
                        .recv()
                        .await
                        .transpose()
                        .map_err(|e| CriError::io("read", path, e))?;
                    let gzip = first.as_ref().is_some_and(|b| b.starts_with(&[0x1f, 0x8b]));
                    let head = futures::stream::iter(first.map(Ok::<Bytes, std::io::Error>));
                    let rest = tokio_stream::wrappers::ReceiverStream::new(chunks);
                    let data = futures::StreamExt::chain(head, rest);
                    let written = match &expected {
                        Some(d) if self.blob_info(d).await?.is_some() => {
                            // Drain the member so the reader can go on.
                            futures::StreamExt::for_each(data, |_| async {}).await;
                            Written {
                                digest: d.clone(),
                                size: size as i64,
                            }
                        }
                        _ => {
                            self.write_blob(
                                lease,
                                &format!("orca-import-{}", rand::random::<u64>()),
                                expected.as_deref(),
                                Some(size as i64),
                                HashMap::new(),
                                data,
                            )
                            .await?
                        }
                    };
                    blobs.insert(p, StoredBlob { written, gzip });
                }
            }
        }
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(CriError::content(path.display(), e)),
        }

        if let Some(index) = documents.get("index.json") {
            self.import_oci_layout(lease, index, name).await
        } else if let Some(manifest) = documents.get("manifest.json") {
            self.import_docker_save(lease, manifest, &blobs, name).await
        } else {
            Err(CriError::content(
                path.display(),
                "neither an OCI layout (index.json) nor a docker save archive (manifest.json)",
            ))
        }
    }

    async fn import_oci_layout(
        &self,
        lease: &str,
        index_json: &[u8],
        name: Option<&str>,
    ) -> Result<Vec<Image>> {
        let index: Index = parse_json("index.json", index_json)?;
        let mut images = Vec::new();
        for entry in &index.manifests {
            let image_name = name_for(entry, name)?;
            let top = self.read_blob(&entry.digest, MAX_DOC).await?;
            let manifest_digest = if is_index(&entry.media_type, &top) {
                let inner: Index = parse_json("image index", &top)?;
                let platform = Platform::host();
                let (position, chosen) = inner
                    .manifests
                    .iter()
                    .enumerate()
                    .find(|(_, d)| Some(*d) == inner.select(&platform))
                    .ok_or_else(|| CriError::NoMatchingPlatform {
                        reference: image_name.clone(),
                        platform: platform.to_string(),
                    })?;
                self.set_blob_labels(
                    &entry.digest,
                    HashMap::from([(
                        format!("containerd.io/gc.ref.content.m.{position}"),
                        chosen.digest.clone(),
                    )]),
                )
                .await?;
                chosen.digest.clone()
            } else {
                entry.digest.clone()
            };
            let manifest_bytes = self.read_blob(&manifest_digest, MAX_DOC).await?;
            let manifest: Manifest = parse_json("image manifest", &manifest_bytes)?;
            self.set_blob_labels(&manifest_digest, manifest_gc_labels(&manifest))
                .await?;
            let media_type = if entry.media_type.is_empty() {
                OCI_MANIFEST.to_string()
            } else {
                entry.media_type.clone()
            };
            images.push(
                self.finish_import(
                    lease,
                    &image_name,
                    &manifest,
                    CdDescriptor {
                        media_type,
                        digest: entry.digest.clone(),
                        size: entry.size,
                        annotations: HashMap::new(),
                    },
                    &manifest_digest,
                )
                .await?,
            );
        }
        Ok(images)
    }

    async fn import_docker_save(
        &self,
        lease: &str,
        manifest_json: &[u8],
        blobs: &HashMap<String, StoredBlob>,
        name: Option<&str>,
    ) -> Result<Vec<Image>> {
        let entries: Vec<DockerSaveEntry> = parse_json("manifest.json", manifest_json)?;
        let member = |p: &str| {
            blobs.get(p.trim_start_matches("./")).ok_or_else(|| {
                CriError::content(
                    "docker save archive",
                    format!("manifest.json names {p}, which the archive lacks"),
                )
            })
        };
        let mut images = Vec::new();
        for entry in entries {
            let config = member(&entry.config)?;
            let mut layers = Vec::new();
            for l in &entry.layers {
                let b = member(l)?;
                layers.push(Descriptor {
                    media_type: if b.gzip {
                        "application/vnd.oci.image.layer.v1.tar+gzip".into()
                    } else {
                        "application/vnd.oci.image.layer.v1.tar".into()
                    },
                    digest: b.written.digest.clone(),
                    size: b.written.size,
                    platform: None,
                    annotations: HashMap::new(),
                });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: OCI_MANIFEST.to_string(),
                config: Descriptor {
                    media_type: "application/vnd.oci.image.config.v1+json".into(),
                    digest: config.written.digest.clone(),
                    size: config.written.size,
                    platform: None,
                    annotations: HashMap::new(),
                },
                layers,
            };
            let bytes = Bytes::from(
                serde_json::to_vec(&manifest).map_err(|e| CriError::content("manifest", e))?,
            );
            let digest = crate::registry::sha256_digest(&bytes);
            let size = bytes.len() as i64;
            self.put_blob(lease, &digest, bytes, manifest_gc_labels(&manifest))
                .await?;
            let mut names: Vec<String> = entry.repo_tags.clone().unwrap_or_default();
            if let Some(n) = name {
                names.insert(0, n.to_string());
            }
            if names.is_empty() {
                return Err(CriError::content(
                    "docker save archive",
                    "an image has no RepoTags; pass a name",
                ));
            }
            for n in names {
                let normalised = ImageRef::parse(&n)?.to_string();
                images.push(
                    self.finish_import(
                        lease,
                        &normalised,
                        &manifest,
                        CdDescriptor {
                            media_type: OCI_MANIFEST.to_string(),
                            digest: digest.clone(),
                            size,
                            annotations: HashMap::new(),
                        },
                        &digest,
                    )
                    .await?,
                );
            }
        }
        Ok(images)
    }

    async fn finish_import(
        &self,
        lease: &str,
        name: &str,
        manifest: &Manifest,
        target: CdDescriptor,
        manifest_digest: &str,
    ) -> Result<Image> {
        let config_bytes = self.read_blob(&manifest.config.digest, MAX_DOC).await?;
        let config: ConfigFile = parse_json("image config", &config_bytes)?;
        let (chain_id, _) = self
            .unpack(lease, manifest, &config, &manifest.config.digest)
            .await?;
        let digest = target.digest.clone();
        self.put_image_record(name, target).await?;
        Ok(Image {
            name: name.to_string(),
            digest,
            manifest_digest: manifest_digest.to_string(),
            config_digest: manifest.config.digest.clone(),
            config: config.config.unwrap_or_default(),
            chain_id,
            size: manifest.layers.iter().map(|l| l.size).sum(),
        })
    }
}

fn manifest_gc_labels(manifest: &Manifest) -> HashMap<String, String> {
    let mut labels = HashMap::from([(
        "containerd.io/gc.ref.content.config".to_string(),
        manifest.config.digest.clone(),
    )]);
    for (i, l) in manifest.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{i}"),
            l.digest.clone(),
        );
    }
    labels
}

/// The name for an index entry: containerd's annotation, a full reference in
/// the OCI ref annotation, or the caller's name (with the entry's tag).
fn name_for(entry: &Descriptor, given: Option<&str>) -> Result<String> {
    if let Some(n) = entry.annotations.get("io.containerd.image.name") {
        return Ok(ImageRef::parse(n)?.to_string());
    }
    let tag = entry.annotations.get("org.opencontainers.image.ref.name");
    match (given, tag) {
        (Some(g), Some(t)) if !g.rsplit('/').next().unwrap_or(g).contains(':') && !g.contains('@') => {
            Ok(ImageRef::parse(&format!("{g}:{t}"))?.to_string())
        }
        (Some(g), _) => Ok(ImageRef::parse(g)?.to_string()),
        (None, Some(t)) if t.contains('/') => Ok(ImageRef::parse(t)?.to_string()),
        _ => Err(CriError::content(
            "OCI archive",
            "its image has no full name; pass one (for example orca image import FILE --name app:v1)",
        )),
    }
}

/// Reads the tar (plain or gzip) and hands each regular file to the importer.
fn read_archive(path: &PathBuf, tx: mpsc::Sender<Member>) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| CriError::io("open", path, e))?;
    let mut buffered = std::io::BufReader::new(file);
    let gz = {
        use std::io::BufRead;
        let head = buffered
            .fill_buf()
            .map_err(|e| CriError::io("read", path, e))?;
        head.starts_with(&[0x1f, 0x8b])
    };
    let input: Box<dyn Read> = if gz {
        Box::new(flate2::read::GzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| CriError::io("read tar", path, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| CriError::io("read tar", path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry
            .path()
            .map_err(|e| CriError::io("read tar", path, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let size = entry.size();
        if DOCUMENTS.contains(&member.as_str()) {
            if size as usize > MAX_DOC {
                return Err(CriError::content(&member, "too large"));
            }
            let mut bytes = Vec::with_capacity(size as usize);
            entry
                .read_to_end(&mut bytes)
                .map_err(|e| CriError::io("read tar", path, e))?;
            if tx.blocking_send(Member::Document(member, bytes)).is_err() {
                return Ok(());
            }
            continue;
        }
        let (chunk_tx, chunks) = mpsc::channel(4);
        if tx
            .blocking_send(Member::Blob {
                path: member,
                size,
                chunks,
            })
            .is_err()
        {
            return Ok(());
        }
        loop {
            let mut buf = vec![0u8; READ_CHUNK];
            match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    buf.truncate(n);
                    if chunk_tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return Ok(());
                    }
                }
                Err(e) => {
                    let _ = chunk_tx.blocking_send(Err(e));
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}
