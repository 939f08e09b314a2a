//! Addresses for replicas out of the node's /24: the gateway takes `.1`,
//! replicas get `.2` to `.254`. Every allocation is saved through an
//! [`IpamStore`] before it is handed out, so an address is never given
//! twice, also across a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::error::{NetworkError, Result};

/// An IPv4 network with its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `10.88.0.0/16`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |r: &str| NetworkError::InvalidConfig {
            field: "subnet",
            reason: format!("{s:?}: {r}"),
        };
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| bad("expected address/prefix"))?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad("bad address"))?;
        let prefix: u8 = p.parse().map_err(|_| bad("bad prefix"))?;
        if !(8..=24).contains(&prefix) {
            return Err(bad("the prefix must be from /8 to /24"));
        }
        let net = Ipv4Net { addr, prefix };
        if net.network() != addr {
            return Err(bad("host bits are set"));
        }
        Ok(net)
    }

    fn mask(self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// The network address.
    pub fn network(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) & self.mask())
    }

    /// True if `ip` is inside.
    pub fn contains(self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.network())
    }

    /// The `index`th /24 inside this network (a node's share).
    pub fn node_slice(self, index: u32) -> Result<Ipv4Net> {
        let count = 1u32 << (24 - u32::from(self.prefix));
        if index >= count {
            return Err(NetworkError::InvalidConfig {
                field: "subnet",
                reason: format!("{self} has {count} node /24s; index {index} is past them"),
            });
        }
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(u32::from(self.network()) + (index << 8)),
            prefix: 24,
        })
    }

    /// `.1` of the network: the bridge's address.
    pub fn gateway(self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network()) + 1)
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Where allocations are kept durably.
pub trait IpamStore: Send + Sync {
    /// Every saved (owner, address).
    fn load(&self) -> std::result::Result<Vec<(String, Ipv4Addr)>, String>;
    /// Saves one; returns only once it is durable.
    fn save(&self, owner: &str, ip: Ipv4Addr) -> std::result::Result<(), String>;
    /// Forgets one.
    fn remove(&self, owner: &str) -> std::result::Result<(), String>;
}

/// The allocator of one /24.
pub struct Ipam {
    subnet: Ipv4Net,
    by_owner: BTreeMap<String, Ipv4Addr>,
    /// Where the next search starts, so freed addresses are not reused at
    /// once (a stale peer may still talk to them).
    cursor: u32,
}

impl Ipam {
    /// An allocator over `subnet` (a /24) with what `store` already holds.
    pub fn load(subnet: Ipv4Net, store: &dyn IpamStore) -> Result<Self> {
        if subnet.prefix != 24 {
            return Err(NetworkError::InvalidConfig {
                field: "subnet",
                reason: format!("{subnet} is not a /24"),
            });
        }
        let mut by_owner = BTreeMap::new();
        for (owner, ip) in store.load().map_err(NetworkError::Store)? {
            if subnet.contains(ip) {
                by_owner.insert(owner, ip);
            }
        }
        Ok(Self {
            subnet,
            by_owner,
            cursor: 2,
        })
    }

    /// The address of `owner`, allocating (and saving) one if it has none.
    pub fn allocate(&mut self, owner: &str, store: &dyn IpamStore) -> Result<Ipv4Addr> {
        if let Some(ip) = self.by_owner.get(owner) {
            return Ok(*ip);
        }
        let used: std::collections::HashSet<Ipv4Addr> = self.by_owner.values().copied().collect();
        let base = u32::from(self.subnet.network());
        for step in 0..253 {
            let host = 2 + (self.cursor - 2 + step) % 253;
            let ip = Ipv4Addr::from(base + host);
            if !used.contains(&ip) {
                store.save(owner, ip).map_err(NetworkError::Store)?;
                self.by_owner.insert(owner.to_string(), ip);
                self.cursor = host + 1;
                if self.cursor > 254 {
                    self.cursor = 2;
                }
                return Ok(ip);
            }
        }
        Err(NetworkError::SubnetExhausted {
            subnet: self.subnet.to_string(),
            used: used.len(),
        })
    }

