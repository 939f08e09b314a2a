//! The node's network: the bridge with the gateway address, outbound NAT,
//! and for every replica a namespace, a veth pair into the bridge, an
//! address from the IPAM and a default route. Attaching is idempotent, so a
//! restarted orca finds what it made and changes nothing that works.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rtnetlink::Handle;
use sha2::{Digest, Sha256};

use crate::error::{NetworkError, Result};
use crate::ipam::{Ipam, IpamStore, Ipv4Net};
use crate::{links, netns, nft, NetworkSettings};

/// A replica's place on the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// See the module doc.
pub struct NodeNetwork {
    settings: NetworkSettings,
    subnet: Ipv4Net,
    handle: Handle,
    bridge_index: u32,
    store: Arc<dyn IpamStore>,
    ipam: Mutex<Ipam>,
    /// The isolation ruleset last applied, to skip applying it again.
    isolation: tokio::sync::Mutex<String>,
    /// The published ports last applied (rules and ruleset).
    ports: tokio::sync::Mutex<(Vec<crate::ports::PortRule>, String)>,
    /// The port bindings last applied, likewise; held while they change.
    bindings: tokio::sync::Mutex<String>,
    /// What tells a routed hairpin on this bridge.
    hairpin: nft::Hairpin,
    /// The MTU of the bridge and of every replica's veth.
    mtu: u32,
    /// This node's end of the overlay (the `vxlan` backend).
    vtep: Option<crate::vxlan::Vtep>,
    /// Held while the peers change: one list at a time.
    peers: tokio::sync::Mutex<()>,
}

/// The hardware address of the replica at `ip`: fixed by its address, so
/// its port binding needs nothing but the address book.
pub fn replica_mac(ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = ip.octets();
    [0x02, 0x6f, a, b, c, d]
}

/// Host-side veth name of `owner` (interface names are at most 15 bytes).
pub fn host_ifname(owner: &str) -> String {
    format!("ov{}", &hex::encode(Sha256::digest(owner.as_bytes()))[..10])
}

fn peer_ifname(owner: &str) -> String {
    format!("op{}", &hex::encode(Sha256::digest(owner.as_bytes()))[..10])
}

impl NodeNetwork {
    /// Routes to the other nodes' replicas: exactly `peers` (see
    /// [`crate::peers`]).
    pub async fn set_peers(&self, peers: &[crate::Peer]) -> Result<()> {
        let _one = self.peers.lock().await;
        match &self.vtep {
            Some(vtep) => crate::vxlan::sync(&self.handle, vtep, self.subnet, peers).await,
            None => {
                // Left from the vxlan backend, if it ran before.
                let name = crate::vxlan::device_name(&self.settings.bridge);
                crate::vxlan::remove(&self.handle, &name).await?;
                crate::peers::sync(&self.handle, self.subnet, peers).await
            }
        }
    }

    /// The MTU of the bridge and the replicas' links.
    pub fn mtu(&self) -> u32 {
        self.mtu
    }

