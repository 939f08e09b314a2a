//! Published ports against the replica's own address, in one run: TCP
//! throughput and p99 with wrk (a keep-alive `kaweb` replica) through a
//! mesh port and a host port, from the host's loopback (so the mesh path
//! is DNAT plus masquerade), in alternating turns; and the UDP
//! request/response rate of `udpecho` through a published port against
//! direct, from 4 client threads each waiting for every answer.
//!
//! With `ORCA_BENCH_DOCKER_HOST` naming a Docker engine in Swarm mode
//! (`tests/bench/swarm.sh up`), the same image published by Docker
//! (`docker run -p`, Docker's defaults) and by a Swarm service in host
//! mode (`docker service create --publish mode=host`) joins the same
//! turns. Swarm's routing mesh needs IPVS in the kernel; where the kernel
//! has none (dockerd logs "Could not get ipvs family information"), it
//! accepts nothing, so host mode is the Swarm path that can be measured.
//!
//! Needs the test environment, a release build and wrk
//! (`apt-get install wrk`): `cargo bench --bench ports`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common.rs"]
mod common;

use common::docker::{docker, docker_quiet};
use common::{free_port, wrk_for, BenchServer};

/// The Docker peers' container and service.
const PEER: &str = "orca-bench-ports";

/// Turns per path, unless `ROUNDS` says otherwise.
const ROUNDS: usize = 6;
/// Seconds per turn.
const ROUND_SECS: u32 = 4;
/// UDP client threads.
const UDP_CLIENTS: usize = 4;

/// Answers per second from `to` over `secs`, `UDP_CLIENTS` clients each
/// sending one datagram and waiting for its answer.
fn udp_rate(to: &str, secs: u64) -> (f64, u64) {
    let end = Instant::now() + Duration::from_secs(secs);
    let threads: Vec<_> = (0..UDP_CLIENTS)
        .map(|_| {
            let to = to.to_string();
            std::thread::spawn(move || {
                let s = UdpSocket::bind("0.0.0.0:0").unwrap();
                s.set_read_timeout(Some(Duration::from_millis(200)))
                    .unwrap();
                let (mut ok, mut lost) = (0u64, 0u64);
                let mut buf = [0u8; 256];
                while Instant::now() < end {
                    s.send_to(b"ping", &to).unwrap();
                    match s.recv_from(&mut buf) {
                        Ok(_) => ok += 1,
                        Err(_) => lost += 1,
                    }
                }
                (ok, lost)
            })
        })
        .collect();
    let (mut ok, mut lost) = (0, 0);
    for t in threads {
        let (o, l) = t.join().unwrap();
        ok += o;
        lost += l;
    }
    (ok as f64 / secs as f64, lost)
}

