//! Several servers on one etcd store: an election with a fenced leader
//! ([`election`], deciding by [`lease`]), the cluster CA they share
//! ([`ca`]), a new server's join ([`join`]), and how a server that does not lead answers the API
//! ([`switch`]): it sends requests on to the leader and, while
//! there is none, answers reads from its own view of the store.

pub mod ca;
pub mod election;
pub mod join;
pub mod lead;
pub mod lease;
pub mod switch;

use serde::{Deserialize, Serialize};

/// A server as the others find it: its id and where its API and cluster
/// port answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub id: String,
    /// `HOST:PORT` of its API.
    pub api: String,
    /// `HOST:PORT` of its cluster port.
    pub cluster: String,
}

/// Where this server stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standing {
    /// Another server leads (which one, once known).
    Following(Option<ServerInfo>),
    /// This server leads, in `term` (the leader key's creation revision,
    /// which only grows).
    Leading { term: u64 },
}
