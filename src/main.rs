//! The `orca` binary: the CLI, the control plane and the local node agent
//! over the `cri`, `network` and `api` crates.
//!
//! It also serves as containerd's `binary://` logger (`orca log-shim FILE`,
//! hidden), so container logs need nothing else installed.
//!
//! # Layout
//! - `cli`: argument parsing and the commands.
//! - `server`: `orca server` wiring and shutdown.
//! - `config`: cluster.toml.
//! - `store`: durable desired state (sled) behind a trait.
//! - `agent`: the node boundary (`NodeAgent`) and the local agent.
//! - `nodes`: the node registry.
//! - `control`: the reconciler and the API handlers.
//! - `metrics`: Prometheus metrics.
//! - `imports`: the air-gap directory.

#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod admin_token;
mod agent;
mod checked_tls;
mod cli;
mod cluster;
mod config;
mod control;
mod feed;
mod ha;
mod imports;
mod metrics;
mod node;
mod nodes;
mod secrets;
mod server;
mod store;
mod volumes;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // The log shim runs for every container: keep it free of the runtime
    // and the argument parser's cost.
    if args.get(1).map(String::as_str) == Some("log-shim") {
        return match args.get(2) {
            Some(file) => match cri::logs::run_shim(std::path::Path::new(file)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("orca log-shim: {file}: {e}");
                    ExitCode::FAILURE
                }
            },
            None => {
                eprintln!("usage: orca log-shim FILE");
                ExitCode::FAILURE
            }
        };
    }
    cli::main()
}
