//! What every node serves, built from the state and pushed to them: DNS
//! names and ingress routes ([`publish`], [`push`]), and the TLS
//! services' certificates, from files under `[proxy] cert_dir` ([`certs`],
//! [`cert_file`]) or ACME ([`acme`]).

pub(crate) mod acme;
pub(crate) mod cert_file;
pub(crate) mod certs;
pub(crate) mod publish;
pub(crate) mod push;
