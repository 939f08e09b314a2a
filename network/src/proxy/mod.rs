//! The ingress proxy: HTTP by Host header to the ready replicas of the
//! service whose `domain` matches, round robin (weighted, for canaries),
//! streaming bodies both ways, WebSocket upgrades, keep-alive pools to the
//! replicas, and a replica that refuses connections taken out of rotation
//! at once, before any health check notices. JSON errors: 404 for an
//! unknown host, 503 when no replica is ready, 502 when none answers, 504
//! when a replica does not start answering within a minute.
//! HTTPS terminates in front of [`Ingress::handle`] with the certificate
//! the client's SNI names; plain HTTP to a domain that has one is
//! redirected there.
//!
//! - [`routes`]: the routing table and weighted round robin.
//! - [`ingress`]: one proxied request.
//! - [`headers`]: what a request and a response head lose and gain on the way.
//! - [`upstream`]: a worker's keep-alive connections to the replicas.
//! - [`serve`]: accept loops and the worker threads they run on.
//! - [`tls`]: the certificates by domain, and the TLS acceptor.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;

mod headers;
pub mod ingress;
pub mod routes;
pub mod serve;
pub mod tls;
mod upstream;

pub use ingress::Ingress;
pub use routes::{route_key, Backend, Routes};
pub use serve::{serve, IngressWorkers};
pub use tls::{CertStore, TlsPair};

type Body = BoxBody<Bytes, hyper::Error>;
