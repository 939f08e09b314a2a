//! `tls`: HTTPS for a service's domain on the ingress, from an ACME
//! authority or from PEM files on the server.

use serde::{Deserialize, Serialize};

/// `tls`: `"acme"`, or `{ cert, key }` files on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TlsSpec {
    Mode(TlsMode),
    Files(TlsFiles),
}

impl<'de> Deserialize<'de> for TlsSpec {
    /// A string or a table, with an error that says which it may be.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        const EXPECTED: &str =
            r#""acme" or { cert = "/path/fullchain.pem", key = "/path/privkey.pem" }"#;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TlsSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TlsSpec, E> {
                match v {
                    "acme" => Ok(TlsSpec::Mode(TlsMode::Acme)),
                    other => Err(E::custom(format!("tls {other:?}: must be {EXPECTED}"))),
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TlsSpec, A::Error> {
                TlsFiles::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TlsSpec::Files)
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A certificate from an ACME authority.
    Acme,
}

/// PEM files on the server's host, read again when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// Its private key.
    pub key: String,
}
