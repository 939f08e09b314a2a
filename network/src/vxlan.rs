//! The VXLAN overlay, programmed by orca the way flannel does it: one
//! VXLAN device per node (VNI 1, learning off), with the node's /24
//! network address on it, and for each peer node, in this order:
//!
//! 1. a neighbour entry: the peer's /24 network address → the peer's VTEP MAC;
//! 2. an FDB entry: that MAC → the peer's node address;
//! 3. an onlink route to the peer's /24 via its network address, through
//!    the device (see [`crate::peers`]).
//!
//! So the kernel never has to ARP across the overlay. A VTEP's MAC is fixed
//! by its node's /24 ([`vtep_mac`]), so a node needs nothing but the node
//! list to reach its peers, and a restarted node's device comes back the
//! same. Entries of peers that left are deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::{InfoData, InfoVxlan, LinkAttribute, LinkInfo, LinkMessage};
use rtnetlink::packet_route::neighbour::{NeighbourAttribute, NeighbourFlags, NeighbourMessage};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{Handle, LinkVxlan};
use sha2::{Digest, Sha256};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;
use crate::links;
use crate::peers::{self, Hop, Peer};

/// The VXLAN network identifier of the overlay.
pub const VNI: u32 = 1;
/// What VXLAN adds to a packet (outer IPv4, UDP, VXLAN and Ethernet
/// headers): the overlay's MTU is the node link's less this.
pub const OVERHEAD: u32 = 50;

/// This node's end of the overlay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vtep {
    /// The device's name.
    pub name: String,
    /// UDP port of the overlay, the same on every node.
    pub port: u16,
    /// The node's address on the network the nodes share, if known.
    pub local: Option<Ipv4Addr>,
    /// The link that holds it.
    pub dev: Option<u32>,
    pub mtu: u32,
}

/// The VXLAN device's name for bridge `bridge` (at most 15 bytes).
pub fn device_name(bridge: &str) -> String {
    if bridge.len() <= 12 {
        format!("{bridge}.vx")
    } else {
        format!(
            "ovx{}",
            &hex::encode(Sha256::digest(bridge.as_bytes()))[..10]
        )
    }
}

/// The VTEP MAC of the node whose replicas are in `subnet` (its /24).
pub fn vtep_mac(subnet: Ipv4Net) -> [u8; 6] {
    let [a, b, c, _] = subnet.network().octets();
    [0x0e, 0x6f, 0x76, a, b, c]
}

/// True if the existing device `link` is what `vtep` asks for.
fn same_device(link: &LinkMessage, vtep: &Vtep, mac: [u8; 6]) -> bool {
    let mut info = Vec::new();
    let (mut address, mut mtu) = (None, None);
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(m) => address = Some(m.as_slice()),
            LinkAttribute::Mtu(m) => mtu = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                for i in infos {
                    if let LinkInfo::Data(InfoData::Vxlan(v)) = i {
                        info.extend(v.iter().cloned());
                    }
                }
            }
            _ => {}
        }
    }
    let has = |want: &InfoVxlan| info.contains(want);
    address == Some(&mac[..])
        && mtu == Some(vtep.mtu)
        && has(&InfoVxlan::Id(VNI))
        && has(&InfoVxlan::Port(vtep.port))
        && has(&InfoVxlan::Learning(false))
        && vtep.local.is_none_or(|l| has(&InfoVxlan::Local(l)))
        && vtep.dev.is_none_or(|d| has(&InfoVxlan::Link(d)))
}

/// The device as `vtep` asks, made anew if it differs, up, with `own`'s
/// network address: its index.
async fn ensure(handle: &Handle, vtep: &Vtep, own: Ipv4Net) -> Result<u32> {
    let mac = vtep_mac(own);
    let index = match links::link(handle, &vtep.name).await? {
        Some(link) if same_device(&link, vtep, mac) => link.header.index,
        existing => {
            if existing.is_some() {
                tracing::info!(device = %vtep.name, "the overlay's settings changed: device made anew");
                links::delete(handle, &vtep.name).await?;
            }
            let mut builder = LinkVxlan::new(&vtep.name, VNI)
                .port(vtep.port)
                .learning(false)
                .mtu(vtep.mtu)
                .address(mac.to_vec());
            if let Some(local) = vtep.local {
                builder = builder.local(local);
            }
            if let Some(dev) = vtep.dev {
                builder = builder.dev(dev);
            }
            handle
                .link()
                .add(builder.build())
                .execute()
                .await
                .map_err(|e| NetworkError::netlink("add vxlan device", &vtep.name, e))?;
            links::index_of(handle, &vtep.name).await?.ok_or_else(|| {
                NetworkError::netlink("add vxlan device", &vtep.name, "not found after creation")
            })?
        }
    };
    links::ensure_address(handle, index, &vtep.name, own.network(), 32).await?;
    links::set_up(handle, index, &vtep.name).await?;
    Ok(index)
}

