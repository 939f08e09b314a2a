//! Routes to the other nodes' replicas (the `host-gw` way, for nodes on
//! one L2 segment): each peer's /24 via the peer's node address. orca's
//! routes carry a protocol number of their own ([`PROTOCOL`]), so that
//! those of a peer that left are found and deleted, also after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// The routing protocol number orca's peer routes carry.
pub const PROTOCOL: u8 = 111;

/// Another node: where its replicas are, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub node: String,
    /// Its address on the network the nodes share.
    pub address: Ipv4Addr,
    /// Its replicas' /24, like `10.88.1.0/24`.
    pub subnet: String,
}

/// The peer routes there are now: destination /24 → gateway.
async fn current(
    handle: &Handle,
) -> Result<BTreeMap<Ipv4Addr, (Ipv4Addr, rtnetlink::packet_route::route::RouteMessage)>> {
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    let mut out = BTreeMap::new();
    while let Some(msg) = routes
        .try_next()
        .await
        .map_err(|e| NetworkError::netlink("list routes", "peers", e))?
    {
        if msg.header.protocol != RouteProtocol::Other(PROTOCOL) {
            continue;
        }
        let mut dst = None;
        let mut via = None;
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                _ => {}
            }
        }
        if let (Some(dst), Some(via)) = (dst, via) {
            out.insert(dst, (via, msg));
        }
    }
    Ok(out)
}

/// Makes the peer routes exactly `peers` (less `own`, this node's /24):
/// adds or changes what is missing or moved, deletes what is stale.
pub async fn sync(handle: &Handle, own: Ipv4Net, peers: &[Peer]) -> Result<()> {
    let mut wanted: BTreeMap<Ipv4Addr, Ipv4Addr> = BTreeMap::new();
    for p in peers {
        let net = Ipv4Net::parse(&p.subnet)?;
        if net.network() != own.network() {
            wanted.insert(net.network(), p.address);
        }
    }
    let have = current(handle).await?;
    for (dst, via) in &wanted {
        if have.get(dst).map(|(v, _)| v) == Some(via) {
            continue;
        }
        let route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(*dst, 24)
            .gateway(*via)
            .protocol(RouteProtocol::Other(PROTOCOL))
            .build();
        handle
            .route()
            .add(route)
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetworkError::netlink("add peer route", format!("{dst}/24 via {via}"), e)
            })?;
    }
    for (dst, (_, msg)) in have {
        if !wanted.contains_key(&dst) {
            handle
                .route()
                .del(msg)
                .execute()
                .await
                .map_err(|e| NetworkError::netlink("delete peer route", format!("{dst}/24"), e))?;
        }
    }
    Ok(())
}
