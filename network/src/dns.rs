//! Service DNS on the bridge address (UDP port 53), with messages read and
//! written by hickory-proto. A replica asks `<service>` or an alias and gets
//! the ready replicas of that service in its own project (known by the
//! asker's address); `<service>.<project>` and `<service>.<project>.orca`
//! answer cluster-wide for internal services (and within the asker's own
//! project). Everything else goes to the host's resolvers.
//!
//! While a service runs a canary, a query is answered with either the
//! canary replicas or the stable ones, alternating by the canary's weight
//! (smoothly: at 10 %, one answer in ten, evenly spread), with a 1 s TTL so
//! clients that resolve per connection split their traffic by weight too.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

/// TTL of orca's answers: short, since replicas come and go.
pub const TTL: u32 = 5;
/// TTL of one side of a canary split, so clients come back for the other.
pub const SPLIT_TTL: u32 = 1;
/// The zone suffix of cluster-wide names.
pub const ZONE: &str = "orca";

/// The names orca answers, rebuilt whenever readiness changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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

/// The host's resolvers, from resolv.conf (loopback ones too: orca runs on
/// the host), as port-53 addresses.
pub fn host_resolvers(resolv_conf: &str) -> Vec<SocketAddr> {
    resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|ns| ns.trim().parse::<std::net::IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// Answers one query packet, or `None` to forward it.
pub fn answer(table: &DnsTable, packet: &[u8], from: Option<Ipv4Addr>) -> Option<Vec<u8>> {
    let request = Message::from_vec(packet).ok()?;
    if request.metadata.message_type != MessageType::Query
        || request.metadata.op_code != OpCode::Query
    {
        return None;
    }
    let query = request.queries.first()?.clone();
    let name = query.name().to_lowercase().to_ascii();
    let name = name.trim_end_matches('.');
    let found = if query.query_type() == RecordType::A {
        table.lookup_a(name, from)
    } else {
        table.lookup(name, from)
    };
    if found == Lookup::Forward {
        return None;
    }
    let mut response = Message::response(request.metadata.id, OpCode::Query);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.recursion_available = true;
    response.metadata.authoritative = true;
    response.add_query(query.clone());
    let (ips, ttl) = match found {
        Lookup::Found(ips) => (Some(ips), TTL),
        Lookup::Split(ips) => (Some(ips), SPLIT_TTL),
        _ => (None, TTL),
    };
    match ips {
        Some(ips) => {
            if query.query_type() == RecordType::A {
                for ip in ips {
                    response.add_answer(Record::from_rdata(
                        query.name().clone(),
                        ttl,
                        RData::A(A(ip)),
                    ));
                }
            }
        }
        _ => response.metadata.response_code = ResponseCode::NXDomain,
    }
    response.to_vec().ok()
}

/// Serves DNS on `socket` until the task is dropped.
pub async fn serve(socket: UdpSocket, table: Arc<DnsTable>, upstreams: Vec<SocketAddr>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let packet = buf[..n].to_vec();
        let from = match peer.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        };
        if let Some(reply) = answer(&table, &packet, from) {
            let _ = socket.send_to(&reply, peer).await;
            continue;
        }
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            if let Some(reply) = forward(&packet, &upstreams).await {
                let _ = socket.send_to(&reply, peer).await;
            } else if let Ok(req) = Message::from_vec(&packet) {
                let mut fail = Message::response(req.metadata.id, req.metadata.op_code);
                fail.metadata.response_code = ResponseCode::ServFail;
                fail.queries = req.queries;
                if let Ok(bytes) = fail.to_vec() {
                    let _ = socket.send_to(&bytes, peer).await;
                }
            }
        });
    }
}

/// Asks each upstream in turn; the first answer.
async fn forward(packet: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for upstream in upstreams {
        let bind: SocketAddr = if upstream.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .ok()?;
        let Ok(sock) = UdpSocket::bind(bind).await else {
            continue;
        };
        if sock.send_to(packet, upstream).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await
        {
            buf.truncate(n);
            return Some(buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

    fn names() -> Names {
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

    #[test]
    fn answers_are_dns_messages() {
        let table = DnsTable::default();
        table.replace(names());
        let mut q = Message::query();
        q.metadata.id = 77;
        q.add_query(Query::query(
            Name::from_ascii("web.").unwrap(),
            RecordType::A,
        ));
        let reply = answer(
            &table,
            &q.to_vec().unwrap(),
            Some("10.0.0.2".parse().unwrap()),
        )
        .unwrap();
        let m = Message::from_vec(&reply).unwrap();
        assert_eq!(m.metadata.id, 77);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].ttl, TTL);

        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("nope.orca.").unwrap(),
            RecordType::A,
        ));
        let m = Message::from_vec(&answer(&table, &q.to_vec().unwrap(), None).unwrap()).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);

        let mut q = Message::query();
        q.add_query(Query::query(
            Name::from_ascii("example.com.").unwrap(),
            RecordType::A,
        ));
        assert!(answer(&table, &q.to_vec().unwrap(), None).is_none());
        assert!(answer(&table, b"garbage", None).is_none());
        assert_eq!(
            host_resolvers("nameserver 1.1.1.1\nsearch x\nnameserver 127.0.0.53\n").len(),
            2
        );
    }

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

    #[tokio::test]
    async fn forwards_other_names_to_the_upstream() {
        // A fake upstream on loopback that answers every query with 192.0.2.7.
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let upstream_addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = upstream.recv_from(&mut buf).await else {
                    return;
                };
                let req = Message::from_vec(&buf[..n]).unwrap();
                let mut resp = Message::response(req.metadata.id, OpCode::Query);
                let q = req.queries[0].clone();
                resp.add_query(q.clone());
                resp.add_answer(Record::from_rdata(
                    q.name().clone(),
                    60,
                    RData::A(A("192.0.2.7".parse().unwrap())),
                ));
                let _ = upstream.send_to(&resp.to_vec().unwrap(), peer).await;
            }
        });
        let table = Arc::new(DnsTable::default());
        table.replace(names());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(serve(server, table, vec![upstream_addr]));

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ask = |name: &str, id: u16| {
            let mut q = Message::query();
            q.metadata.id = id;
            q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
            q.to_vec().unwrap()
        };
        let mut buf = vec![0u8; 4096];
        // Not orca's: relayed from the upstream.
        client
            .send_to(&ask("example.com.", 9), server_addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(m.metadata.id, 9);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 60);
        // orca's zone: answered here, never forwarded.
        client
            .send_to(&ask("db.bank.orca.", 10), server_addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            (m.metadata.id, m.answers.len(), m.answers[0].ttl),
            (10, 1, TTL)
        );

        // No upstream answering: SERVFAIL rather than silence.
        let table = Arc::new(DnsTable::default());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dead = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(serve(server, table, vec![dead]));
        client
            .send_to(&ask("example.com.", 11), server_addr)
            .await
            .unwrap();
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let m = Message::from_vec(&buf[..n]).unwrap();
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (11, ResponseCode::ServFail)
        );
    }
}
