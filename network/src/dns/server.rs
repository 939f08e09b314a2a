//! DNS on the wire: queries read and answers written with hickory-proto,
//! the UDP server on the bridge address, and forwarding to the host's
//! resolvers (SERVFAIL when none answers).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use tokio::net::UdpSocket;

use super::{DnsTable, Lookup, SPLIT_TTL, TTL};
use crate::ipam::Ipv4Net;

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

/// Queries forwarded at once; past that, new ones are refused at once
/// (SERVFAIL) rather than queued without bound.
pub const MAX_IN_FLIGHT: usize = 256;

/// A SERVFAIL answer to `packet`, if it parses as a query.
fn servfail(packet: &[u8]) -> Option<Vec<u8>> {
    let req = Message::from_vec(packet).ok()?;
    let mut fail = Message::response(req.metadata.id, req.metadata.op_code);
    fail.metadata.response_code = ResponseCode::ServFail;
    fail.queries = req.queries;
    fail.to_vec().ok()
}

/// Serves DNS on `socket` until the task is dropped, to clients in
/// `clients` only (the replicas on the bridge); queries from anywhere else
/// are dropped unanswered.
pub async fn serve(
    socket: UdpSocket,
    table: Arc<DnsTable>,
    upstreams: Vec<SocketAddr>,
    clients: Ipv4Net,
) {
    let socket = Arc::new(socket);
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let from = match peer.ip() {
            std::net::IpAddr::V4(v4) if clients.contains(v4) => v4,
            _ => continue,
        };
        let packet = buf[..n].to_vec();
        if let Some(reply) = answer(&table, &packet, Some(from)) {
            let _ = socket.send_to(&reply, peer).await;
            continue;
        }
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            if let Some(fail) = servfail(&packet) {
                let _ = socket.send_to(&fail, peer).await;
            }
            continue;
        };
        let socket = socket.clone();
        let upstreams = upstreams.clone();
        tokio::spawn(async move {
            let reply = forward(&packet, &upstreams).await;
            if let Some(bytes) = reply.or_else(|| servfail(&packet)) {
                let _ = socket.send_to(&bytes, peer).await;
            }
            drop(permit);
        });
    }
}

/// True if `reply` answers `query`: a response with its id and question.
fn answers(query: &Message, reply: &[u8]) -> bool {
    Message::from_vec(reply).is_ok_and(|m| {
        m.metadata.message_type == MessageType::Response
            && m.metadata.id == query.metadata.id
            && m.queries == query.queries
    })
}

/// Asks each upstream in turn; the first answer that is one. Each ask has
/// its own socket (a fresh source port) connected to that upstream, so the
/// kernel delivers datagrams from it alone; a reply with another id or
/// question is ignored.
async fn forward(packet: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    let query = Message::from_vec(packet).ok()?;
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
        if sock.connect(upstream).await.is_err() || sock.send(packet).await.is_err() {
            continue;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let mut buf = vec![0u8; 4096];
        while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
            if answers(&query, &buf[..n]) {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::names::tests::names;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;

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

    fn loopback() -> Ipv4Net {
        Ipv4Net::parse("127.0.0.0/8").unwrap()
    }

    /// Asks `server` for the A records of `name`; its answer.
    /// An A query for `name` with `id`, on the wire.
    fn query(name: &str, id: u16) -> Vec<u8> {
        let mut q = Message::query();
        q.metadata.id = id;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        q.to_vec().unwrap()
    }

    async fn ask(server: SocketAddr, name: &str, id: u16) -> Message {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&query(name, id), server).await.unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), client.recv_from(&mut buf))
            .await
            .unwrap()
            .unwrap();
        Message::from_vec(&buf[..n]).unwrap()
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
        tokio::spawn(serve(server, table, vec![upstream_addr], loopback()));

        // Not orca's: relayed from the upstream.
        let m = ask(server_addr, "example.com.", 9).await;
        assert_eq!(m.metadata.id, 9);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].ttl, 60);
        // orca's zone: answered here, never forwarded.
        let m = ask(server_addr, "db.bank.orca.", 10).await;
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
        tokio::spawn(serve(server, table, vec![dead], loopback()));
        let m = ask(server_addr, "example.com.", 11).await;
        assert_eq!(
            (m.metadata.id, m.metadata.response_code),
            (11, ResponseCode::ServFail)
        );
    }

    /// A fake upstream on loopback that first sends a reply with the wrong
    /// id, then the right one with 192.0.2.8; or, when `mute`, nothing.
    async fn upstream(mute: bool) -> SocketAddr {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = upstream.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, peer)) = upstream.recv_from(&mut buf).await {
                if mute {
                    continue;
                }
                let req = Message::from_vec(&buf[..n]).unwrap();
                let q = req.queries[0].clone();
                for (id, ip) in [
                    (req.metadata.id.wrapping_add(1), "192.0.2.66"),
                    (req.metadata.id, "192.0.2.8"),
                ] {
                    let mut resp = Message::response(id, OpCode::Query);
                    resp.add_query(q.clone());
                    resp.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A(ip.parse().unwrap())),
                    ));
                    let _ = upstream.send_to(&resp.to_vec().unwrap(), peer).await;
                }
            }
        });
        addr
    }

    #[tokio::test]
    async fn only_the_matching_reply_is_relayed_and_only_to_clients() {
        let table = Arc::new(DnsTable::default());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(serve(
            server,
            table.clone(),
            vec![upstream(false).await],
            loopback(),
        ));
        let m = ask(server_addr, "example.com.", 21).await;
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A("192.0.2.8".parse().unwrap())));

        // A server for clients in 10.0.0.0/24 ignores a loopback client.
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let bridge = Ipv4Net::parse("10.0.0.0/24").unwrap();
        tokio::spawn(serve(server, table, vec![upstream(false).await], bridge));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let q = query("example.com.", 1);
        client.send_to(&q, server_addr).await.unwrap();
        let mut buf = vec![0u8; 512];
        let got =
            tokio::time::timeout(Duration::from_millis(500), client.recv_from(&mut buf)).await;
        assert!(got.is_err(), "a client off the bridge got an answer");
    }

    #[tokio::test]
    async fn forwards_in_flight_are_capped() {
        let table = Arc::new(DnsTable::default());
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        tokio::spawn(serve(server, table, vec![upstream(true).await], loopback()));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let extra = 40;
        for id in 0..(MAX_IN_FLIGHT + extra) as u16 {
            let q = query("example.com.", id);
            client.send_to(&q, server_addr).await.unwrap();
        }
        // The upstream never answers: those past the cap fail at once, the
        // others only after the 2 s upstream timeout.
        let mut refused = 0;
        let mut buf = vec![0u8; 512];
        while let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_millis(1000), client.recv_from(&mut buf)).await
        {
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(m.metadata.response_code, ResponseCode::ServFail);
            refused += 1;
        }
        assert_eq!(refused, extra);
    }
}
