//! Creating a container: validate, build the spec, prepare the rootfs
//! snapshot on the image's top chain id, register the container.

use std::collections::HashMap;

use containerd_client::services::v1::container::Runtime;
use containerd_client::services::v1::snapshots::PrepareSnapshotRequest;
use containerd_client::services::v1::{Container, CreateContainerRequest};

use crate::client::{Cri, RUNTIME, SNAPSHOTTER};
use crate::error::{CriError, Result};
use crate::image::Image;
use crate::spec::{build_spec, user_of, ContainerConfig};
use crate::user::{needs_lookup, UserDb};

/// type_url of a runtime spec inside an `Any`, as containerd's clients use.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

impl Cri {
    /// Creates the container `config.id` from `image`. Nothing is left
    /// behind when this fails.
    pub async fn create_container(&self, image: &Image, config: &ContainerConfig) -> Result<()> {
        // Everything that can be checked without containerd, first.
        let named_user = needs_lookup(user_of(&image.config, config));
        if !named_user {
            build_spec(self.namespace(), &image.config, config, &UserDb::default())?;
        }
        if image.chain_id.is_empty() {
            return Err(CriError::content(&image.name, "image has no layers"));
        }
        // Until the container record references the snapshot, only a lease
        // keeps the garbage collector off it.
        let lease = self.lease(std::time::Duration::from_secs(300)).await?;
        let result = self
            .create_leased(image, config, named_user, &lease.id)
            .await;
        lease.release().await;
        result
    }

    async fn create_leased(
        &self,
        image: &Image,
        config: &ContainerConfig,
        named_user: bool,
        lease: &str,
    ) -> Result<()> {
        let id = config.id.clone();
        let mounts = self
            .snapshots()
            .prepare(self.req_leased(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.to_string(),
                    key: id.clone(),
                    parent: image.chain_id.clone(),
                    // What tells a replica's snapshot whose container was
                    // never made (see `remove_orphan_snapshots`).
                    labels: HashMap::from([(crate::labels::INSTANCE.to_string(), id.clone())]),
                },
                lease,
            ))
            .await
            .map_err(|s| match s.code() {
                tonic::Code::AlreadyExists => CriError::AlreadyExists {
                    kind: "container",
                    id: id.clone(),
                },
                _ => self.unavailable_or("Snapshots.Prepare", &id, s),
            })?
            .into_inner()
            .mounts;
        // A user given by name is looked up in the image's own files.
        let users = if named_user {
            let layers = crate::rootfs::layer_dirs(&mounts);
            tokio::task::spawn_blocking(move || UserDb::read(&layers))
                .await
                .unwrap_or_else(|e| {
                    Err(CriError::InvalidConfig {
                        field: "image",
                        reason: format!("reading the account files failed: {e}"),
                    })
                })
        } else {
            Ok(UserDb::default())
        };
        let spec_json = match users
            .and_then(|users| build_spec(self.namespace(), &image.config, config, &users))
            .and_then(|spec| {
                serde_json::to_vec(&spec).map_err(|e| CriError::InvalidConfig {
                    field: "runtime spec",
                    reason: e.to_string(),
                })
            }) {
            Ok(j) => j,
            Err(e) => {
                self.remove_snapshot(&id).await;
                return Err(e);
            }
        };
        let container = Container {
            id: id.clone(),
            labels: config.labels.clone(),
            image: image.name.clone(),
            runtime: Some(Runtime {
                name: RUNTIME.to_string(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.to_string(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.to_string(),
            snapshot_key: id.clone(),
            created_at: None,
            updated_at: None,
            extensions: HashMap::new(),
            sandbox: String::new(),
        };
        if let Err(s) = self
            .containers()
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
        {
            self.remove_snapshot(&id).await;
            return Err(self.unavailable_or("Containers.Create", &id, s));
        }
        Ok(())
    }
}
