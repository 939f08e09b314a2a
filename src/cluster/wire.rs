//! What crosses the wire between an agent and the server. A join is one
//! call; after it, one long-lived stream per agent carries calls down
//! (pull, start, restart, kill, remove, list, isolation, logs, usage,
//! exec, and an interactive exec's input) and answers, events, log lines,
//! exec output and heartbeats with the node's full inventory up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::codec::Frame;
use crate::agent::archive::Piece;
use crate::agent::{AgentEvent, Instance, InstanceSpec, LogLine, PullMode, Pulled};
use crate::nodes::Hello;

/// The generated client and server of the service `orca.cluster.Cluster`.
pub mod service {
    #![allow(clippy::all, clippy::unwrap_used, missing_docs, unused_qualifications)]
    include!(concat!(env!("OUT_DIR"), "/orca.cluster.Cluster.rs"));
}

/// A node asks to join: the token's secret, its id, and a certificate
/// signing request for its own key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinRequest {
    pub token: String,
    pub node_id: String,
    pub csr_pem: String,
}

/// The node's certificate, the cluster CA's, and the /24 of the cluster
/// subnet its replicas take (`node_index` of `subnet`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinReply {
    pub cert_pem: String,
    pub ca_pem: String,
    pub subnet: String,
    pub node_index: u32,
}

/// Another server joins the control plane: the token's secret and its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerJoinRequest {
    pub token: String,
    pub server_id: String,
}

/// The secrets key (hex) every server of the control plane holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerJoinReply {
    pub secrets_key: String,
}

/// Agent to server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Up {
    /// First on every connection.
    Hello(Hello),
    /// Every few seconds: alive, with every replica the node runs (None:
    /// its containerd does not answer).
    Heartbeat {
        inventory: Option<Vec<Instance>>,
    },
    /// The answer to call `id`.
    Reply {
        id: u64,
        result: Result<Answer, WireError>,
    },
    Event(AgentEvent),
    /// A line of the log followed by call `id`.
    Log {
        id: u64,
        line: LogLine,
    },
    /// The log followed by call `id` ended.
    LogEnd {
        id: u64,
    },
    /// Output of the interactive exec of call `id`; `Exit` is its last.
    Attached {
        id: u64,
        output: cri::AttachOutput,
    },
    /// A piece of the volume archive of call `id`; `End` is its last.
    Piece {
        id: u64,
        piece: Piece,
    },
}

/// Server to agent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Down {
    /// The connection is taken; its session number, and the term of the
    /// leader that took it (0 on a server without an election).
    Welcome {
        session: u64,
        #[serde(default)]
        term: u64,
    },
    /// A command, with the sending leader's term: an agent refuses one of
    /// an older term than the newest it has seen. The term is set on the
    /// way out, by the session's stream (see `service`).
    Call {
        id: u64,
        call: Call,
        #[serde(default)]
        term: u64,
    },
    /// Stop following the log of call `id`, or kill its interactive exec.
    Cancel { id: u64 },
    /// Input for the interactive exec of call `id`.
    Attach { id: u64, input: cri::AttachInput },
    /// A piece of the archive call `id` receives; `End` is its last.
    Piece { id: u64, piece: Piece },
}

impl Down {
    /// Call `id`; its term is set on the way out (see `Down::Call`).
    pub fn call(id: u64, call: Call) -> Self {
        Down::Call { id, call, term: 0 }
    }
}

/// A piece's call id and bytes, if it is data (its end goes as JSON).
fn raw_piece(id: u64, piece: &Piece) -> Option<(u64, &[u8])> {
    match piece {
        Piece::Data(d) => Some((id, d)),
        Piece::End(_) => None,
    }
}

impl Frame for Up {
    fn raw(&self) -> Option<(u64, &[u8])> {
        match self {
            Up::Piece { id, piece } => raw_piece(*id, piece),
            _ => None,
        }
    }

    fn from_raw(id: u64, data: bytes::Bytes) -> Option<Self> {
        Some(Up::Piece {
            id,
            piece: Piece::Data(data),
        })
    }
}

impl Frame for Down {
    fn raw(&self) -> Option<(u64, &[u8])> {
        match self {
            Down::Piece { id, piece } => raw_piece(*id, piece),
            _ => None,
        }
    }

    fn from_raw(id: u64, data: bytes::Bytes) -> Option<Self> {
        Some(Down::Piece {
            id,
            piece: Piece::Data(data),
        })
    }
}

impl Frame for JoinRequest {}
impl Frame for JoinReply {}
impl Frame for ServerJoinRequest {}
impl Frame for ServerJoinReply {}

