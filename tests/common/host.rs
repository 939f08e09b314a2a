//! The host side of tests and benchmarks: free loopback ports and commands
//! that must succeed. Shared by `tests/common` and `tests/bench/common.rs`.

use std::process::Command;

/// A TCP port free on loopback right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind a loopback port")
        .local_addr()
        .expect("a bound socket's address")
        .port()
}

/// A TCP port below `limit` (and from 900 up) free on every address right
/// now: a privileged port, for tests of who may publish one.
pub fn free_port_below(limit: u16) -> u16 {
    (900..limit)
        .rev()
        .find(|p| std::net::TcpListener::bind(("0.0.0.0", *p)).is_ok())
        .expect("a free port from 900 up")
}

/// Runs `cmd` to its end; its stdout, or a panic naming the command and
/// its stderr when it fails or cannot start.
pub fn run(cmd: &mut Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown} did not start: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes `bridge` and orca's nftables tables of it, whatever is left of
/// them (a test's or benchmark's own; a node keeps its bridge).
pub fn remove_bridge(bridge: &str) {
    use std::io::Write;
    let _ = Command::new("ip").args(["link", "del", bridge]).output();
    let Ok(mut nft) = Command::new("nft")
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    else {
        return;
    };
    if let Some(mut stdin) = nft.stdin.take() {
        let _ = stdin.write_all(network::nft::delete_script(bridge).as_bytes());
    }
    let _ = nft.wait();
}

/// `ctr --address socket --namespace ns args…`, ready to run.
pub fn ctr(socket: &str, ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ctr");
    cmd.args(["--address", socket, "--namespace", ns])
        .args(args);
    cmd
}