    /// Frees `owner`'s address.
    pub fn release(&mut self, owner: &str, store: &dyn IpamStore) -> Result<()> {
        if self.by_owner.remove(owner).is_some() {
            store.remove(owner).map_err(NetworkError::Store)?;
        }
        Ok(())
    }

    /// The address of `owner`, if it has one.
    pub fn get(&self, owner: &str) -> Option<Ipv4Addr> {
        self.by_owner.get(owner).copied()
    }

    /// Every (owner, address).
    pub fn all(&self) -> impl Iterator<Item = (&String, &Ipv4Addr)> {
        self.by_owner.iter()
    }
}

/// An in-memory [`IpamStore`] for tests.
#[derive(Default)]
pub struct MemIpamStore(pub std::sync::Mutex<BTreeMap<String, Ipv4Addr>>);

impl IpamStore for MemIpamStore {
    fn load(&self) -> std::result::Result<Vec<(String, Ipv4Addr)>, String> {
        Ok(self
            .0
            .lock()
            .map_err(|e| e.to_string())?
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect())
    }
    fn save(&self, owner: &str, ip: Ipv4Addr) -> std::result::Result<(), String> {
        self.0
            .lock()
            .map_err(|e| e.to_string())?
            .insert(owner.to_string(), ip);
        Ok(())
    }
    fn remove(&self, owner: &str) -> std::result::Result<(), String> {
        self.0.lock().map_err(|e| e.to_string())?.remove(owner);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets() {
        let n = Ipv4Net::parse("10.88.0.0/16").unwrap();
        assert_eq!(n.node_slice(0).unwrap().to_string(), "10.88.0.0/24");
        assert_eq!(
            n.node_slice(3).unwrap().gateway(),
            Ipv4Addr::new(10, 88, 3, 1)
        );
        assert!(n.node_slice(256).is_err());
        assert!(Ipv4Net::parse("10.88.0.1/16").is_err());
        assert!(Ipv4Net::parse("10.88.0.0/30").is_err());
        assert!(Ipv4Net::parse("nonsense").is_err());
        assert!(n.contains(Ipv4Addr::new(10, 88, 200, 1)));
        assert!(!n.contains(Ipv4Addr::new(10, 89, 0, 1)));
    }

    #[test]
    fn allocates_persists_and_survives_a_reload() {
        let store = MemIpamStore::default();
        let net = Ipv4Net::parse("10.88.0.0/24").unwrap();
        let mut ipam = Ipam::load(net, &store).unwrap();
        let a = ipam.allocate("a", &store).unwrap();
        let b = ipam.allocate("b", &store).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 88, 0, 2));
        assert_eq!(b, Ipv4Addr::new(10, 88, 0, 3));
        assert_eq!(ipam.allocate("a", &store).unwrap(), a);
        // A restart: the same book, nothing handed out twice.
        let mut again = Ipam::load(net, &store).unwrap();
        let c = again.allocate("c", &store).unwrap();
        assert!(c != a && c != b);
        again.release("a", &store).unwrap();
        assert_eq!(store.load().unwrap().len(), 2);
    }

    #[test]
    fn exhaustion_is_a_clear_error_and_cycles_do_not_leak() {
        let store = MemIpamStore::default();
        let mut ipam = Ipam::load(Ipv4Net::parse("10.88.0.0/24").unwrap(), &store).unwrap();
        for i in 0..253 {
            ipam.allocate(&format!("r{i}"), &store).unwrap();
        }
        let e = ipam
            .allocate("one-too-many", &store)
            .unwrap_err()
            .to_string();
        assert!(e.contains("exhausted"), "{e}");
        assert_eq!(store.load().unwrap().len(), 253);
        for i in 0..253 {
            ipam.release(&format!("r{i}"), &store).unwrap();
        }
        for i in 0..1000 {
            let owner = format!("cycle{i}");
            ipam.allocate(&owner, &store).unwrap();
            ipam.release(&owner, &store).unwrap();
        }
        assert_eq!(store.load().unwrap().len(), 0);
        assert_eq!(ipam.all().count(), 0);
    }
}
