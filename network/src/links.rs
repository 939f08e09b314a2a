//! Link, address and route operations over rtnetlink (no `ip` command).

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkBridge, LinkUnspec, LinkVeth, RouteMessageBuilder};

use crate::error::{NetworkError, Result};
use crate::ipam::Ipv4Net;

/// Link `name`, if it exists.
pub async fn link(handle: &Handle, name: &str) -> Result<Option<LinkMessage>> {
    let mut links = handle.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(found) => Ok(found),
        // The kernel answers ENODEV for a name that does not exist.
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(NetworkError::netlink("get link", name, e)),
    }
}

/// The index of link `name`, if it exists.
pub async fn index_of(handle: &Handle, name: &str) -> Result<Option<u32>> {
    Ok(link(handle, name).await?.map(|l| l.header.index))
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

/// The bridge `name`, created if missing, up, with `subnet`'s gateway on it.
pub async fn ensure_bridge(handle: &Handle, name: &str, subnet: Ipv4Net) -> Result<u32> {
    let (gateway, prefix) = (subnet.gateway(), subnet.prefix);
    let existing = index_of(handle, name).await?;
    // Before anything is made: the subnet must be ours alone.
    let overlay = crate::vxlan::device_name(name);
    if let Some((link, address)) = other_holder(handle, existing, &overlay, subnet).await? {
        return Err(NetworkError::SubnetInUse {
            subnet: subnet.to_string(),
            link,
            address,
        });
    }
    let index = match existing {
        Some(i) => i,
        None => {
            handle
                .link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(|e| NetworkError::netlink("add bridge", name, e))?;
            index_of(handle, name).await?.ok_or_else(|| {
                NetworkError::netlink("add bridge", name, "not found after creation")
            })?
        }
    };
    ensure_address(handle, index, name, gateway, prefix).await?;
    set_up(handle, index, name).await?;
    Ok(index)
}

/// A link other than `index` (the bridge, if it exists) with an IPv4
/// address inside `subnet`: its name, and that address. The overlay
/// device `overlay` holds the subnet's network address as a /32 by design.
async fn other_holder(
    handle: &Handle,
    index: Option<u32>,
    overlay: &str,
    subnet: Ipv4Net,
) -> Result<Option<(String, String)>> {
    let mut addrs = handle.address().get().execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| NetworkError::netlink("get address", "all links", e))?
    {
        if Some(msg.header.index) == index {
            continue;
        }
        // An address inside our subnet clashes with the bridge's route. A
        // wider network around ours (a LAN's /8) does not: ours is more
        // specific.
        let Some(theirs) = ipv4_of(&msg).filter(|ip| subnet.contains(*ip) && !ip.is_loopback())
        else {
            continue;
        };
        let mut links = handle.link().get().match_index(msg.header.index).execute();
        let name = match links.try_next().await {
            Ok(Some(link)) => name_of(&link),
            _ => None,
        };
        if name.as_deref() == Some(overlay)
            && theirs == subnet.network()
            && msg.header.prefix_len == 32
        {
            continue;
        }
        let name = name.unwrap_or_else(|| format!("#{}", msg.header.index));
        return Ok(Some((name, format!("{theirs}/{}", msg.header.prefix_len))));
    }
    Ok(None)
}

/// The IPv4 address an address message carries, if any.
fn ipv4_of(msg: &AddressMessage) -> Option<Ipv4Addr> {
    msg.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(IpAddr::V4(v)) => Some(*v),
        _ => None,
    })
}

/// A link's name.
fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

async fn has_address(handle: &Handle, index: u32, ip: Ipv4Addr) -> Result<bool> {
    let mut addrs = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute();
    while let Some(msg) = addrs
        .try_next()
        .await
        .map_err(|e| NetworkError::netlink("get address", index.to_string(), e))?
    {
        if ipv4_of(&msg) == Some(ip) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Hands the IPv4 traffic that bridge `index` forwards between its ports
/// to the ip family's netfilter hooks (with conntrack), for this bridge
/// only: project isolation lives there. Over netlink, in this process's
/// network namespace (sysfs may show another's).
pub async fn call_iptables(handle: &Handle, index: u32, name: &str) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoBridge, InfoData, InfoKind, LinkInfo};
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::NfCallIpTables(true)])),
    ]));
    handle
        .link()
        .set(msg)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("enable bridge netfilter", name, e))
}

/// Sets link `index` up.
pub async fn set_up(handle: &Handle, index: u32, name: &str) -> Result<()> {
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("set up", name, e))
}

/// Creates the veth pair `host` / `peer` (both of `mtu`) with `host` in
/// `bridge` and up, and `peer`, with the hardware address `peer_mac`, made
/// directly inside the namespace open as `netns` (moving a link between
/// namespaces afterwards costs an RCU grace period).
pub async fn add_veth_into(
    handle: &Handle,
    host: &str,
    bridge: u32,
    peer: &str,
    peer_mac: [u8; 6],
    mtu: u32,
    netns: &std::fs::File,
) -> Result<()> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::LinkMessageBuilder;
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.to_string())
        .address(peer_mac.to_vec())
        .mtu(mtu)
        .setns_by_fd(netns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .controller(bridge)
        .mtu(mtu)
        .up()
        .build();
    handle
        .link()
        .add(msg)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("add veth", host, e))
}

