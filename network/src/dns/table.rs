//! The live name table the server reads, replaced whole when readiness
//! changes, and the turns that split a canary's name by weight.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Mutex, RwLock};

use super::{Lookup, Names};

/// The shared table, and how far each split name has got in its turns.
#[derive(Default)]
pub struct DnsTable {
    names: RwLock<Names>,
    turns: Mutex<HashMap<String, u64>>,
}

impl DnsTable {
    pub fn replace(&self, names: Names) {
        if let Ok(mut n) = self.names.write() {
            *n = names;
        }
    }

    /// Resolves `name` for `from`, every address.
    pub fn lookup(&self, name: &str, from: Option<Ipv4Addr>) -> Lookup {
        self.names
            .read()
            .map(|n| n.lookup(name, from))
            .unwrap_or(Lookup::Forward)
    }

    /// Resolves `name` for `from` for an A query: a name whose replicas are
    /// partly canaries answers one side, taking turns by weight. (Only A
    /// queries take a turn: resolvers that ask A and AAAA together would
    /// otherwise see one side only.)
    pub fn lookup_a(&self, name: &str, from: Option<Ipv4Addr>) -> Lookup {
        let Ok(names) = self.names.read() else {
            return Lookup::Forward;
        };
        let found = names.lookup(name, from);
        let Lookup::Found(ips) = found else {
            return found;
        };
        let (canary, stable): (Vec<Ipv4Addr>, Vec<Ipv4Addr>) = ips
            .iter()
            .partition(|ip| names.canary_weight.contains_key(ip));
        let Some(weight) = canary.first().and_then(|ip| names.canary_weight.get(ip)) else {
            return Lookup::Found(ips);
        };
        if stable.is_empty() {
            return Lookup::Found(ips);
        }
        let turn = match self.turns.lock() {
            Ok(mut turns) => {
                let t = turns.entry(name.to_string()).or_insert(0);
                *t += 1;
                *t - 1
            }
            Err(_) => 0,
        };
        Lookup::Split(if canary_turn(*weight, turn) {
            canary
        } else {
            stable
        })
    }
}

/// Whether turn `n` of a split at `weight` percent goes to the canary:
/// exactly `weight` of every 100 turns, spread evenly.
fn canary_turn(weight: u32, n: u64) -> bool {
    let w = u64::from(weight.min(100));
    let p = n % 100;
    (p + 1) * w / 100 > p * w / 100
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::tests::names;

    #[test]
    fn canary_splits_answers_by_weight() {
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let mut n = names();
        n.by_project.get_mut("shop").unwrap().insert(
            "web".into(),
            vec![ip("10.0.0.2"), ip("10.0.0.3"), ip("10.0.0.4")],
        );
        n.canary_weight.insert(ip("10.0.0.4"), 10);
        let table = DnsTable::default();
        table.replace(n.clone());
        let shop = Some(ip("10.0.0.2"));
        let mut canary = 0;
        let mut longest_stable_run = 0;
        let mut run = 0;
        for _ in 0..1000 {
            match table.lookup_a("web", shop) {
                Lookup::Split(ips) if ips == vec![ip("10.0.0.4")] => {
                    canary += 1;
                    run = 0;
                }
                Lookup::Split(ips) => {
                    assert_eq!(ips, vec![ip("10.0.0.2"), ip("10.0.0.3")]);
                    run += 1;
                    longest_stable_run = longest_stable_run.max(run);
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(canary, 100);
        assert_eq!(longest_stable_run, 9, "turns are spread evenly");
        // Other names and canary-only answers are plain.
        assert!(matches!(table.lookup_a("db.bank", shop), Lookup::Found(_)));
        assert_eq!(table.lookup("web", shop), n.lookup("web", shop), "no turn");
        n.by_project
            .get_mut("shop")
            .unwrap()
            .insert("web".into(), vec![ip("10.0.0.4")]);
        table.replace(n);
        assert_eq!(
            table.lookup("web", shop),
            Lookup::Found(vec![ip("10.0.0.4")])
        );
        for (w, expected) in [(0, 0), (50, 500), (100, 1000), (33, 330)] {
            assert_eq!((0..1000).filter(|n| canary_turn(w, *n)).count(), expected);
        }
    }
}
