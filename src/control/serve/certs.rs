//! The certificates of services with `tls = { cert, key }`: one task owns
//! the table. It reads each service's files on the server when the spec
//! names them and again when they change on disk (a renewal by certbot and
//! the like), checks that they parse and that the key fits, and has the
//! routes published again (to every node's ingress) when the table
//! changes. A service whose files do not work is served over plain HTTP,
//! and its status says why.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use api::spec::{TlsFiles, TlsSpec};
use network::proxy::TlsPair;

use crate::control::Inner;

/// How often the files are looked at for changes.
const LOOK_EVERY: Duration = Duration::from_secs(10);

/// The served certificates, by domain.
pub(crate) type Certs = HashMap<String, TlsPair>;

/// A service's TLS files as last read: their modification times, and what
/// came of them.
#[derive(Clone)]
struct Read {
    stamps: (Option<SystemTime>, Option<SystemTime>),
    outcome: Result<TlsPair, String>,
}

/// Reads `files` (under `cert_dir`) unless their stamps say nothing
/// changed since `before`.
fn read(cert_dir: &Path, files: &TlsFiles, before: Option<&Read>) -> Read {
    let stamp = |p: &str| std::fs::symlink_metadata(p).and_then(|m| m.modified()).ok();
    let stamps = (stamp(&files.cert), stamp(&files.key));
    if let Some(b) = before.filter(|b| b.stamps == stamps && stamps.0.is_some()) {
        return b.clone();
    }
    let load = |field: &str, p: &str| super::cert_file::read(cert_dir, field, p);
    let outcome = load("cert", &files.cert).and_then(|cert_pem| {
        let key_pem = load("key", &files.key)?;
        let pair = TlsPair { cert_pem, key_pem };
        network::proxy::tls::certified(&pair)
            .map(|_| pair)
            .map_err(|e| format!("tls {}: {e}", files.cert))
    });
    Read { stamps, outcome }
}

/// A running service with `tls`: its name, its domain, and its files
/// (none: ACME).
struct Wanted {
    service: String,
    domain: String,
    files: Option<TlsFiles>,
}

/// What one service's certificate came to.
type Outcome = (String, String, Result<TlsPair, String>);

fn wanted(inner: &Inner) -> Vec<Wanted> {
    let st = inner.state();
    st.records
        .values()
        .filter(|r| !r.stopped)
        .filter_map(|r| {
            let domain = r.spec.domain.as_ref()?.to_ascii_lowercase();
            let files = match r.spec.tls.as_ref()? {
                TlsSpec::Files(f) => Some(f.clone()),
                TlsSpec::Mode(_) => None,
            };
            Some(Wanted {
                service: r.spec.name.clone(),
                domain,
                files,
            })
        })
        .collect()
}

