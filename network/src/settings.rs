//! How a node's network is set up, and what follows from that before any
//! link is touched: whether the settings are valid, and the MTU and the
//! overlay's end for the link the node reaches the others on. Pure, so
//! `NodeNetwork::setup` only acts on what these decide.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;
use crate::links::Underlay;
use crate::vxlan::{self, Vtep};
use crate::Backend;

/// How the node's network is set up.
#[derive(Debug, Clone)]
pub struct NetworkSettings {
    /// Bridge name (at most 15 characters).
    pub bridge: String,
    /// The cluster's subnet, like `10.88.0.0/16`.
    pub subnet: String,
    /// Which /24 of it this node takes.
    pub node_index: u32,
    /// Where replica namespaces are mounted.
    pub netns_dir: PathBuf,
    /// TCP ports of the host that replicas may reach on the bridge address
    /// besides DNS (the ingress); every other host port is closed to them.
    pub open_ports: Vec<u16>,
    /// How replicas reach those of other nodes.
    pub backend: Backend,
    /// UDP port of the VXLAN overlay.
    pub vxlan_port: u16,
    /// The node's address toward the other nodes, if known: the overlay's
    /// local end, and the link whose MTU the replicas' follows.
    pub underlay: Option<Ipv4Addr>,
}

/// The smallest MTU an IPv4 host must accept.
const MIN_MTU: u32 = 576;

impl NetworkSettings {
    /// The cluster's subnet and this node's /24 of it, once every setting
    /// is known to be valid.
    pub fn validate(&self) -> Result<(Ipv4Net, Ipv4Net)> {
        let bridge = &self.bridge;
        if bridge.is_empty()
            || bridge.len() > 15
            || !bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NetworkError::InvalidConfig {
                field: "network.bridge",
                reason: format!(
                    "{bridge:?} is not an interface name (at most 15 letters, digits, '-', '_')"
                ),
            });
        }
        if self.backend == Backend::Vxlan && self.vxlan_port == 0 {
            return Err(NetworkError::InvalidConfig {
                field: "network.vxlan_port",
                reason: "0 is not a UDP port".into(),
            });
        }
        let cluster = Ipv4Net::parse(&self.subnet)?;
        Ok((cluster, cluster.node_slice(self.node_index)?))
    }

    /// The MTU of the bridge and the replicas' links, and for the `vxlan`
    /// backend this node's end of the overlay, on the link `underlay`:
    /// VXLAN takes its headers off the link's MTU.
    pub fn overlay(&self, underlay: &Underlay) -> (u32, Option<Vtep>) {
        match self.backend {
            Backend::HostGw => (underlay.mtu, None),
            Backend::Vxlan => {
                let mtu = underlay.mtu.saturating_sub(vxlan::OVERHEAD).max(MIN_MTU);
                let vtep = Vtep {
                    name: vxlan::device_name(&self.bridge),
                    port: self.vxlan_port,
                    local: underlay.address,
                    dev: underlay.index,
                    mtu,
                };
                (mtu, Some(vtep))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(backend: Backend) -> NetworkSettings {
        NetworkSettings {
            bridge: "orca0".into(),
            subnet: "10.88.0.0/16".into(),
            node_index: 2,
            netns_dir: "/run/orca/netns".into(),
            open_ports: vec![8080],
            backend,
            vxlan_port: 8472,
            underlay: None,
        }
    }

    fn field(s: &NetworkSettings) -> &'static str {
        match s.validate() {
            Err(NetworkError::InvalidConfig { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn valid_settings_give_the_nodes_slice() {
        let (cluster, node) = settings(Backend::Vxlan).validate().unwrap();
        assert_eq!(cluster, Ipv4Net::parse("10.88.0.0/16").unwrap());
        assert_eq!(node, Ipv4Net::parse("10.88.2.0/24").unwrap());
    }

    #[test]
    fn bad_settings_name_their_field() {
        for bridge in ["", "a-bridge-too-long", "orca 0", "orca0;", "ørca"] {
            let s = NetworkSettings {
                bridge: bridge.into(),
                ..settings(Backend::Vxlan)
            };
            assert_eq!(field(&s), "network.bridge", "{bridge:?}");
        }
        let s = NetworkSettings {
            vxlan_port: 0,
            ..settings(Backend::Vxlan)
        };
        assert_eq!(field(&s), "network.vxlan_port");
        // Port 0 is no matter without the overlay.
        let s = NetworkSettings {
            vxlan_port: 0,
            ..settings(Backend::HostGw)
        };
        assert!(s.validate().is_ok());
        let s = NetworkSettings {
            node_index: 256,
            ..settings(Backend::Vxlan)
        };
        assert!(s.validate().is_err(), "a /16 has 256 node slices");
    }

    #[test]
    fn the_overlay_takes_its_headers_off_the_links_mtu() {
        let link = Underlay {
            index: Some(2),
            address: Some(Ipv4Addr::new(192, 168, 1, 10)),
            mtu: 1500,
        };
        let (mtu, vtep) = settings(Backend::Vxlan).overlay(&link);
        assert_eq!(mtu, 1450);
        let vtep = vtep.unwrap();
        assert_eq!(
            (
                vtep.name.as_str(),
                vtep.port,
                vtep.local,
                vtep.dev,
                vtep.mtu
            ),
            ("orca0.vx", 8472, link.address, Some(2), 1450)
        );
        assert_eq!(settings(Backend::HostGw).overlay(&link), (1500, None));
        // Never below what IPv4 requires.
        let tiny = Underlay { mtu: 600, ..link };
        assert_eq!(settings(Backend::Vxlan).overlay(&tiny).0, 576);
    }
}
