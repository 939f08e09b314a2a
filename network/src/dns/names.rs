//! Which names orca answers, and with what, for a replica at an address:
//! the pure rules, no locks and no packets.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::ZONE;

/// The names orca answers, rebuilt whenever readiness changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Names {
    /// project → name or alias → addresses.
    pub by_project: HashMap<String, HashMap<String, Vec<Ipv4Addr>>>,
    /// `service.project` of internal services → addresses.
    pub cluster: HashMap<String, Vec<Ipv4Addr>>,
    /// Replica address → its project (who is asking).
    pub project_of: HashMap<Ipv4Addr, String>,
    /// Canary replica address → the canary's weight in percent.
    pub canary_weight: HashMap<Ipv4Addr, u32>,
}

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// orca's name: these addresses (maybe none ready).
    Found(Vec<Ipv4Addr>),
    /// orca's name with a canary: one side of the split, by weight.
    Split(Vec<Ipv4Addr>),
    /// In orca's namespace but unknown.
    NxDomain,
    /// Not orca's: ask the host's resolvers.
    Forward,
}

impl Names {
    /// Resolves `name` (lowercase, no trailing dot) for a client at `from`.
    pub fn lookup(&self, name: &str, from: Option<Ipv4Addr>) -> Lookup {
        let asker = from.and_then(|ip| self.project_of.get(&ip));
        let own = |service: &str| {
            asker
                .and_then(|p| self.by_project.get(p))
                .and_then(|m| m.get(service))
        };
        let qualified = |service: &str, project: &str| -> Option<Vec<Ipv4Addr>> {
            if let Some(ips) = self.cluster.get(&format!("{service}.{project}")) {
                return Some(ips.clone());
            }
            if asker.is_some_and(|p| p == project) {
                return own(service).cloned();
            }
            None
        };
        // The cluster zone: always orca's to answer.
        if name == ZONE || name.ends_with(".orca") {
            let inner = name.strip_suffix(".orca").unwrap_or("");
            return match inner.split('.').collect::<Vec<_>>().as_slice() {
                [service, project] => qualified(service, project)
                    .map(Lookup::Found)
                    .unwrap_or(Lookup::NxDomain),
                _ => Lookup::NxDomain,
            };
        }
        match name.split('.').collect::<Vec<_>>().as_slice() {
            [service] => match own(service) {
                Some(ips) => Lookup::Found(ips.clone()),
                None if asker.is_some() => Lookup::NxDomain,
                None => Lookup::Forward,
            },
            [service, project] => match qualified(service, project) {
                Some(ips) => Lookup::Found(ips),
                None if self.by_project.contains_key(*project) => Lookup::NxDomain,
                None => Lookup::Forward,
            },
            _ => Lookup::Forward,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Two projects: shop (web and its alias www), bank (internal db, api).
    pub(crate) fn names() -> Names {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut n = Names::default();
        n.by_project.insert(
            "shop".into(),
            HashMap::from([
                ("web".into(), vec![ip("10.0.0.2"), ip("10.0.0.3")]),
                ("www".into(), vec![ip("10.0.0.2"), ip("10.0.0.3")]),
            ]),
        );
        n.by_project.insert(
            "bank".into(),
            HashMap::from([
                ("db".into(), vec![ip("10.0.0.9")]),
                ("api".into(), vec![ip("10.0.0.8")]),
            ]),
        );
        n.cluster.insert("db.bank".into(), vec![ip("10.0.0.9")]);
        n.project_of.insert(ip("10.0.0.2"), "shop".into());
        n.project_of.insert(ip("10.0.0.9"), "bank".into());
        n
    }

    #[test]
    fn resolution_rules() {
        let n = names();
        let shop = Some("10.0.0.2".parse().unwrap());
        assert_eq!(
            n.lookup("web", shop),
            Lookup::Found(vec![
                "10.0.0.2".parse().unwrap(),
                "10.0.0.3".parse().unwrap()
            ])
        );
        assert_eq!(n.lookup("www", shop).clone(), n.lookup("web", shop));
        assert_eq!(
            n.lookup("db", shop),
            Lookup::NxDomain,
            "another project's name needs its project"
        );
        assert_eq!(
            n.lookup("db.bank", shop),
            Lookup::Found(vec!["10.0.0.9".parse().unwrap()])
        );
        assert_eq!(
            n.lookup("db.bank.orca", shop),
            Lookup::Found(vec!["10.0.0.9".parse().unwrap()])
        );
        assert_eq!(n.lookup("api.bank", shop), Lookup::NxDomain, "not internal");
        assert_eq!(
            n.lookup("web.shop", shop),
            Lookup::Found(vec![
                "10.0.0.2".parse().unwrap(),
                "10.0.0.3".parse().unwrap()
            ])
        );
        assert_eq!(n.lookup("example.com", shop), Lookup::Forward);
        assert_eq!(n.lookup("nothing.orca", shop), Lookup::NxDomain);
        assert_eq!(
            n.lookup("web", None),
            Lookup::Forward,
            "the host is no replica"
        );
    }
}
