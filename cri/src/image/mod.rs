//! Images: the JSON documents of the OCI and Docker formats that orca reads,
//! platform selection, chain ids, and looking up an image already in
//! containerd. Pulling, unpacking and importing live in the submodules.

mod import;
mod pull;
mod unpack;

use std::collections::HashMap;
use std::sync::Arc;

use containerd_client::services::v1::{DeleteImageRequest, GetImageRequest};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::client::Cri;
use crate::error::{CriError, Result};
use crate::reference::ImageRef;

pub use import::ImportedImage;
pub(crate) use pull::PullGate;
pub use pull::Pulled;

/// Media types of indexes (multi-platform lists).
pub(crate) const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];
/// Media type of the manifests orca writes itself (imports of `docker save`).
pub(crate) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Largest manifest, index or config read into memory.
pub(crate) const MAX_DOC: usize = 4 * 1024 * 1024;

/// A content descriptor as found in manifests and indexes.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
}

/// An OS/architecture pair.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// The platform of this host, in OCI names.
    pub fn host() -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            architecture: architecture.to_string(),
            os: "linux".to_string(),
            variant: None,
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// An image index / Docker manifest list.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Index {
    pub manifests: Vec<Descriptor>,
}

impl Index {
    /// The entry for `platform`; an arm64 variant mismatch still matches.
    pub fn select(&self, platform: &Platform) -> Option<&Descriptor> {
        self.manifests.iter().find(|d| {
            d.platform.as_ref().is_some_and(|p| {
                p.os == platform.os
                    && p.architecture == platform.architecture
                    && (platform.variant.is_none() || p.variant == platform.variant)
            })
        })
    }
}

/// A single-platform manifest.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Manifest {
    #[serde(default)]
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub media_type: String,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

/// The runtime part of an image config (`config` in the JSON).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase", default)]
pub struct ImageConfig {
    pub entrypoint: Option<Vec<String>>,
    pub cmd: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Option<HashMap<String, serde_json::Value>>,
    pub stop_signal: Option<String>,
}

/// An image config file.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ConfigFile {
    #[serde(default)]
    pub config: Option<ImageConfig>,
    pub rootfs: RootFs,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// An image that is in containerd and unpacked, ready to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// The normalised name containerd knows it by.
    pub name: String,
    /// Digest of what the name points at (index or manifest): what a
    /// registry calls the image's digest.
    pub digest: String,
    /// Digest of the platform manifest.
    pub manifest_digest: String,
    /// Digest of the config blob.
    pub config_digest: String,
    /// The config's runtime settings.
    pub config: ImageConfig,
    /// Chain id of the top layer: the snapshot containers start from.
    pub chain_id: String,
    /// Compressed size of the layers.
    pub size: i64,
}

/// Chain ids of a layer stack (`chainID(n) = sha256(chainID(n-1) + " " + diffID(n))`).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{}",
                hex::encode(Sha256::digest(format!("{parent} {diff_id}").as_bytes()))
            ),
        };
        out.push(next);
    }
    out
}

pub(crate) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| CriError::content(what, e))
}

pub(crate) fn is_index(media_type: &str, bytes: &[u8]) -> bool {
    if INDEX_TYPES.contains(&media_type) {
        return true;
    }
    // Some registries send no or a generic type: look inside.
    media_type.is_empty()
        && serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .and_then(|v| v.get("manifests").cloned())
            .is_some()
}

impl Cri {
    /// The image `reference` names, if containerd has it, resolved for this
    /// host's platform.
    pub async fn image(&self, reference: &str) -> Result<Image> {
        let image_ref = ImageRef::parse(reference)?;
        let name = image_ref.to_string();
        let record = self
            .images()
            .get(self.req(GetImageRequest { name: name.clone() }))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::NotFound => CriError::ImageNotFound {
                    reference: name.clone(),
                },
                _ => self.unavailable_or("Images.Get", &name, s),
            })?
            .into_inner()
            .image
            .ok_or_else(|| CriError::ImageNotFound {
                reference: name.clone(),
            })?;
        let target = record
            .target
            .ok_or_else(|| CriError::content(&name, "image record has no target"))?;
        self.resolve_local(&name, &target.media_type, &target.digest)
            .await
    }

    /// Reads a stored image's manifest (through its index) and config.
    pub(crate) async fn resolve_local(
        &self,
        name: &str,
        media_type: &str,
        digest: &str,
    ) -> Result<Image> {
        let top = self.read_blob(digest, MAX_DOC).await?;
        let manifest_digest = if is_index(media_type, &top) {
            let index: Index = parse_json("image index", &top)?;
            let platform = Platform::host();
            index
                .select(&platform)
                .map(|d| d.digest.clone())
                .ok_or_else(|| CriError::NoMatchingPlatform {
                    reference: name.to_string(),
                    platform: platform.to_string(),
                })?
        } else {
            digest.to_string()
        };
        let manifest_bytes = if manifest_digest == digest {
            top
        } else {
            self.read_blob(&manifest_digest, MAX_DOC).await?
        };
        let manifest: Manifest = parse_json("image manifest", &manifest_bytes)?;
        let config_bytes = self.read_blob(&manifest.config.digest, MAX_DOC).await?;
        let config: ConfigFile = parse_json("image config", &config_bytes)?;
        let chain = chain_ids(&config.rootfs.diff_ids);
        Ok(Image {
            name: name.to_string(),
            digest: digest.to_string(),
            manifest_digest,
            config_digest: manifest.config.digest.clone(),
            config: config.config.unwrap_or_default(),
            chain_id: chain.last().cloned().unwrap_or_default(),
            size: manifest.layers.iter().map(|l| l.size).sum(),
        })
    }

    /// Removes an image record; its content and snapshots go to the GC.
    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        let name = ImageRef::parse(reference)?.to_string();
        match self
            .images()
            .delete(self.req(DeleteImageRequest {
                name: name.clone(),
                sync: false,
                target: None,
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(self.unavailable_or("Images.Delete", &name, s)),
        }
    }
}

/// Shares one in-flight result between callers.
pub(crate) type SharedResult<T> = std::result::Result<T, Arc<CriError>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_follow_the_spec() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0], a);
        let expected = format!(
            "sha256:{}",
            hex::encode(Sha256::digest(format!("{a} {b}").as_bytes()))
        );
        assert_eq!(ids[1], expected);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn picks_the_host_platform() {
        let index: Index = serde_json::from_str(
            r#"{"manifests":[
            {"digest":"sha256:1","size":1,"platform":{"architecture":"arm64","os":"linux"}},
            {"digest":"sha256:2","size":1,"platform":{"architecture":"amd64","os":"linux"}},
            {"digest":"sha256:3","size":1,"platform":{"architecture":"amd64","os":"windows"}}]}"#,
        )
        .unwrap();
        let amd = Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        };
        assert_eq!(index.select(&amd).unwrap().digest, "sha256:2");
        let s390 = Platform {
            architecture: "s390x".into(),
            ..amd
        };
        assert!(index.select(&s390).is_none());
    }

    #[test]
    fn image_config_tolerates_nulls() {
        let c: ConfigFile = serde_json::from_str(
            r#"{"config":{"Env":null,"Cmd":["sh"],"Entrypoint":null},"rootfs":{"type":"layers","diff_ids":[]}}"#,
        )
        .unwrap();
        let cfg = c.config.unwrap();
        assert_eq!(cfg.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(cfg.env, None);
    }
}
