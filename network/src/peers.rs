//! Routes to the other nodes' replicas: each peer's /24, either via the
//! peer's node address (the `host-gw` backend, for nodes on one L2
//! segment) or onlink through the VXLAN device (see [`crate::vxlan`]).
//! orca's routes carry a protocol number of their own ([`PROTOCOL`]), so
//! that those of a peer that left are found and deleted, also after a
//! restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// The routing protocol number orca's peer routes carry.
pub const PROTOCOL: u8 = 111;

/// How replicas of different nodes reach each other (`[network] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// A VXLAN overlay: nodes anywhere IP reaches.
    #[default]
    Vxlan,
    /// Plain routes via each peer's address: nodes on one L2 segment.
    HostGw,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Vxlan => "vxlan",
            Backend::HostGw => "host-gw",
        }
    }

    /// The backend with its port, as nodes compare it: every node of a
    /// cluster must say the same.
    pub fn describe(self, vxlan_port: u16) -> String {
        match self {
            Backend::Vxlan => format!("vxlan on UDP {vxlan_port}"),
            Backend::HostGw => "host-gw".to_string(),
        }
    }
}

/// Another node: where its replicas are, and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Peer {
    pub node: String,
    /// Its address on the network the nodes share.
    pub address: Ipv4Addr,
    /// Its replicas' /24, like `10.88.1.0/24`.
    pub subnet: String,
}

/// Where a route to a peer's /24 goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hop {
    pub via: Ipv4Addr,
    /// Through this link, onlink (the overlay); else wherever `via` is.
    pub dev: Option<u32>,
}

/// The peer routes there are now: destination /24 → where it goes.
async fn current(handle: &Handle) -> Result<BTreeMap<Ipv4Addr, (Hop, RouteMessage)>> {
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
        let (mut dst, mut via, mut oif) = (None, None, None);
        for a in &msg.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        if let (Some(dst), Some(via)) = (dst, via) {
            out.insert(dst, (Hop { via, dev: oif }, msg));
        }
    }
    Ok(out)
}

/// True if the route there now goes where `want` says.
fn same(have: Hop, want: Hop) -> bool {
    have.via == want.via && want.dev.is_none_or(|d| have.dev == Some(d))
}

/// Makes orca's peer routes exactly `wanted` (destination /24 → hop): adds
/// or changes what is missing or moved, deletes what is stale.
pub(crate) async fn sync_routes(handle: &Handle, wanted: &BTreeMap<Ipv4Addr, Hop>) -> Result<()> {
    let have = current(handle).await?;
    for (dst, hop) in wanted {
        if have.get(dst).is_some_and(|(h, _)| same(*h, *hop)) {
            continue;
        }
        let mut route = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(*dst, 24)
            .gateway(hop.via)
            .protocol(RouteProtocol::Other(PROTOCOL));
        if let Some(dev) = hop.dev {
            route = route.output_interface(dev).onlink();
        }
        handle
            .route()
            .add(route.build())
            .replace()
            .execute()
            .await
            .map_err(|e| {
                NetworkError::netlink("add peer route", format!("{dst}/24 via {}", hop.via), e)
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

/// The `host-gw` backend: makes the peer routes exactly `peers` (less
/// `own`, this node's /24), each via the peer's node address.
pub async fn sync(handle: &Handle, own: Ipv4Net, peers: &[Peer]) -> Result<()> {
    let mut wanted = BTreeMap::new();
    for p in peers {
        let net = Ipv4Net::parse(&p.subnet)?;
        if net.network() != own.network() {
            wanted.insert(
                net.network(),
                Hop {
                    via: p.address,
                    dev: None,
                },
            );
        }
    }
    sync_routes(handle, &wanted).await
}
