//! HTTPS on the ingress: the certificate of each TLS domain (PEM chain and
//! key, parsed once and kept while unchanged), picked by the client's SNI,
//! and the rustls acceptor the workers hand new connections to.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// A domain's certificate chain and private key, PEM.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TlsPair {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for TlsPair {
    /// Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsPair({} bytes of certificates)", self.cert_pem.len())
    }
}

/// Why a certificate cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate in the PEM")]
    NoCertificate,
    #[error("the certificate PEM does not parse: {0}")]
    BadCertificate(String),
    #[error("the key PEM has no private key that parses: {0}")]
    BadKey(String),
    #[error("the key is of a kind the server cannot sign with: {0}")]
    UnsupportedKey(String),
    #[error("the key does not belong to the certificate")]
    KeyMismatch,
}

/// Parses `pair` into what rustls serves: the chain and a signing key that
/// matches the first certificate.
pub fn certified(pair: &TlsPair) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| TlsError::BadCertificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes())
        .map_err(|e| TlsError::BadKey(e.to_string()))?;
    let signer = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError::UnsupportedKey(e.to_string()))?;
    let certified = CertifiedKey::new(chain, signer);
    match certified.keys_match() {
        Ok(()) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch),
        // Keys whose public half cannot be compared are served as given.
        Err(_) => Ok(certified),
    }
}

/// The certificates the ingress serves, by domain (lowercase).
#[derive(Default)]
pub struct CertStore {
    keys: RwLock<HashMap<String, (TlsPair, Arc<CertifiedKey>)>>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domains: Vec<String> = self
            .keys
            .read()
            .map(|k| k.keys().cloned().collect())
            .unwrap_or_default();
        f.debug_struct("CertStore")
            .field("domains", &domains)
            .finish()
    }
}

impl CertStore {
    /// Serves exactly `pairs` from now on (a pair that did not change keeps
    /// its parsed key); returns why any could not be taken.
    pub fn replace(&self, pairs: &HashMap<String, TlsPair>) -> Vec<(String, TlsError)> {
        let current = self.keys.read().map(|k| k.clone()).unwrap_or_default();
        let mut next = HashMap::with_capacity(pairs.len());
        let mut failed = Vec::new();
        for (domain, pair) in pairs {
            let domain = domain.to_ascii_lowercase();
            match current.get(&domain) {
                Some((same, key)) if same == pair => {
                    next.insert(domain, (pair.clone(), key.clone()));
                }
                _ => match certified(pair) {
                    Ok(key) => {
                        next.insert(domain, (pair.clone(), Arc::new(key)));
                    }
                    Err(e) => failed.push((domain, e)),
                },
            }
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = next;
        }
        failed
    }

    /// Whether `domain` (lowercase) has a certificate.
    pub fn has(&self, domain: &str) -> bool {
        self.keys.read().is_ok_and(|k| k.contains_key(domain))
    }

    fn key(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        let keys = self.keys.read().ok()?;
        keys.get(&domain.to_ascii_lowercase())
            .map(|(_, k)| k.clone())
    }
}

/// Picks the certificate by SNI; a client that names no known domain gets
/// no certificate, and the handshake fails.
struct BySni(Arc<super::Routes>);

impl std::fmt::Debug for BySni {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BySni").field(self.0.certs()).finish()
    }
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.certs().key(hello.server_name()?)
    }
}

/// The acceptor of HTTPS connections for the certificates in `routes`.
pub fn acceptor(routes: Arc<super::Routes>) -> tokio_rustls::TlsAcceptor {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_no_client_auth()
            .with_cert_resolver(Arc::new(BySni(routes)))
    });
    match config.as_mut() {
        Ok(c) => c.alpn_protocols = vec![b"http/1.1".to_vec()],
        Err(e) => tracing::error!(error = %e, "no TLS configuration"),
    }
    let config = config.unwrap_or_else(|_| {
        // The ring provider supports the default versions; this is not reached.
        rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(NoCert))
    });
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

#[derive(Debug)]
struct NoCert;