/// Keeps the table while the control plane lives: looks at the files
/// every [`LOOK_EVERY`] and whenever `inner.certs_wake` is notified (a
/// record saved, or ACME got a certificate).
pub(crate) async fn run(inner: std::sync::Weak<Inner>) {
    let mut known: HashMap<(String, String), Read> = HashMap::new();
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let wanted = wanted(&inner);
        let issued = inner.acme.borrow().clone();
        let before = std::mem::take(&mut known);
        let cert_dir: PathBuf = inner.settings.cert_dir.clone();
        let looked = tokio::task::spawn_blocking(move || {
            let mut now = HashMap::new();
            let mut out: Vec<Outcome> = Vec::new();
            for w in wanted {
                let outcome = match &w.files {
                    Some(files) => {
                        let key = (files.cert.clone(), files.key.clone());
                        let r = read(&cert_dir, files, before.get(&key));
                        let outcome = r.outcome.clone();
                        now.insert(key, r);
                        outcome
                    }
                    None => issued.get(&w.domain).cloned().unwrap_or_else(|| {
                        Err(format!(
                            "tls acme for {}: waiting for a certificate",
                            w.domain
                        ))
                    }),
                };
                out.push((w.service, w.domain, outcome));
            }
            (now, out)
        })
        .await;
        if let Ok((now, out)) = looked {
            known = now;
            apply(&inner, out).await;
        }
        let wake = inner.certs_wake.clone();
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Which ready nodes' ingress has no HTTPS (they serve TLS services over
/// HTTP only), as a status note; None when every one has it.
fn http_only(table: &crate::nodes::Table) -> Option<String> {
    let plain: Vec<&str> = table
        .nodes
        .values()
        .filter(|n| n.ready() && !n.record.https)
        .map(|n| n.id())
        .collect();
    (!plain.is_empty()).then(|| {
        format!(
            "served over HTTP only on {}: no [proxy] https_listen there",
            plain.join(", ")
        )
    })
}

/// Puts what was read in place: the table (routes published again when it
/// changed) and each service's problem, if any.
async fn apply(inner: &Arc<Inner>, read: Vec<Outcome>) {
    let mut certs = Certs::new();
    let mut problems: HashMap<String, String> = HashMap::new();
    let plain = http_only(&inner.nodes.snapshot());
    for (service, domain, outcome) in read {
        match outcome {
            Ok(pair) => {
                certs.insert(domain, pair);
                if let Some(note) = &plain {
                    problems.insert(service, note.clone());
                }
            }
            Err(e) => {
                problems.insert(service, format!("{e}; serving HTTP only"));
            }
        }
    }
    let changed = inner.certs.send_if_modified(|current| {
        let changed = *current != certs;
        if changed {
            *current = certs;
        }
        changed
    });
    inner.state.tls_problems(problems).await;
    if changed {
        crate::control::publish::publish_routes(inner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_read_again_only_when_they_change() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["a.test".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        let files = TlsFiles {
            cert: c.to_str().unwrap().into(),
            key: k.to_str().unwrap().into(),
        };
        let first = read(dir.path(), &files, None);
        assert!(first.outcome.is_ok());
        // Same stamps: the earlier outcome stands, even if it was a failure.
        let failed = Read {
            stamps: first.stamps,
            outcome: Err("x".into()),
        };
        assert_eq!(
            read(dir.path(), &files, Some(&failed)).outcome,
            Err("x".into())
        );
        // A bad key file.
        std::fs::write(&k, "not a key").unwrap();
        let later = SystemTime::now() + Duration::from_secs(5);
        std::fs::File::options()
            .write(true)
            .open(&k)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let bad = read(dir.path(), &files, Some(&first)).outcome.unwrap_err();
        assert!(bad.contains("key"), "{bad}");
        let gone = dir.path().join("gone.pem").display().to_string();
        let missing = TlsFiles {
            cert: gone.clone(),
            key: files.key.clone(),
        };
        let e = read(dir.path(), &missing, None).outcome.unwrap_err();
        assert!(e.starts_with(&format!("tls.cert {gone}")), "{e}");
        // Outside the directory: refused, never read.
        let shadow = TlsFiles {
            cert: "/etc/shadow".into(),
            key: files.key.clone(),
        };
        let e = read(dir.path(), &shadow, None).outcome.unwrap_err();
        assert!(e.contains("cert_dir"), "{e}");
    }

    #[test]
    fn nodes_without_https_are_named_in_the_status() {
        use crate::nodes::{Node, NodeState, Table};
        use crate::store::NodeRecord;
        let node = |id: &str, https: bool, ready: bool| {
            let record = NodeRecord {
                id: id.into(),
                https,
                ..NodeRecord::default()
            };
            let mut n = Node::disconnected(record, std::time::Instant::now());
            if ready {
                n.state = NodeState::Ready;
                n.agent = Some(Arc::new(crate::agent::fake::FakeAgent::named(id)));
            }
            (id.to_string(), n)
        };
        let table = |nodes: Vec<(String, Node)>| Table {
            nodes: nodes.into_iter().collect(),
            local: None,
        };
        assert_eq!(http_only(&table(vec![node("n1", true, true)])), None);
        // A disconnected node serves nothing at all: not named.
        assert_eq!(
            http_only(&table(vec![
                node("n1", true, true),
                node("n3", false, false)
            ])),
            None
        );
        assert_eq!(
            http_only(&table(vec![
                node("n1", true, true),
                node("n2", false, true),
                node("n4", false, true)
            ]))
            .as_deref(),
            Some("served over HTTP only on n2, n4: no [proxy] https_listen there")
        );
    }
}