/// Makes the overlay exactly `peers` (less `own`, this node's /24): the
/// device, then each peer's neighbour, FDB entry and route; stale entries
/// deleted. With no peer, no device (and no UDP port open).
pub async fn sync(handle: &Handle, vtep: &Vtep, own: Ipv4Net, peers: &[Peer]) -> Result<()> {
    let mut wanted: BTreeMap<Ipv4Addr, (Ipv4Net, Ipv4Addr)> = BTreeMap::new();
    for p in peers {
        let net = Ipv4Net::parse(&p.subnet)?;
        if net.network() != own.network() {
            wanted.insert(net.network(), (net, p.address));
        }
    }
    if wanted.is_empty() {
        remove(handle, &vtep.name).await?;
        return peers::sync_routes(handle, &BTreeMap::new()).await;
    }
    let index = ensure(handle, vtep, own).await?;
    for (gateway, (net, address)) in &wanted {
        let mac = vtep_mac(*net);
        handle
            .neighbours()
            .add(index, IpAddr::V4(*gateway))
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(|e| NetworkError::netlink("add overlay neighbour", net.to_string(), e))?;
        handle
            .neighbours()
            .add_bridge(index, &mac)
            .destination(IpAddr::V4(*address))
            .flags(NeighbourFlags::Own)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetworkError::netlink("add overlay fdb entry", format!("{net} at {address}"), e)
            })?;
    }
    let routes = wanted
        .keys()
        .map(|gateway| {
            (
                *gateway,
                Hop {
                    via: *gateway,
                    dev: Some(index),
                },
            )
        })
        .collect();
    peers::sync_routes(handle, &routes).await?;
    let gateways: BTreeSet<Ipv4Addr> = wanted.keys().copied().collect();
    let macs: BTreeSet<[u8; 6]> = wanted.values().map(|(net, _)| vtep_mac(*net)).collect();
    delete_stale(handle, index, &gateways, &macs).await
}

/// Deletes the device's neighbour entries of other addresses than
/// `gateways`, and its FDB entries of other MACs than `macs`.
async fn delete_stale(
    handle: &Handle,
    index: u32,
    gateways: &BTreeSet<Ipv4Addr>,
    macs: &BTreeSet<[u8; 6]>,
) -> Result<()> {
    let mut stale: Vec<NeighbourMessage> = Vec::new();
    for family in [AddressFamily::Inet, AddressFamily::Bridge] {
        let mut entries = handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        while let Some(msg) = entries
            .try_next()
            .await
            .map_err(|e| NetworkError::netlink("list overlay entries", index.to_string(), e))?
        {
            if msg.header.ifindex != index {
                continue;
            }
            let keep = match family {
                AddressFamily::Inet => destination(&msg).is_some_and(|d| gateways.contains(&d)),
                _ => link_address(&msg).is_some_and(|m| macs.contains(&m)),
            };
            if !keep {
                stale.push(msg);
            }
        }
    }
    for msg in stale {
        if let Err(e) = handle.neighbours().del(msg).execute().await {
            // Gone already (the kernel ages and flushes entries too).
            tracing::debug!(error = %e, "delete stale overlay entry");
        }
    }
    Ok(())
}

fn destination(msg: &NeighbourMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(
            rtnetlink::packet_route::neighbour::NeighbourAddress::Inet(ip),
        ) => Some(*ip),
        _ => None,
    })
}

fn link_address(msg: &NeighbourMessage) -> Option<[u8; 6]> {
    msg.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
        _ => None,
    })
}

/// Deletes the device (and with it its entries and routes) if it exists.
pub async fn remove(handle: &Handle, name: &str) -> Result<()> {
    links::delete(handle, name).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vteps_mac_is_fixed_by_its_subnet_and_locally_administered() {
        let a = vtep_mac(Ipv4Net::parse("10.88.1.0/24").unwrap());
        let b = vtep_mac(Ipv4Net::parse("10.88.2.0/24").unwrap());
        assert_eq!(a, [0x0e, 0x6f, 0x76, 10, 88, 1]);
        assert_ne!(a, b);
        // Unicast, locally administered.
        assert_eq!(a[0] & 0b11, 0b10);
    }

    #[test]
    fn device_names_fit_an_interface_name() {
        assert_eq!(device_name("orca0"), "orca0.vx");
        let long = device_name("orca-bridge-lab");
        assert!(long.len() <= 15 && long.starts_with("ovx"), "{long}");
        assert_ne!(long, device_name("orca-bridge-la2"));
    }
}
