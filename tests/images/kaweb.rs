//! kaweb: the keep-alive web server of the `orca-test/kaweb` image.
//!
//! A test fixture, built by tests/images/build.sh with plain `rustc` and a
//! static C runtime, std only. It answers HTTP/1.1 on $PORT (default 8080)
//! with keep-alive, one thread per connection: `/healthz` answers "ok",
//! `/peer` the address the connection came from, `/host` the host name, `/stats` how many
//! connections carried a request with X-Forwarded-For
//! (that is, came from a proxy) and how many such requests there were,
//! every other path "kaweb $VERSION". Busybox httpd closes every connection,
//! so it cannot tell a proxy's keep-alive pool from its connect cost; this
//! server can, and can show that the pool is used.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

/// Connections that carried at least one proxied request.
static PROXIED_CONNECTIONS: AtomicUsize = AtomicUsize::new(0);
/// Requests that carried X-Forwarded-For.
static PROXIED_REQUESTS: AtomicUsize = AtomicUsize::new(0);

/// Longest request head accepted, in bytes.
const MAX_HEAD: usize = 16 * 1024;

fn main() {
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let version = std::env::var("VERSION").unwrap_or_else(|_| "v1".into());
    let listener = match TcpListener::bind(format!("0.0.0.0:{port}")) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("kaweb: bind 0.0.0.0:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("kaweb {version} listening on {port}");
    let body: &'static str = Box::leak(format!("kaweb {version}\n").into_boxed_str());
    let host: &'static str = Box::leak(
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap_or_default()
            .into_boxed_str(),
    );
    for stream in listener.incoming().flatten() {
        let _ = stream.set_nodelay(true);
        thread::spawn(move || {
            let _ = serve(stream, body, host);
        });
    }
}

/// Serves requests on one connection until the peer closes it or asks to.
fn serve(stream: TcpStream, body: &str, host: &str) -> std::io::Result<()> {
    let peer = stream
        .peer_addr()
        .map(|a| format!("{}\n", a.ip()))
        .unwrap_or_default();
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut counted = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let path = parts.next().unwrap_or("").to_string();
        let http10 = parts.next() == Some("HTTP/1.0");
        let mut close = http10;
        let mut content_length = 0usize;
        let mut proxied = false;
        let mut head = line.len();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            head += line.len();
            if head > MAX_HEAD {
                writer.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
                return Ok(());
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                continue;
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse().unwrap_or(0);
            } else if name.eq_ignore_ascii_case("connection") {
                close = value.eq_ignore_ascii_case("close");
            } else if name.eq_ignore_ascii_case("x-forwarded-for") {
                proxied = true;
            }
        }
        std::io::copy(
            &mut (&mut reader).take(content_length as u64),
            &mut std::io::sink(),
        )?;
        if proxied {
            PROXIED_REQUESTS.fetch_add(1, Ordering::Relaxed);
            if !counted {
                counted = true;
                PROXIED_CONNECTIONS.fetch_add(1, Ordering::Relaxed);
            }
        }
        let stats;
        let text = match path.as_str() {
            "/healthz" => "ok\n",
            "/peer" => &peer,
            "/host" => &host,
            "/stats" => {
                stats = format!(
                    "proxied_connections={} proxied_requests={}\n",
                    PROXIED_CONNECTIONS.load(Ordering::Relaxed),
                    PROXIED_REQUESTS.load(Ordering::Relaxed)
                );
                &stats
            }
            _ => body,
        };
        let conn = if close { "close" } else { "keep-alive" };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n",
            text.len()
        );
        if method != "HEAD" {
            out.push_str(text);
        }
        writer.write_all(out.as_bytes())?;
        if close {
            return Ok(());
        }
    }
}
