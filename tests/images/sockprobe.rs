//! `sockprobe FAMILY [TYPE]`: opens a socket of that address family (and
//! type, default SOCK_STREAM = 1) and prints `ok`, or the error's number
//! and text: what the seccomp filter lets a replica open. Static, std-only.

use std::process::ExitCode;

extern "C" {
    fn socket(domain: i32, kind: i32, protocol: i32) -> i32;
    fn close(fd: i32) -> i32;
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let number = |i: usize, default: i32| {
        args.get(i)
            .map(|a| a.parse::<i32>().unwrap_or(-1))
            .unwrap_or(default)
    };
    let (family, kind) = (number(1, -1), number(2, 1));
    // SAFETY: plain syscalls on integers; the descriptor is closed here.
    let fd = unsafe { socket(family, kind, 0) };
    if fd >= 0 {
        unsafe { close(fd) };
        println!("ok");
        return ExitCode::SUCCESS;
    }
    let e = std::io::Error::last_os_error();
    println!("errno {} {e}", e.raw_os_error().unwrap_or(0));
    ExitCode::from(1)
}
