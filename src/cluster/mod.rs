//! The cluster's own transport: join tokens, the cluster CA and node
//! certificates, the gRPC service agents dial, and the agent that dials it.

pub mod token;
