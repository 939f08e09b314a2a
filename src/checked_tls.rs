//! A TLS client's trust in a server it knows by something other than a
//! name in a public PKI: the caller's own check of the chain the server
//! shows (a pinned CA, a pinned certificate), with the handshake's
//! signatures verified by the crypto provider as usual, so that the
//! server is seen to hold the certificate's key.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// SHA-256 (hex) of a certificate's DER bytes.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// Checks the end-entity certificate and its intermediates at a time.
pub type ChainCheck = dyn Fn(&CertificateDer<'_>, &[CertificateDer<'_>], UnixTime) -> Result<(), rustls::Error>
    + Send
    + Sync;

/// A [`ServerCertVerifier`] made of a [`ChainCheck`].
pub struct CheckedServer {
    provider: Arc<CryptoProvider>,
    check: Box<ChainCheck>,
}

impl CheckedServer {
    pub fn new(provider: Arc<CryptoProvider>, check: Box<ChainCheck>) -> Self {
        Self { provider, check }
    }
}

impl std::fmt::Debug for CheckedServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedServer")
    }
}

impl ServerCertVerifier for CheckedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        (self.check)(end_entity, intermediates, now).map(|()| ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
