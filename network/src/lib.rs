//! `network`: the node's network, owned by orca (no Docker, no CNI).
//!
//! # Layout
//! - [`ipam`]: subnets and the address book of the node's /24.
//! - [`netns`]: named network namespaces without `ip netns`.
//! - [`links`]: bridge, veth, addresses and routes over rtnetlink.
//! - [`nft`]: nftables rules through one typed call to `nft`.
//! - [`settings`]: how a node's network is set up, checked, and its MTU.
//! - [`node`]: all of it together for replicas: attach, detach, sweep.
//! - [`ports`]: published ports, DNAT in the kernel.
//! - [`proxy`]: the ingress proxy, by Host header to ready replicas.
//! - [`dns`]: service DNS on the bridge address.
//! - [`error`]: the error type, [`NetworkError`].

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

pub mod dns;
pub mod error;
pub mod ipam;
pub mod links;
pub mod netns;
pub mod nft;
pub mod node;
pub mod peers;
pub mod ports;
pub mod proxy;
pub mod settings;
pub mod vxlan;

pub use error::NetworkError;
pub use ipam::{IpamStore, Ipv4Net};
pub use node::{Attachment, NodeNetwork};
pub use peers::{Backend, Peer};
pub use settings::NetworkSettings;