    /// Brings up the bridge, forwarding and NAT; loads the address book.
    pub async fn setup(settings: NetworkSettings, store: Arc<dyn IpamStore>) -> Result<Self> {
        let (cluster, subnet) = settings.validate()?;
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetworkError::netlink("socket", "host", e))?;
        tokio::spawn(connection);
        let bridge_index = links::ensure_bridge(&handle, &settings.bridge, subnet).await?;
        let underlay = links::underlay(&handle, settings.underlay).await?;
        let (mtu, vtep) = settings.overlay(&underlay);
        links::set_mtu(&handle, &settings.bridge, mtu).await?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").map_err(|e| {
            NetworkError::io("enable forwarding", "/proc/sys/net/ipv4/ip_forward", e)
        })?;
        links::call_iptables(&handle, bridge_index, &settings.bridge).await?;
        nft::apply(&nft::host_script(
            &settings.bridge,
            subnet,
            cluster,
            &settings.open_ports,
            vtep.as_ref().map(|v| v.port),
        ))
        .await?;
        // Isolation as a restarted orca left it, until the control plane
        // applies the current groups: no blip for running replicas. A new
        // node starts with every replica isolated.
        if !nft::exists("ip", &nft::isolation_table(&settings.bridge)).await {
            let empty = std::collections::BTreeMap::new();
            nft::apply(&nft::isolation_script(
                &settings.bridge,
                subnet,
                cluster,
                &empty,
                &[],
            ))
            .await?;
        }
        std::fs::create_dir_all(&settings.netns_dir)
            .map_err(|e| NetworkError::io("create", &settings.netns_dir, e))?;
        let ipam = Ipam::load(subnet, store.as_ref())?;
        let bridge_mac = links::mac_of(&handle, &settings.bridge)
            .await?
            .and_then(|m| <[u8; 6]>::try_from(m).ok())
            .ok_or_else(|| {
                NetworkError::netlink("get address", &settings.bridge, "the bridge has no MAC")
            })?;
        // A bridge takes the lowest MAC of its ports unless one was set for
        // it: set its own, so it stays what the hairpin rule names.
        links::set_mac(&handle, &settings.bridge, bridge_mac).await?;
        let hairpin = nft::Hairpin {
            bridge_mac,
            gateway: subnet.gateway(),
            subnet,
        };
        let network = Self {
            settings,
            subnet,
            handle,
            bridge_index,
            store,
            ipam: Mutex::new(ipam),
            isolation: tokio::sync::Mutex::new(String::new()),
            bindings: tokio::sync::Mutex::new(String::new()),
            ports: tokio::sync::Mutex::new((Vec::new(), String::new())),
            hairpin,
            mtu,
            vtep,
            peers: tokio::sync::Mutex::new(()),
        };
        network.adopt_links().await;
        network.apply_bindings().await?;
        let leases = network.ipam().all().count();
        tracing::info!(bridge = %network.settings.bridge, subnet = %subnet, mtu, leases, backend = network.settings.backend.as_str(), "node network ready");
        Ok(network)
    }

    /// Gives replicas made before their MAC was fixed by their address
    /// that MAC, so their port binding holds (peers re-learn it by ARP),
    /// and their links the node's MTU (both ends).
    async fn adopt_links(&self) {
        let owners: Vec<(String, Ipv4Addr)> =
            self.ipam().all().map(|(o, ip)| (o.clone(), *ip)).collect();
        for (owner, ip) in owners {
            let path = self.netns_path(&owner);
            if !netns::exists(&path) {
                continue;
            }
            let want = replica_mac(ip);
            let result = async {
                links::set_mtu(&self.handle, &host_ifname(&owner), self.mtu).await?;
                let inside = netns::enter(&path)?;
                links::set_mtu(&inside, "eth0", self.mtu).await?;
                match links::mac_of(&inside, "eth0").await? {
                    Some(mac) if mac != want => links::set_mac(&inside, "eth0", want).await,
                    _ => Ok(()),
                }
            }
            .await;
            if let Err(e) = result {
                tracing::warn!(owner, error = %e, "could not fix the replica's MAC or MTU");
            }
        }
    }

    /// Pins every replica's port to its MAC and address (see
    /// [`nft::binding_script`]), from the address book; a no-op when
    /// nothing changed.
    async fn apply_bindings(&self) -> Result<()> {
        let mut last = self.bindings.lock().await;
        let mut bindings: Vec<nft::Binding> = self
            .ipam()
            .all()
            .map(|(owner, ip)| nft::Binding {
                port: host_ifname(owner),
                mac: replica_mac(*ip),
                ip: *ip,
            })
            .collect();
        bindings.sort_by(|a, b| a.port.cmp(&b.port));
        let script = nft::binding_script(&self.settings.bridge, &self.hairpin, &bindings);
        if *last == script {
            return Ok(());
        }
        nft::apply(&script).await?;
        *last = script;
        Ok(())
    }

    /// This node's /24.
    pub fn subnet(&self) -> Ipv4Net {
        self.subnet
    }

    /// The bridge's address (the replicas' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.gateway()
    }

    fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn netns_path(&self, owner: &str) -> PathBuf {
        self.settings.netns_dir.join(owner)
    }

    /// The address of `owner`, if attached.
    pub fn address(&self, owner: &str) -> Option<Ipv4Addr> {
        self.ipam().get(owner)
    }

    /// Gives `owner` a namespace on the bridge; an existing, working one is
    /// kept as it is. Owners are replica ids, each attached and detached by
    /// one worker at a time, so different owners proceed in parallel.
    pub async fn attach(&self, owner: &str) -> Result<Attachment> {
        let path = self.netns_path(owner);
        let host = host_ifname(owner);
        let existing = self.ipam().get(owner);
        if let Some(ip) = existing {
            if netns::exists(&path) && links::index_of(&self.handle, &host).await?.is_some() {
                return Ok(Attachment {
                    netns: path,
                    ip,
                    gateway: self.gateway(),
                });
            }
        }
        let ip = {
            let store = self.store.clone();
            self.ipam().allocate(owner, store.as_ref())?
        };
        // The port is bound before anything runs behind it.
        let built = match self.build(owner, &path, &host, ip).await {
            Ok(()) => self.apply_bindings().await,
            Err(e) => Err(e),
        };
        match built {
            Ok(()) => Ok(Attachment {
                netns: path,
                ip,
                gateway: self.gateway(),
            }),
            Err(e) => {
                self.teardown(owner).await;
                Err(e)
            }
        }
    }

    async fn build(
        &self,
        owner: &str,
        path: &std::path::Path,
        host: &str,
        ip: Ipv4Addr,
    ) -> Result<()> {
        // Leftovers of a crash under the same name go first.
        links::delete(&self.handle, host).await?;
        netns::remove(path)?;
        let inside = netns::create(path)?;
        let peer = peer_ifname(owner);
        let ns_file = std::fs::File::open(path).map_err(|e| NetworkError::io("open", path, e))?;
        links::add_veth_into(
            &self.handle,
            host,
            self.bridge_index,
            &peer,
            replica_mac(ip),
            self.mtu,
            &ns_file,
        )
        .await?;
        links::configure_inside(&inside, &peer, ip, 24, self.gateway()).await
    }

    /// Removes what [`NodeNetwork::attach`] made, logging what will not go.
    async fn teardown(&self, owner: &str) {
        if let Err(e) = links::delete(&self.handle, &host_ifname(owner)).await {
            tracing::warn!(owner, error = %e, "veth removal failed");
        }
        if let Err(e) = netns::remove(&self.netns_path(owner)) {
            tracing::warn!(owner, error = %e, "netns removal failed");
        }
        let store = self.store.clone();
        if let Err(e) = self.ipam().release(owner, store.as_ref()) {
            tracing::warn!(owner, error = %e, "address release failed");
        }
    }

    /// Takes `owner` off the network: namespace and address. Idempotent.
    /// Once the namespace is unmounted and its processes are gone the kernel
    /// destroys it, and with it the veth pair (deleting the veth here would
    /// wait on an RCU grace period for nothing); [`NodeNetwork::sweep`]
    /// removes any veth that outlives its namespace.
    pub async fn detach(&self, owner: &str) -> Result<()> {
        netns::remove(&self.netns_path(owner))?;
        let store = self.store.clone();
        self.ipam().release(owner, store.as_ref())?;
        self.apply_bindings().await
    }

    /// Removes namespaces, veths and addresses whose owner `keep` rejects
    /// (leftovers of replicas that are gone). Returns the owners removed.
    pub async fn sweep(&self, keep: &dyn Fn(&str) -> bool) -> Vec<String> {
        let mut owners: std::collections::BTreeSet<String> =
            self.ipam().all().map(|(o, _)| o.clone()).collect();
        for p in netns::list(&self.settings.netns_dir) {
            if let Some(n) = p.file_name() {
                owners.insert(n.to_string_lossy().into_owned());
            }
        }
        let mut removed = Vec::new();
        for owner in owners {
            if !keep(&owner) {
                if let Err(e) = self.detach(&owner).await {
                    tracing::warn!(owner, error = %e, "sweep failed");
                }
                removed.push(owner);
            }
        }
        match self.stray_veths().await {
            Ok(strays) => {
                for name in strays {
                    if let Err(e) = links::delete(&self.handle, &name).await {
                        tracing::warn!(veth = %name, error = %e, "stray veth removal failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "listing the bridge's ports failed"),
        }
        removed
    }

    /// Veths on the bridge that belong to nobody the IPAM knows.
    pub async fn stray_veths(&self) -> Result<Vec<String>> {
        let known: std::collections::HashSet<String> =
            self.ipam().all().map(|(o, _)| host_ifname(o)).collect();
        Ok(links::ports_of(&self.handle, self.bridge_index)
            .await?
            .into_iter()
            .filter(|n| !known.contains(n))
            .collect())
    }

    /// Applies project isolation for these groups of addresses (see
    /// [`nft::isolation_script`]); a no-op when nothing changed.
    pub async fn set_isolation(
        &self,
        projects: &std::collections::BTreeMap<String, Vec<Ipv4Addr>>,
        internal: &[Ipv4Addr],
    ) -> Result<()> {
        let cluster = Ipv4Net::parse(&self.settings.subnet)?;
        let script = nft::isolation_script(
            &self.settings.bridge,
            self.subnet,
            cluster,
            projects,
            internal,
        );
        let mut last = self.isolation.lock().await;
        if *last == script {
            return Ok(());
        }
        nft::apply(&script).await?;
        *last = script;
        Ok(())
    }

    /// Publishes `rules` on this node, `node` (see [`crate::ports`]); a
    /// no-op when nothing changed. The UDP flows of replicas that left a
    /// port are forgotten once the new rules are in.
    pub async fn set_ports(&self, node: &str, rules: &[crate::ports::PortRule]) -> Result<()> {
        let script = crate::ports::ports_script(&self.settings.bridge, self.subnet, node, rules);
        let mut last = self.ports.lock().await;
        if last.1 == script {
            last.0 = rules.to_vec();
            return Ok(());
        }
        if !rules.is_empty() {
            // Loopback clients of the host reach replicas through the bridge.
            let knob = format!(
                "/proc/sys/net/ipv4/conf/{}/route_localnet",
                self.settings.bridge
            );
            if let Err(e) = std::fs::write(&knob, "1") {
                tracing::warn!(error = %e, "published ports will not answer on loopback");
            }
        }
        nft::apply(&script).await?;
        for (ip, port) in crate::ports::left_udp(&last.0, rules, node) {
            if let Err(e) = crate::ports::forget_udp(ip, port).await {
                tracing::warn!(%ip, port, error = %e, "UDP flows of a replica that left not forgotten");
            }
        }
        *last = (rules.to_vec(), script);
        Ok(())
    }

    /// Removes the bridge and the NAT table (tests; a node keeps them).
    pub async fn destroy(&self) -> Result<()> {
        links::delete(&self.handle, &self.settings.bridge).await?;
        nft::apply(&nft::delete_script(&self.settings.bridge)).await
    }
}
