//! The cluster CA and the certificates it signs: created at the server's
//! first start (`data_dir/cluster/ca.crt`, `ca.key`, 0600), a server
//! certificate for the name `orca-server` at every start, and one client
//! certificate per node from the node's own signing request (its key never
//! leaves it). Also the TLS configurations of both ends: the agent trusts
//! only a CA whose SHA-256 it was given (in the join token), and the
//! server asks for a client certificate of its CA (a join comes without).

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::checked_tls::CheckedServer;

/// The name every server certificate carries, whatever address an agent
/// dials: the CA pin, not the address, identifies the server.
pub const SERVER_NAME: &str = "orca-server";

/// PKI failures, worded for the operator.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("certificate: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

pub use crate::checked_tls::fingerprint;

/// Writes a file only its owner may read.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_error(&tmp))?;
    f.write_all(contents.as_bytes()).map_err(io_error(&tmp))?;
    f.sync_all().map_err(io_error(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_error(path))
}

/// Writes a new file only its owner may read; one that exists is never
/// written over.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io_error(path))?;
    f.write_all(bytes).map_err(io_error(path))?;
    f.sync_all().map_err(io_error(path))
}

/// The cluster's certificate authority.
pub struct Ca {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    key: KeyPair,
    sha256: String,
}

impl Ca {
    /// Loads the CA from `dir`, creating it on the first start.
    pub fn load_or_create(dir: &Path, cluster: &str) -> Result<Ca, PkiError> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if !cert_path.exists() {
            let (cert_pem, key_pem) = Ca::generate(cluster)?;
            write_private(&key_path, &key_pem)?;
            write_private(&cert_path, &cert_pem)?;
        }
        let cert_pem = std::fs::read_to_string(&cert_path).map_err(io_error(&cert_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io_error(&key_path))?;
        Ca::from_pem(cert_pem, &key_pem)
            .map_err(|e| PkiError::Invalid(format!("{}: {e}", cert_path.display())))
    }

    /// The files of a `dir` that [`Ca::load_or_create`] made, if there are.
    pub fn files_in(dir: &Path) -> Option<(String, String)> {
        let cert = std::fs::read_to_string(dir.join("ca.crt")).ok()?;
        let key = std::fs::read_to_string(dir.join("ca.key")).ok()?;
        Some((cert, key))
    }

    /// A new CA for `cluster`: its certificate and key, in PEM.
    pub fn generate(cluster: &str) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("orca cluster CA ({cluster})"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// The CA of this certificate and key (PEM).
    pub fn from_pem(cert_pem: String, key_pem: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = pem_certs(&cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| PkiError::Invalid("no certificate".into()))?;
        Ok(Ca {
            sha256: fingerprint(&cert_der),
            cert_pem,
            cert_der,
            key,
        })
    }

    /// SHA-256 (hex) of the CA certificate: the pin in join tokens.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    fn issuer(&self) -> Result<Issuer<'_, &KeyPair>, PkiError> {
        Ok(Issuer::from_ca_cert_der(&self.cert_der, &self.key)?)
    }

    /// A fresh server certificate and key (PEM), for [`SERVER_NAME`].
    pub fn issue_server(&self) -> Result<(String, String), PkiError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![SERVER_NAME.to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, SERVER_NAME);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a node's request: the certificate names `node_id`, whatever
    /// the request asked for, and serves only as a client's.
    pub fn sign_node(&self, csr_pem: &str, node_id: &str) -> Result<String, PkiError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| PkiError::Invalid(format!("certificate signing request: {e}")))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("orca node {node_id}"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(rand::random::<[u8; 16]>().to_vec().into());
        csr.params = params;
        Ok(csr.signed_by(&self.issuer()?)?.pem())
    }

    /// The server's TLS configuration: its certificate (with the CA in the
    /// chain, so that a joining agent can check the pin), client
    /// certificates of this CA asked for but not required (a join has none).
    pub fn server_tls(&self) -> Result<rustls::ServerConfig, PkiError> {
        let (cert_pem, key_pem) = self.issue_server()?;
        let mut chain = pem_certs(&cert_pem)?;
        chain.push(self.cert_der.clone());
        let key = pem_key(&key_pem)?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert_der.clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Invalid(e.to_string()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain, key)?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }
}

/// The certificates in a PEM text.
pub fn pem_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Invalid(format!("PEM certificate: {e}")))
}

/// The private key in a PEM text.
pub fn pem_key(pem: &str) -> Result<PrivateKeyDer<'static>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| PkiError::Invalid(format!("PEM key: {e}")))
}

/// A node's new key (PEM) and its signing request.
pub fn node_request(node_id: &str) -> Result<(String, String), PkiError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("orca node {node_id}"));
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// The agent's TLS configuration: the server must show a chain up to a
/// CA whose SHA-256 is `ca_sha256`; with `client`, the node's certificate
/// and key (PEM) go along.
pub fn agent_tls(
    ca_sha256: &str,
    client: Option<(&str, &str)>,
) -> Result<rustls::ClientConfig, PkiError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(pinned_ca(ca_sha256.to_string(), provider.clone()));
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some((cert_pem, key_pem)) => {
            builder.with_client_auth_cert(pem_certs(cert_pem)?, pem_key(key_pem)?)?
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

/// Trusts a server whose chain holds the CA whose SHA-256 is `sha256`,
/// and verifies the server's certificate against it.
fn pinned_ca(sha256: String, provider: Arc<rustls::crypto::CryptoProvider>) -> CheckedServer {
    let check_provider = provider.clone();
    CheckedServer::new(
        provider,
        Box::new(move |end_entity, intermediates, now| {
            let ca = intermediates
                .iter()
                .find(|c| fingerprint(c) == sha256)
                .ok_or_else(|| {
                    rustls::Error::General(
                        "the server's CA does not match the join token's pin (wrong server, or a token of another cluster)"
                            .into(),
                    )
                })?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.clone().into_owned())?;
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                check_provider.clone(),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            let name = ServerName::try_from(SERVER_NAME)
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            verifier
                .verify_server_cert(end_entity, &[], &name, &[], now)
                .map(|_| ())
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_persists_and_signs_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path(), "t").unwrap();
        let again = Ca::load_or_create(dir.path(), "t").unwrap();
        assert_eq!(ca.sha256(), again.sha256(), "the CA survives a restart");
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        let (_key, csr) = node_request("w1").unwrap();
        let cert = ca.sign_node(&csr, "w1").unwrap();
        assert_eq!(pem_certs(&cert).unwrap().len(), 1);
        assert!(ca.sign_node("not a request", "w1").is_err());
        ca.server_tls().unwrap();
        agent_tls(ca.sha256(), None).unwrap();
    }
}
