//! Attacks on the shared bridge from inside replicas, each beside a
//! positive control (the same probe, from the same image, reaching what it
//! may): no raw sockets by default, no IPv6, no ARP poisoning of the
//! gateway, no spoofed source addresses, no hairpin through the host, no
//! UDP out of an internal service into another project, and no host ports
//! but DNS and the ingress.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::server::OrcaServer;
use serde_json::{json, Value};

/// Runs `script` with `sh -c` inside replica `id`: (exit code, stdout and
/// stderr together).
async fn sh(cri: &cri::Cri, id: &str, script: &str) -> (u32, String) {
    let args = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let out = cri.exec(id, &args, Duration::from_secs(20)).await.unwrap();
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

/// One counter of `/proc/net/snmp` inside replica `id` (its namespace's).
async fn snmp(cri: &cri::Cri, id: &str, proto: &str, field: &str) -> u64 {
    let (code, text) = sh(cri, id, "cat /proc/net/snmp").await;
    assert_eq!(code, 0, "{text}");
    let prefix = format!("{proto}:");
    let mut rows = text.lines().filter(|l| l.starts_with(&prefix));
    let (names, values) = (rows.next().unwrap(), rows.next().unwrap());
    let at = names
        .split_whitespace()
        .position(|n| n == field)
        .unwrap_or_else(|| panic!("no {field} in {names}"));
    values.split_whitespace().nth(at).unwrap().parse().unwrap()
}

/// The MAC a replica's neighbour table holds for `ip`, if any.
async fn neighbour(cri: &cri::Cri, id: &str, ip: &str) -> Option<String> {
    let (_, out) = sh(cri, id, &format!("ip neigh show {ip}")).await;
    let words: Vec<&str> = out.split_whitespace().collect();
    let at = words.iter().position(|w| *w == "lladdr")?;
    words.get(at + 1).map(|m| m.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_from_replicas_are_blocked_beside_their_controls() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "attacks").await;
    let c = server.admin();
    let web = env.image("web:v1");
    let svc = |name: &str, project: &str, extra: Value| {
        let mut s = json!({ "name": name, "project": project, "image": web, "port": 8080, "stop_grace_secs": 1 });
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    let status = common::deploy_all_ready(
        &c,
        json!([
            svc("front", "shop", json!({ "replicas": 2 })),
            svc(
                "attacker",
                "shop",
                json!({ "security": { "cap_add": ["NET_RAW", "NET_ADMIN"] } })
            ),
            svc("shared", "bank", json!({ "internal": true })),
        ]),
    )
    .await;
    let one = |n: &str, k: usize| {
        let i = &status
            .services
            .iter()
            .find(|s| s.name == n)
            .unwrap()
            .instances[k];
        (i.id.clone(), i.ip.clone().unwrap())
    };
    let (front0, front0_ip) = one("front", 0);
    let (front1, front1_ip) = one("front", 1);
    let (attacker, _) = one("attacker", 0);
    let (shared, shared_ip) = one("shared", 0);
    let gateway = {
        let (net, _) = server.subnet.rsplit_once('.').unwrap();
        format!("{net}.1")
    };
    let cri = server.cri().await;
    // The isolation groups are applied just after the state changes.
    let get = |ip: &str| format!("timeout 3 wget -q -O - http://{ip}:8080/");
    common::eventually(
        "same-project traffic",
        Duration::from_secs(30),
        async || {
            let (code, out) = sh(&cri, &front1, &get(&front0_ip)).await;
            if code == 0 {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;

    // Raw sockets: gone by default, back with cap_add (the control).
    let arp_gateway = format!("arping -c 1 -w 2 -I eth0 {gateway}");
    let (code, out) = sh(&cri, &front0, &arp_gateway).await;
    assert_ne!(code, 0, "arping worked without NET_RAW: {out}");
    assert!(out.contains("not permitted"), "{out}");
    let (code, out) = sh(&cri, &attacker, &arp_gateway).await;
    assert_eq!(code, 0, "arping with NET_RAW got no answer: {out}");

    // IPv6: no addresses, so no link-local path into another project,
    // while IPv4 reaches the same project.
    let (_, out) = sh(
        &cri,
        &front0,
        "cat /proc/sys/net/ipv6/conf/all/disable_ipv6; ip -6 addr",
    )
    .await;
    assert!(out.starts_with('1') && !out.contains("inet6"), "{out}");
    let (code, out) = sh(&cri, &attacker, "ping -6 -c 2 -W 2 ff02::1%eth0").await;
    assert_ne!(code, 0, "IPv6 all-nodes ping answered: {out}");
    let (code, out) = sh(&cri, &attacker, &format!("ping -c 1 -W 2 {front1_ip}")).await;
    assert_eq!(code, 0, "IPv4 to the same project: {out}");

    // ARP: an unsolicited answer claiming the gateway does not reach the
    // victim's neighbour table (it still holds the bridge's MAC).
    let (code, out) = sh(&cri, &front0, &format!("{}; arp -n", get(&gateway))).await;
    assert!(out.contains(&gateway), "{code} {out}");
    let before = neighbour(&cri, &front0, &gateway)
        .await
        .expect("gateway resolved");
    let claim = format!(
        "ip addr add {gateway}/32 dev eth0 && arping -U -c 3 -I eth0 {gateway}; \
         ip addr del {gateway}/32 dev eth0"
    );
    let (_, out) = sh(&cri, &attacker, &claim).await;
    assert!(out.contains("ARPING"), "{out}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = neighbour(&cri, &front0, &gateway).await;
    assert_eq!(after.as_deref(), Some(before.as_str()), "gateway poisoned");

    // Spoofed source: the attacker's pings from front1's address do not
    // arrive; the same pings from its own address do (the control).
    let echoes = snmp(&cri, &front0, "Icmp", "InEchos").await;
    let (code, out) = sh(&cri, &attacker, &format!("ping -c 3 -W 2 {front0_ip}")).await;
    assert_eq!(code, 0, "{out}");
    let control = snmp(&cri, &front0, "Icmp", "InEchos").await;
    assert!(control >= echoes + 3, "{echoes} -> {control}");
    let spoof = format!(
        "ip addr add {front1_ip}/32 dev eth0 && ping -c 3 -W 1 -I {front1_ip} {front0_ip}; \
         ip addr del {front1_ip}/32 dev eth0"
    );
    sh(&cri, &attacker, &spoof).await;
    let spoofed = snmp(&cri, &front0, "Icmp", "InEchos").await;
    assert_eq!(spoofed, control, "spoofed echoes arrived");

    // Routed through the gateway (a hairpin), the attacker's pings do not
    // arrive either; on the bridge they did (the control above).
    let before = snmp(&cri, &front0, "Icmp", "InEchos").await;
    let hairpin = format!(
        "ip route add {front0_ip}/32 via {gateway} dev eth0 && ping -c 3 -W 1 {front0_ip}; \
         ip route del {front0_ip}/32"
    );
    let (_, out) = sh(&cri, &attacker, &hairpin).await;
    assert!(out.contains("PING"), "{out}");
    assert_eq!(
        snmp(&cri, &front0, "Icmp", "InEchos").await,
        before,
        "hairpin: {out}"
    );

    // An internal service opens no UDP exchange into another project (its
    // DNS query to a closed port leaves no trace there), while the same
    // query from the victim's own project does; calls into the internal
    // service are answered.
    let udp = |to: &str| format!("nslookup orca.test {to} >/dev/null 2>&1; true");
    let closed = snmp(&cri, &front0, "Udp", "NoPorts").await;
    sh(&cri, &front1, &udp(&front0_ip)).await;
    let control = snmp(&cri, &front0, "Udp", "NoPorts").await;
    assert!(control > closed, "the control query did not arrive");
    sh(&cri, &shared, &udp(&front0_ip)).await;
    assert_eq!(snmp(&cri, &front0, "Udp", "NoPorts").await, control);
    let (code, out) = sh(&cri, &shared, &get(&front0_ip)).await;
    assert_ne!(
        code, 0,
        "internal service opened TCP into another project: {out}"
    );
    let (code, out) = sh(&cri, &front0, &get(&shared_ip)).await;
    assert!(
        code == 0 && out.contains("web v1"),
        "call into the internal service: {out}"
    );

    // The host's ports: the ingress port answers on the bridge address,
    // any other port does not, and DNS does.
    let open = std::net::TcpListener::bind((gateway.as_str(), server.proxy_port)).unwrap();
    let closed_port = common::free_port();
    let shut = std::net::TcpListener::bind((gateway.as_str(), closed_port)).unwrap();
    for listener in [&open, &shut] {
        let l = listener.try_clone().unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            for mut s in l.incoming().flatten() {
                let _ = s.write_all(b"hello\n");
            }
        });
    }
    let probe = |port: u16| format!("nc -w 2 {gateway} {port} </dev/null");
    let (_, out) = sh(&cri, &front0, &probe(server.proxy_port)).await;
    assert!(
        out.contains("hello"),
        "the ingress port on the bridge: {out}"
    );
    let (_, out) = sh(&cri, &front0, &probe(closed_port)).await;
    assert!(!out.contains("hello"), "another host port answered: {out}");
    let (code, out) = sh(&cri, &front0, "nslookup front").await;
    assert!(
        code == 0 && out.contains(&front1_ip),
        "DNS on the bridge: {out}"
    );
}
