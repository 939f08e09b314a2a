//! The Docker engine the side-by-side benchmarks measure against: the one
//! `ORCA_BENCH_DOCKER_HOST` names (`tests/bench/swarm.sh up` starts a
//! private one, in Swarm mode), driven with the `docker` CLI.

#![allow(dead_code)]

/// The engine's address, when the run has one.
pub fn engine() -> Option<String> {
    std::env::var("ORCA_BENCH_DOCKER_HOST").ok()
}

/// `docker ARGS` against the engine at `host`: stdout, or a panic with
/// its stderr.
pub fn docker(host: &str, args: &[&str]) -> String {
    super::run(
        std::process::Command::new("docker")
            .env("DOCKER_HOST", host)
            .args(args),
    )
}

/// `docker ARGS` where failing is fine (removing what may not be there).
pub fn docker_quiet(host: &str, args: &[&str]) {
    let _ = std::process::Command::new("docker")
        .env("DOCKER_HOST", host)
        .args(args)
        .output();
}
