//! `[store]` in cluster.toml: where a server keeps its state. sled in the
//! data directory (the default, for one server), or an etcd cluster under
//! a key prefix, which several servers can share.

use std::path::PathBuf;

use serde::Deserialize;

/// The store backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Sled,
    Etcd,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    pub backend: Backend,
    /// etcd's client URLs (`https://10.0.0.1:2379`, or `http://` without TLS).
    pub endpoints: Vec<String>,
    /// etcd's CA certificate (PEM), to check its servers' certificates.
    pub ca: Option<PathBuf>,
    /// This server's client certificate and key (PEM), for etcd's client TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Every key orca writes lives under it.
    pub prefix: String,
    /// The leader's lease: a leader that cannot renew it stops acting
    /// before it runs out, and another server leads after it (etcd only).
    pub leader_ttl_secs: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        Self {
            backend: Backend::Sled,
            endpoints: Vec::new(),
            ca: None,
            cert: None,
            key: None,
            prefix: "/orca".into(),
            leader_ttl_secs: 5,
        }
    }
}

impl StoreSection {
    /// What is wrong with it, for the config's error.
    pub fn check(&self) -> Result<(), String> {
        if self.backend == Backend::Sled {
            return Ok(());
        }
        if self.endpoints.is_empty() {
            return Err("[store] backend = \"etcd\" needs endpoints".into());
        }
        for e in &self.endpoints {
            let rest = e
                .strip_prefix("https://")
                .or_else(|| e.strip_prefix("http://"))
                .ok_or_else(|| format!("[store] endpoint {e:?}: http:// or https://"))?;
            if rest.is_empty() || rest.contains(['/', ' ']) {
                return Err(format!("[store] endpoint {e:?}: http(s)://HOST:PORT"));
            }
        }
        let tls = self.endpoints.iter().any(|e| e.starts_with("https://"));
        if tls && self.ca.is_none() {
            return Err("[store] https endpoints need ca (etcd's CA certificate)".into());
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("[store] cert and key go together".into());
        }
        if !(2..=60).contains(&self.leader_ttl_secs) {
            return Err(format!(
                "[store] leader_ttl_secs {}: 2 to 60",
                self.leader_ttl_secs
            ));
        }
        let p = &self.prefix;
        let plain = p.starts_with('/')
            && p.len() > 1
            && !p.ends_with('/')
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-_.".contains(&b));
        if !plain {
            return Err(format!(
                "[store] prefix {p:?}: /name, of letters, digits, / - _ ."
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn etcd(endpoints: &[&str]) -> StoreSection {
        StoreSection {
            backend: Backend::Etcd,
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..StoreSection::default()
        }
    }

    #[test]
    fn checks() {
        StoreSection::default().check().unwrap();
        etcd(&["http://127.0.0.1:2379"]).check().unwrap();
        for (s, says) in [
            (etcd(&[]), "needs endpoints"),
            (etcd(&["127.0.0.1:2379"]), "http:// or https://"),
            (etcd(&["https://10.0.0.1:2379"]), "need ca"),
            (etcd(&["http://a:1/x"]), "HOST:PORT"),
            (
                StoreSection {
                    prefix: "orca/".into(),
                    ..etcd(&["http://a:1"])
                },
                "prefix",
            ),
            (
                StoreSection {
                    leader_ttl_secs: 1,
                    ..etcd(&["http://a:1"])
                },
                "leader_ttl_secs",
            ),
            (
                StoreSection {
                    cert: Some("c.pem".into()),
                    ..etcd(&["http://a:1"])
                },
                "cert and key",
            ),
        ] {
            let e = s.check().unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
