//! `udpecho PORT`: answers each UDP datagram on PORT with the host name
//! (the replica's) and the datagram: which replica a client reaches.
//! Static, std-only.

use std::net::UdpSocket;

fn main() {
    let port = std::env::args()
        .nth(1)
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(5353);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let socket = match UdpSocket::bind(("0.0.0.0", port)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udpecho: bind {port}: {e}");
            std::process::exit(1);
        }
    };
    println!("udpecho on {port}");
    let mut buf = [0u8; 2048];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf) else {
            continue;
        };
        let mut reply = format!("{host} ").into_bytes();
        reply.extend_from_slice(&buf[..n]);
        let _ = socket.send_to(&reply, peer);
    }
}
