//! Published ports on a real node: TCP and UDP through nftables DNAT from
//! the host (loopback), against the replica's own address as the control;
//! mesh and host mode; conflicts with another service and with orca's own
//! listeners answer 409; status and cluster info show them; a UDP client
//! whose replica goes away is answered by another on its next packet.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use api::client::ApiClient;
use common::server::OrcaServer;
use serde_json::{json, Value};

fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// GET / over a fresh connection to `addr`: the body.
fn get(addr: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().unwrap(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string())
}

/// One GET of `path` on an open keep-alive connection: the body.
fn get_on(s: &mut TcpStream, path: &str) -> std::io::Result<String> {
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n")?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok(String::from_utf8_lossy(&body).trim().to_string())
}

/// Sends `msg` from `socket` to `to` and returns the answer's first word
/// (the replica's host name), or None after a second.
fn ask(socket: &UdpSocket, to: &str, msg: &str) -> Option<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    socket.send_to(msg.as_bytes(), to).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = socket.recv_from(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.ends_with(msg), "{text}");
    text.split(' ').next().map(str::to_string)
}

async fn service(c: &ApiClient, name: &str) -> Value {
    let s: Value = c.get("/api/v1/status").await.unwrap();
    s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .cloned()
        .unwrap()
}

async fn ready(c: &ApiClient, name: &str, n: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = service(c, name).await;
        let running = s["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "running")
            .count();
        if s["status"] == "running" && running == n {
            return s;
        }
        assert!(Instant::now() < deadline, "{name} not running: {s:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn error_of(r: Result<Value, api::client::ClientError>) -> (u16, String) {
    match r {
        Err(api::client::ClientError::Api { status, message }) => (status, message),
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tcp_and_udp_ports_reach_ready_replicas() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "ports").await;
    let c = server.admin();
    let image = env.image("kaweb:v1");
    let (tcp, host_tcp, udp) = (common::free_port(), common::free_port(), free_udp_port());
    let unready = common::free_port();
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [
                { "name": "web", "image": image, "replicas": 2, "port": 8080,
                  "ports": [format!("{tcp}:8080")] },
                { "name": "hostweb", "image": image, "port": 8080,
                  "ports": [{ "published": host_tcp, "target": 8080, "mode": "host" }] },
                // Never ready: runs, answers on its address, gets no traffic.
                { "name": "unready", "image": image, "port": 8080,
                  "readiness": { "exec": ["/bin/nothere"], "interval_secs": 1 },
                  "ports": [format!("{unready}:8080")] },
                { "name": "echo", "image": image, "replicas": 2, "stop_grace_secs": 1,
                  "command": ["/bin/udpecho", "5353"], "ports": [format!("{udp}:5353/udp")] },
            ]}),
        )
        .await
        .unwrap();
    assert_eq!(r["errors"], json!([]), "{r}");
    let web = ready(&c, "web", 2).await;
    ready(&c, "hostweb", 1).await;
    let echo = ready(&c, "echo", 2).await;

    // The control: each replica answers on its own address.
    for i in web["instances"].as_array().unwrap() {
        let ip = i["ip"].as_str().unwrap();
        assert_eq!(get(&format!("{ip}:8080")).unwrap().trim(), "kaweb v1");
    }
    // Through the published ports, from the host's loopback.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match get(&format!("127.0.0.1:{tcp}")) {
            Ok(body) if body.trim() == "kaweb v1" => break,
            other => assert!(Instant::now() < deadline, "published TCP: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for _ in 0..20 {
        assert_eq!(get(&format!("127.0.0.1:{tcp}")).unwrap().trim(), "kaweb v1");
    }
    assert_eq!(
        get(&format!("127.0.0.1:{host_tcp}")).unwrap().trim(),
        "kaweb v1"
    );
    assert_eq!(web["ports"][0]["published"], tcp, "{web:#}");
    assert_eq!(web["ports"][0]["mode"], "mesh");
    let info: Value = c.get("/api/v1/cluster/info").await.unwrap();
    let ports = info["nodes"][0]["ports"].to_string();
    for p in [
        format!("{tcp}/tcp"),
        format!("{host_tcp}/tcp"),
        format!("{udp}/udp"),
    ] {
        assert!(ports.contains(&p), "{p} not in {ports}");
    }

    // UDP: new flows spread; one flow stays with its replica.
    // A replica's host name is its service and slot.
    let names = ["echo-0", "echo-1"];
    assert_eq!(echo["instances"].as_array().unwrap().len(), 2);
    let to = format!("127.0.0.1:{udp}");
    let mut on_slot1 = None;
    for _ in 0..50 {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let Some(who) = ask(&socket, &to, "hello") else {
            continue;
        };
        assert!(
            names.contains(&who.as_str()),
            "{who} is no replica of {names:?}"
        );
        for _ in 0..5 {
            assert_eq!(ask(&socket, &to, "again").as_deref(), Some(who.as_str()));
        }
        if who == "echo-1" {
            on_slot1 = Some((socket, who));
            break;
        }
    }
    let (socket, gone) = on_slot1.expect("no flow reached slot 1 in 50 tries");
    // Slot 1 goes: the same flow's next packet reaches the other replica.
    let _: Value = c
        .post("/api/v1/services/echo/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while service(&c, "echo").await["instances"]
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "slot 1 never went");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = ask(&socket, &to, "after").expect("the flow's next packet got no answer");
    assert_ne!(next, gone);
    assert_eq!(next, "echo-0");

    // TCP: a connection held open to web-0 goes on while web-1 goes.
    let to = format!("127.0.0.1:{tcp}");
    let mut held = None;
    for _ in 0..50 {
        let mut conn = TcpStream::connect(&to).unwrap();
        if get_on(&mut conn, "/host").unwrap() == "web-0" {
            held = Some(conn);
            break;
        }
    }
    let mut conn = held.expect("no connection reached web-0 in 50 tries");
    let _: Value = c
        .post("/api/v1/services/web/scale", &json!({ "replicas": 1 }))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while service(&c, "web").await["instances"]
        .as_array()
        .unwrap()
        .len()
        != 1
    {
        assert!(Instant::now() < deadline, "web-1 never went");
        assert_eq!(get_on(&mut conn, "/host").unwrap(), "web-0");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for _ in 0..5 {
        assert_eq!(
            get_on(&mut conn, "/host").unwrap(),
            "web-0",
            "the held connection broke"
        );
        assert_eq!(
            get(&to).unwrap().trim(),
            "kaweb v1",
            "a new connection failed"
        );
    }

    // Conflicts: another service's port, and orca's own API port.
    let (status, msg) = error_of(
        c.post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web2", "image": image,
                                    "ports": [format!("{tcp}:9000")] }]}),
        )
        .await,
    );
    assert_eq!(status, 409, "{msg}");
    assert!(
        msg.contains(&format!("{tcp}/tcp is already published by web")),
        "{msg}"
    );
    let (status, msg) = error_of(
        c.post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web3", "image": image,
                                    "ports": [format!("{}:8080", server.port)] }]}),
        )
        .await,
    );
    assert_eq!(status, 409, "{msg}");
    assert!(msg.contains("orca's own API"), "{msg}");
    let (status, msg) = error_of(
        c.post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "web4", "image": image, "ports": ["80"] }]}),
        )
        .await,
    );
    assert_eq!(status, 400, "{msg}");

    // Stopped: the port refuses.
    let _: Value = c.delete("/api/v1/services/web").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(&format!("127.0.0.1:{tcp}")).is_ok() {
        assert!(
            Instant::now() < deadline,
            "a stopped service's port still answers"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