impl ResolvesServerCert for NoCert {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    pub(crate) fn self_signed(domain: &str) -> TlsPair {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![domain.to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        TlsPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// A replica that answers each request with the X-Forwarded-Proto it got.
    async fn echo_proto() -> std::net::SocketAddr {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
                    let proto = head
                        .lines()
                        .find_map(|l| l.strip_prefix("x-forwarded-proto: "))
                        .unwrap_or("none")
                        .trim()
                        .to_string();
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{proto}",
                        proto.len()
                    );
                    let _ = s.write_all(answer.as_bytes()).await;
                });
            }
        });
        addr
    }

    /// GET `path` of `host` over `io`, the whole answer.
    async fn ask<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
        mut io: S,
        host: &str,
        path: &str,
    ) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        io.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = io.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    }

    #[tokio::test]
    async fn https_by_sni_and_plain_http_redirected_except_acme() {
        let pair = self_signed("secure.test");
        let routes = Arc::new(crate::proxy::Routes::default());
        let replica = echo_proto().await;
        let backend = |id: &str| {
            vec![crate::proxy::Backend {
                id: id.into(),
                addr: replica,
                weight: 1,
                strip_prefix: false,
            }]
        };
        routes.replace(HashMap::from([
            ("secure.test".to_string(), backend("s.0.aaaaaa")),
            ("plain.test".to_string(), backend("p.0.aaaaaa")),
        ]));
        assert!(routes
            .certs()
            .replace(&HashMap::from([("secure.test".to_string(), pair.clone())]))
            .is_empty());
        let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (http_addr, https_addr) = (http.local_addr().unwrap(), https.local_addr().unwrap());
        let ingress = crate::proxy::Ingress::new(routes.clone()).with_https(https_addr.port());
        let workers =
            crate::proxy::IngressWorkers::start_with_https(http, Some(https), ingress, 2).unwrap();

        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pair.cert_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(https_addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("secure.test").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        let answer = ask(tls, "secure.test", "/").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("https"),
            "{answer}"
        );

        // A name with no certificate: no handshake.
        let tcp = tokio::net::TcpStream::connect(https_addr).await.unwrap();
        let other = rustls::pki_types::ServerName::try_from("plain.test").unwrap();
        assert!(connector.connect(other, tcp).await.is_err());

        // Plain HTTP: a TLS domain is redirected, path and query kept; the
        // ACME challenge path and other domains are proxied.
        let tcp = tokio::net::TcpStream::connect(http_addr).await.unwrap();
        let answer = ask(tcp, "secure.test", "/a/b?c=1").await;
        assert!(answer.starts_with("HTTP/1.1 308"), "{answer}");
        let location = format!(
            "location: https://secure.test:{}/a/b?c=1",
            https_addr.port()
        );
        assert!(answer.to_ascii_lowercase().contains(&location), "{answer}");
        let tcp = tokio::net::TcpStream::connect(http_addr).await.unwrap();
        let answer = ask(tcp, "secure.test", "/.well-known/acme-challenge/x").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("http"),
            "{answer}"
        );
        let tcp = tokio::net::TcpStream::connect(http_addr).await.unwrap();
        let answer = ask(tcp, "plain.test", "/").await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("http"),
            "{answer}"
        );
        // An ACME answer in flight is the ingress's own, for any host.
        routes.replace_challenges(HashMap::from([(
            "tok".to_string(),
            "tok.thumb".to_string(),
        )]));
        for host in ["secure.test", "new.test"] {
            let tcp = tokio::net::TcpStream::connect(http_addr).await.unwrap();
            let answer = ask(tcp, host, "/.well-known/acme-challenge/tok").await;
            assert!(
                answer.starts_with("HTTP/1.1 200") && answer.ends_with("tok.thumb"),
                "{answer}"
            );
        }
        workers.stop().await;
    }

    #[test]
    fn pairs_parse_and_bad_ones_say_why() {
        let good = self_signed("a.test");
        assert!(certified(&good).is_ok());
        let other = self_signed("b.test");
        let mismatched = TlsPair {
            cert_pem: good.cert_pem.clone(),
            key_pem: other.key_pem.clone(),
        };
        assert_eq!(certified(&mismatched).err(), Some(TlsError::KeyMismatch));
        let no_cert = TlsPair {
            cert_pem: "nothing".into(),
            key_pem: good.key_pem.clone(),
        };
        assert_eq!(certified(&no_cert).err(), Some(TlsError::NoCertificate));
        let no_key = TlsPair {
            cert_pem: good.cert_pem.clone(),
            key_pem: "nothing".into(),
        };
        assert!(matches!(certified(&no_key), Err(TlsError::BadKey(_))));
        assert!(!format!("{good:?}").contains("PRIVATE"));
    }

    #[test]
    fn the_store_keeps_unchanged_keys_and_drops_the_rest() {
        let store = CertStore::default();
        let a = self_signed("a.test");
        let failed = store.replace(&HashMap::from([
            ("A.test".to_string(), a.clone()),
            (
                "bad.test".to_string(),
                TlsPair {
                    cert_pem: String::new(),
                    key_pem: String::new(),
                },
            ),
        ]));
        assert_eq!(failed.len(), 1);
        assert!(store.has("a.test") && !store.has("bad.test"));
        let before = store.key("a.test").unwrap();
        store.replace(&HashMap::from([("a.test".to_string(), a)]));
        assert!(Arc::ptr_eq(&before, &store.key("A.TEST").unwrap()));
        store.replace(&HashMap::new());
        assert!(!store.has("a.test"));
    }
}
