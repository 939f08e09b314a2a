//! `cri`: a typed async API over containerd's gRPC services, for orca.
//!
//! Everything runs in one containerd namespace and carries orca's labels.
//! containerd 1.6 has no Transfer service, so pulling and unpacking images
//! is done here, by the client.
//!
//! # Layout
//! - [`client`]: the connection, namespace, version check, reconnect wait.
//! - [`reference`]: image references and their normalisation.
//! - [`registry`]: the OCI distribution client (mirrors, auth, plain HTTP).
//! - `content`: the content store (streamed writes, labels).
//! - [`image`]: pull, unpack, import, local lookup.
//! - [`resources`], [`spec`] and [`user`]: limits, the OCI runtime spec, users.
//! - [`rootfs`]: one file of an image read from its layers, never leaving them.
//! - [`container`]: containers, tasks, stop, exec, listing by label.
//! - [`events`]: task exit and OOM events.
//! - [`metrics`] and [`cgroup`]: resource usage.
//! - [`logs`]: the log shim orca serves as, and reading its files.
//! - [`labels`]: the label keys of the contract.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod cgroup;
pub mod client;
pub mod container;
mod content;
pub mod copyup;
pub mod error;
pub mod events;
pub mod image;
pub mod labels;
pub mod logs;
pub mod metrics;
pub mod reference;
pub mod registry;
pub mod resources;
pub mod rootfs;
pub mod spec;
pub mod user;

pub use client::{ConnectOptions, Cri, Version};
pub use container::{AttachInput, AttachOptions, AttachOutput, Attached, ExecOutput};
pub use error::{CriError, Result};
pub use image::{Image, ImageConfig};
pub use reference::ImageRef;
pub use resources::{memory_reservation, tmpfs_size, CpuLimit, MemoryLimit, Resources};
pub use spec::{BindMount, ContainerConfig, DeviceNode, NetworkMode, TmpfsMount};