/// What the server asks of a node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Call {
    Pull {
        image: String,
        mode: PullMode,
    },
    Start(Box<InstanceSpec>),
    Restart {
        id: String,
    },
    Kill {
        id: String,
    },
    Remove {
        id: String,
        grace_ms: u64,
    },
    List,
    ListService {
        service: String,
    },
    /// The node network: isolation and published ports.
    Isolation {
        projects: BTreeMap<String, Vec<Ipv4Addr>>,
        internal: Vec<Ipv4Addr>,
        #[serde(default)]
        ports: Vec<network::ports::PortRule>,
    },
    LogsTail {
        id: String,
        n: usize,
    },
    LogsFollow {
        id: String,
    },
    Usage {
        id: String,
    },
    Exec {
        id: String,
        command: Vec<String>,
        timeout_ms: u64,
    },
    /// An interactive exec: answered `Done` once it runs; its output then
    /// comes up as [`Up::Attached`] under the call's id.
    Attach {
        id: String,
        command: Vec<String>,
        opts: cri::AttachOptions,
    },
    /// Routes to the other nodes' replicas.
    Peers(Vec<network::Peer>),
    /// What the node's DNS server and ingress answer with.
    Serve(Box<Tables>),
    /// The node's named volumes, with sizes.
    Volumes,
    /// Delete a volume and its data.
    RemoveVolume {
        project: String,
        name: String,
    },
    /// Stream a volume's archive up (answered `Export` first, then
    /// [`Up::Piece`]s under the call's id).
    ExportVolume {
        project: String,
        name: String,
        pause: bool,
        gzip: bool,
    },
    /// Receive a volume's archive ([`Down::Piece`]s under the call's id),
    /// answered once it is checked and unpacked.
    ReceiveVolume {
        project: String,
        name: String,
        gzip: bool,
    },
    CommitVolume {
        project: String,
        name: String,
    },
    DiscardVolume {
        project: String,
        name: String,
    },
    VolumeUsers {
        project: String,
        name: String,
    },
    /// Open a port for a volume sent straight from another node.
    ListenVolume {
        project: String,
        name: String,
    },
    /// Send a volume straight to another node.
    SendVolume {
        project: String,
        name: String,
        to: crate::agent::direct::DirectTarget,
    },
    /// Take (or, with `cancel`, give up) what a listen opened for.
    AwaitVolume {
        token: String,
        cancel: bool,
    },
    /// Check a replica's readiness and liveness until it stops running.
    Check {
        id: String,
        readiness: Option<Box<crate::agent::probe::Check>>,
        liveness: Option<Box<crate::agent::probe::Check>>,
    },
}

/// The DNS names and ingress routes a node serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tables {
    pub names: network::dns::Names,
    pub routes: std::collections::HashMap<String, Vec<network::proxy::Backend>>,
    /// The certificates of the TLS domains (chain and key, PEM).
    #[serde(default)]
    pub certs: std::collections::HashMap<String, network::proxy::TlsPair>,
    /// ACME HTTP-01 answers in flight (token to key authorization).
    #[serde(default)]
    pub challenges: std::collections::HashMap<String, String>,
}

/// A node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Answer {
    Pulled(Pulled),
    Pid(u32),
    Started(crate::agent::Started),
    Done,
    Instances(Vec<Instance>),
    Logs(Vec<LogLine>),
    Usage(cri::metrics::Usage),
    Exec(cri::ExecOutput),
    Volumes(Vec<crate::agent::volumes::VolumeInfo>),
    Removed(bool),
    Export { paused_ms: Option<u64> },
    Received(crate::agent::backup::Received),
    Listening(crate::agent::direct::Listening),
    Sent(crate::agent::direct::Sent),
    Ids(Vec<String>),
}

/// A node's failure, typed so that the server can tell "no such replica"
/// from "containerd failed".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WireError {
    pub kind: ErrorKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum ErrorKind {
    NotFound,
    /// The node's containerd could not be reached.
    Unavailable,
    Runtime,
    /// Also any kind a newer node sends that this one does not know.
    #[serde(other)]
    Other,
}

impl From<&crate::agent::AgentError> for WireError {
    fn from(e: &crate::agent::AgentError) -> Self {
        use crate::agent::AgentError;
        let kind = match e {
            AgentError::NotFound(_) => ErrorKind::NotFound,
            AgentError::Runtime(c) if c.is_not_found() => ErrorKind::NotFound,
            AgentError::Runtime(c) if c.is_unavailable() => ErrorKind::Unavailable,
            AgentError::RemoteUnavailable(_) => ErrorKind::Unavailable,
            AgentError::Runtime(_) | AgentError::Remote(_) => ErrorKind::Runtime,
            AgentError::Unreachable { .. } | AgentError::Other(_) => ErrorKind::Other,
        };
        WireError {
            kind,
            message: e.to_string(),
        }
    }
}

impl WireError {
    /// The error as the server's side of the trait reports it.
    pub fn into_agent_error(self) -> crate::agent::AgentError {
        use crate::agent::AgentError;
        match self.kind {
            ErrorKind::NotFound => AgentError::NotFound(self.message),
            ErrorKind::Unavailable => AgentError::RemoteUnavailable(self.message),
            ErrorKind::Runtime => AgentError::Remote(self.message),
            ErrorKind::Other => AgentError::Other(self.message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::AgentError;

    #[test]
    fn an_unavailable_containerd_stays_so_across_the_wire() {
        let local = AgentError::Runtime(cri::CriError::Unavailable {
            socket: "/run/containerd/containerd.sock".into(),
            reason: "connection refused".into(),
        });
        assert!(local.is_unavailable());
        let wire: WireError = (&local).into();
        assert_eq!(wire.kind, ErrorKind::Unavailable);
        let remote = wire.into_agent_error();
        assert!(remote.is_unavailable(), "{remote:?}");
        // Another runtime failure is not.
        let other = WireError::from(&AgentError::Remote("runc failed".into())).into_agent_error();
        assert!(!other.is_unavailable());
        // A kind this node does not know reads as Other.
        let unknown: ErrorKind = serde_json::from_str("\"Throttled\"").unwrap();
        assert_eq!(unknown, ErrorKind::Other);
    }
}
