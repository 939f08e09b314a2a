//! The cluster's own transport: join tokens, the cluster CA and node
//! certificates, the gRPC service agents dial, and the agent that dials it.

pub mod agent;
mod calls;
pub mod checks;
pub mod codec;
pub mod enroll;
pub mod keeper;
pub mod pki;
pub mod remote;
pub mod servers;
pub mod service;
pub mod terms;
pub mod token;
mod transfer;
pub mod wire;