/// Inside a replica's namespace: `lo` up, the veth end renamed `eth0` with
/// its address, and the default route through the gateway.
pub async fn configure_inside(
    handle: &Handle,
    peer: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    if let Some(lo) = index_of(handle, "lo").await? {
        set_up(handle, lo, "lo").await?;
    }
    let index = index_of(handle, peer)
        .await?
        .ok_or_else(|| NetworkError::netlink("find", peer, "not in the namespace"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .name("eth0".to_string())
                .up()
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("rename", peer, e))?;
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("add address", format!("eth0 {ip}"), e))?;
    handle
        .route()
        .add(
            RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("add default route", format!("via {gateway}"), e))?;
    Ok(())
}

/// The hardware address of link `name`, if it exists.
pub async fn mac_of(handle: &Handle, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(link(handle, name).await?.and_then(|link| {
        link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Address(mac) => Some(mac),
            _ => None,
        })
    }))
}

/// Sets the hardware address of link `name`.
pub async fn set_mac(handle: &Handle, name: &str, mac: [u8; 6]) -> Result<()> {
    let index = index_of(handle, name)
        .await?
        .ok_or_else(|| NetworkError::netlink("find", name, "no such link"))?;
    handle
        .link()
        .set(
            LinkUnspec::new_with_index(index)
                .address(mac.to_vec())
                .build(),
        )
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("set address", name, e))
}

/// Deletes link `name` if it exists.
pub async fn delete(handle: &Handle, name: &str) -> Result<()> {
    if let Some(index) = index_of(handle, name).await? {
        match handle.link().del(index).execute().await {
            Ok(()) => {}
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => {}
            Err(e) => return Err(NetworkError::netlink("delete link", name, e)),
        }
    }
    Ok(())
}

/// Names of the links plugged into bridge `bridge`.
pub async fn ports_of(handle: &Handle, bridge: u32) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut links = handle.link().get().execute();
    while let Some(link) = links
        .try_next()
        .await
        .map_err(|e| NetworkError::netlink("list links", bridge.to_string(), e))?
    {
        let on_bridge = link
            .attributes
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge));
        if on_bridge {
            out.extend(name_of(&link));
        }
    }
    Ok(out)
}

/// Puts `ip/prefix` on link `index` (named `name`) unless it is there.
pub async fn ensure_address(
    handle: &Handle,
    index: u32,
    name: &str,
    ip: Ipv4Addr,
    prefix: u8,
) -> Result<()> {
    if has_address(handle, index, ip).await? {
        return Ok(());
    }
    handle
        .address()
        .add(index, IpAddr::V4(ip), prefix)
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("add address", format!("{name} {ip}/{prefix}"), e))
}

/// The MTU of link `index`.
async fn mtu_of(handle: &Handle, index: u32) -> Result<Option<u32>> {
    let mut links = handle.link().get().match_index(index).execute();
    match links.try_next().await {
        Ok(Some(link)) => Ok(link.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(m),
            _ => None,
        })),
        Ok(None) => Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
        Err(e) => Err(NetworkError::netlink("get link", index.to_string(), e)),
    }
}

/// Sets the MTU of link `name` in `handle`'s namespace, unless it has it.
pub async fn set_mtu(handle: &Handle, name: &str, mtu: u32) -> Result<()> {
    let Some(index) = index_of(handle, name).await? else {
        return Ok(());
    };
    if mtu_of(handle, index).await? == Some(mtu) {
        return Ok(());
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).mtu(mtu).build())
        .execute()
        .await
        .map_err(|e| NetworkError::netlink("set mtu", name, e))
}

/// The link the node reaches the other nodes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Underlay {
    /// The link's index, if found.
    pub index: Option<u32>,
    /// The node's address on it, if known.
    pub address: Option<Ipv4Addr>,
    pub mtu: u32,
}

/// The MTU assumed when no link tells.
pub const DEFAULT_MTU: u32 = 1500;

/// The link that holds `address` (the node's address toward the other
/// nodes), else the one of the default route; its MTU, else 1500.
pub async fn underlay(handle: &Handle, address: Option<Ipv4Addr>) -> Result<Underlay> {
    let mut index = None;
    if let Some(want) = address {
        let mut addrs = handle.address().get().execute();
        while let Some(msg) = addrs
            .try_next()
            .await
            .map_err(|e| NetworkError::netlink("get address", "all links", e))?
        {
            if ipv4_of(&msg) == Some(want) {
                index = Some(msg.header.index);
                break;
            }
        }
    }
    if index.is_none() {
        index = default_route_link(handle).await?;
    }
    let mtu = match index {
        Some(i) => mtu_of(handle, i).await?.unwrap_or(DEFAULT_MTU),
        None => DEFAULT_MTU,
    };
    Ok(Underlay {
        index,
        address,
        mtu,
    })
}

/// The output link of the main table's IPv4 default route, if any.
async fn default_route_link(handle: &Handle) -> Result<Option<u32>> {
    use rtnetlink::packet_route::route::RouteAttribute;
    let mut routes = handle
        .route()
        .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
        .execute();
    while let Some(msg) = routes
        .try_next()
        .await
        .map_err(|e| NetworkError::netlink("list routes", "default", e))?
    {
        if msg.header.destination_prefix_length != 0 {
            continue;
        }
        let oif = msg.attributes.iter().find_map(|a| match a {
            RouteAttribute::Oif(i) => Some(*i),
            _ => None,
        });
        if oif.is_some() {
            return Ok(oif);
        }
    }
    Ok(None)
}