async fn running_ips(client: &api::client::ApiClient, name: &str) -> Vec<String> {
    for _ in 0..600 {
        let s: Value = client.get("/api/v1/status").await.unwrap();
        let svc = s["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .cloned();
        if let Some(svc) = svc.filter(|s| s["status"] == "running") {
            return svc["instances"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|i| i["ip"].as_str().map(str::to_string))
                .collect();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{name} did not start");
}

/// Whether `GET /` on loopback's `port` gets an HTTP answer.
fn answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_ok()
        && s.read_exact(&mut head).is_ok()
        && head.starts_with(b"HTTP/1.1 200")
}

/// Publishes `image` on Docker at `host`: a container with `-p` and a
/// Swarm service with `--publish mode=host`; their URLs on loopback once
/// both answer.
fn docker_peers(host: &str, image: &str) -> (String, String) {
    let (run_port, swarm_port) = (free_port(), free_port());
    docker(host, &["pull", "-q", image]);
    docker_quiet(host, &["rm", "-f", PEER]);
    docker_quiet(host, &["service", "rm", PEER]);
    std::thread::sleep(Duration::from_secs(3));
    let publish = format!("{run_port}:8080");
    docker(host, &["run", "-d", "--name", PEER, "-p", &publish, image]);
    let publish = format!("published={swarm_port},target=8080,mode=host");
    docker(
        host,
        &[
            "service",
            "create",
            "-q",
            "--name",
            PEER,
            "--publish",
            &publish,
            image,
        ],
    );
    let urls = (
        format!("http://127.0.0.1:{run_port}/"),
        format!("http://127.0.0.1:{swarm_port}/"),
    );
    for port in [run_port, swarm_port] {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !answers(port) {
            assert!(Instant::now() < deadline, "port {port} never answered");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    urls
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let registry = std::env::var("ORCA_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into());
    let image = format!("{registry}/orca-test/kaweb:v1");
    let server = BenchServer::start("pp", "obenchp0", "10.125.0.0/24").await;
    let client = server.client.clone();
    let (mesh, host, udp) = (free_port(), free_port(), free_port());
    client
        .post::<_, Value>(
            "/api/v1/deploy",
            &json!({ "services": [
                { "name": "web", "image": image, "port": 8080, "stop_grace_secs": 1,
                  "ports": [format!("{mesh}:8080"),
                            { "published": host, "target": 8080, "mode": "host" }] },
                { "name": "echo", "image": image, "stop_grace_secs": 1,
                  "command": ["/bin/udpecho", "5353"], "ports": [format!("{udp}:5353/udp")] },
            ]}),
        )
        .await
        .unwrap();
    let web = running_ips(&client, "web").await;
    let echo = running_ips(&client, "echo").await;
    // Let the ports reach the kernel.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS)
        .max(1);
    let direct_url = format!("http://{}:8080/", web[0]);
    let mesh_url = format!("http://127.0.0.1:{mesh}/");
    let host_url = format!("http://127.0.0.1:{host}/");
    let mut paths = vec![
        ("direct", direct_url.clone()),
        ("mesh port", mesh_url),
        ("host port", host_url),
    ];
    let engine = common::docker::engine();
    if let Some(host) = &engine {
        let (run_url, swarm_url) = docker_peers(host, &image);
        paths.push(("docker run -p", run_url));
        paths.push(("swarm host mode", swarm_url));
    }
    for (_, url) in &paths {
        wrk_for(url, None, 2);
    }
    let mut runs: Vec<Vec<common::Wrk>> = paths.iter().map(|_| Vec::new()).collect();
    for round in 0..rounds {
        // Who goes first turns, so none always follows another.
        for k in 0..paths.len() {
            let i = (k + round) % paths.len();
            runs[i].push(wrk_for(&paths[i].1, None, ROUND_SECS));
        }
    }
    let udp_direct = format!("{}:5353", echo[0]);
    let udp_port = format!("127.0.0.1:{udp}");
    udp_rate(&udp_port, 1);
    let mut udp_runs: Vec<(f64, u64, f64, u64)> = Vec::new();
    for _ in 0..rounds {
        let (d, dl) = udp_rate(&udp_direct, 3);
        let (p, pl) = udp_rate(&udp_port, 3);
        udp_runs.push((d, dl, p, pl));
    }
    server.stop().await;
    if let Some(host) = &engine {
        docker_quiet(host, &["rm", "-f", PEER]);
        docker_quiet(host, &["service", "rm", PEER]);
    }

    println!(
        "published ports, one run, 1 kaweb (keep-alive) replica, wrk -t2 -c32 from the host's loopback, \
         {rounds} turns of {ROUND_SECS} s per path"
    );
    println!("{:<24} {:>10} {:>9}  errors", "", "req/s", "p99 ms");
    for (i, (name, _)) in paths.iter().enumerate() {
        for (round, r) in runs[i].iter().enumerate() {
            let row = format!("{name} {}", round + 1);
            println!("{row:<24} {:>10.0} {:>9.2}  {}", r.rps, r.p99_ms, r.errors);
        }
    }
    for (i, (name, _)) in paths.iter().enumerate().skip(1) {
        println!(
            "{name} / direct, median of the turns: throughput {:.2}x, p99 {:.2}x ({:.2} / {:.2} ms)",
            common::median(&runs[i], |r| r.rps) / common::median(&runs[0], |r| r.rps),
            common::median(&runs[i], |r| r.p99_ms) / common::median(&runs[0], |r| r.p99_ms),
            common::median(&runs[i], |r| r.p99_ms),
            common::median(&runs[0], |r| r.p99_ms),
        );
    }
    for (ours, peer) in [(1, 3), (2, 4)] {
        if let (Some(a), Some(b)) = (runs.get(ours), runs.get(peer)) {
            println!(
                "orca {} / {}, median of the turns: throughput {:.2}x, p99 {:.2}x",
                paths[ours].0,
                paths[peer].0,
                common::median(a, |r| r.rps) / common::median(b, |r| r.rps),
                common::median(a, |r| r.p99_ms) / common::median(b, |r| r.p99_ms),
            );
        }
    }
    if engine.is_none() {
        println!("docker and swarm: not run (set ORCA_BENCH_DOCKER_HOST; tests/bench/swarm.sh up)");
    }
    println!("UDP request/response, {UDP_CLIENTS} clients, 3 s per turn (answers/s, lost)");
    for (round, (d, dl, p, pl)) in udp_runs.iter().enumerate() {
        println!(
            "turn {}: direct {d:.0} ({dl} lost), published {p:.0} ({pl} lost), {:.2}x",
            round + 1,
            p / d
        );
    }
    let mut ratios: Vec<f64> = udp_runs.iter().map(|(d, _, p, _)| p / d).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "UDP published / direct, median of the turns: {:.2}x",
        ratios[ratios.len() / 2]
    );
}
