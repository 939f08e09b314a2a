//! A small OCI distribution client over hyper: manifests and blobs, mirrors
//! tried first, plain HTTP for insecure registries and loopback, Bearer-token
//! and Basic auth, redirects for blob downloads. Blobs are handed back as
//! streaming bodies so they go straight into containerd's content store.

pub mod auth;
mod url;

pub use url::is_loopback;
use url::{host_of, resolve_location, same_origin, same_site, scheme_of, strip_port};

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, WWW_AUTHENTICATE};
use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use auth::Credentials;
use auth::{Challenge, TokenResponse};

use crate::error::{error_chain, CriError, Result};
use crate::reference::ImageRef;

/// Manifest media types we accept, most specific first.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json";

/// Largest manifest or index we read into memory.
const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;
/// Redirects followed for one blob.
const MAX_REDIRECTS: usize = 5;

/// Registry settings (`[registry]` in cluster.toml).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// `host:port` reached over plain HTTP (loopback always is).
    pub insecure: Vec<String>,
    /// Registry host → mirror base URL (`http://127.0.0.1:5000`), tried first.
    pub mirrors: HashMap<String, String>,
    /// Credentials per registry (or mirror) host.
    pub auth: HashMap<String, Credentials>,
    /// The air-gap directory: archives dropped here are imported (read by
    /// orca's server; `data_dir/images` when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub import_dir: Option<std::path::PathBuf>,
}

/// Where a manifest came from, so its blobs are fetched from the same place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `host[:port]`.
    pub host: String,
    /// True for a configured mirror.
    pub mirror: bool,
}

impl Endpoint {
    fn url(&self, path: &str) -> String {
        format!("{}://{}{}", self.scheme, self.host, path)
    }
}

/// A manifest or index exactly as the registry served it.
#[derive(Debug, Clone)]
pub struct RawManifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// `sha256:` of `bytes`.
    pub digest: String,
    pub endpoint: Endpoint,
}

/// The registry client; one per [`crate::Cri`].
pub struct RegistryClient {
    config: RegistryConfig,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
    /// `Authorization` values per (host, repository) that worked before.
    tokens: Mutex<HashMap<(String, String), String>>,
}

/// How long connecting to a registry may take.
pub const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

impl RegistryClient {
    /// A client with `config`.
    pub fn new(config: RegistryConfig) -> Result<Self> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        // A registry that does not answer is unreachable, not slow forever.
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())
            .map_err(|e| CriError::registry("(tls setup)", e))?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(https);
        Ok(Self {
            config,
            http,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// The endpoints to try for `image`, mirrors first.
    pub fn endpoints(&self, image: &ImageRef) -> Vec<Endpoint> {
        let mut out = Vec::new();
        if let Some(mirror) = self.config.mirrors.get(&image.registry) {
            let (scheme, host) = match mirror.split_once("://") {
                Some(("http", host)) => ("http", host),
                Some((_, host)) => ("https", host),
                None => (self.scheme_for(mirror), mirror.as_str()),
            };
            out.push(Endpoint {
                scheme,
                host: host.trim_end_matches('/').to_string(),
                mirror: true,
            });
        }
        let host = image.api_host().to_string();
        out.push(Endpoint {
            scheme: self.scheme_for(&host),
            host,
            mirror: false,
        });
        out
    }

    /// Plain HTTP for configured insecure registries and always for loopback.
    fn scheme_for(&self, host_port: &str) -> &'static str {
        if is_loopback(host_port) || self.config.insecure.iter().any(|h| h == host_port) {
            "http"
        } else {
            "https"
        }
    }

    /// Fetches the manifest (or index) `image` names, trying mirrors first.
    pub async fn fetch_manifest(&self, image: &ImageRef) -> Result<RawManifest> {
        let mut last_error = None;
        for endpoint in self.endpoints(image) {
            match self
                .fetch_manifest_at(&endpoint, image, image.manifest_reference())
                .await
            {
                Ok(m) => return Ok(m),
                Err(e) if endpoint.mirror => {
                    tracing::info!(image = %image, mirror = %endpoint.host, error = %e, "mirror failed, trying the registry");
                    last_error = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| CriError::registry(image, "no endpoint")))
    }

    /// Fetches a manifest by `reference` (tag or digest) from `endpoint`.
    pub async fn fetch_manifest_at(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        reference: &str,
    ) -> Result<RawManifest> {
        let path = format!("/v2/{}/manifests/{}", image.repository, reference);
        let response = self
            .get(endpoint, image, &path, Some(MANIFEST_ACCEPT))
            .await?;
        let media_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
            .unwrap_or_default();
        let bytes = read_limited(response.into_body(), MAX_MANIFEST_BYTES)
            .await
            .map_err(|e| CriError::registry(image, e))?;
        let digest = sha256_digest(&bytes);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(CriError::DigestMismatch {
                what: format!("manifest of {image}"),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        Ok(RawManifest {
            bytes,
            media_type,
            digest,
            endpoint: endpoint.clone(),
        })
    }

    /// Starts downloading a blob; the body streams.
    pub async fn fetch_blob(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        digest: &str,
    ) -> Result<Incoming> {
        let path = format!("/v2/{}/blobs/{}", image.repository, digest);
        let response = self.get(endpoint, image, &path, None).await?;
        Ok(response.into_body())
    }

    /// GET with auth and redirects; maps statuses to errors.
    async fn get(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        path: &str,
        accept: Option<&str>,
    ) -> Result<http::Response<Incoming>> {
        let key = (endpoint.host.clone(), image.repository.clone());
        let mut url = endpoint.url(path);
        let mut authorization = self.cached_token(&key);
        let mut tried_auth = false;
        let mut redirects = 0;
        loop {
            let response = self
                .send(&url, accept, authorization.as_deref(), image)
                .await?;
            let status = response.status();
            if status.is_success() {
                if authorization.is_some() && !tried_auth {
                    // Cached value still good.
                } else if let Some(a) = &authorization {
                    self.store_token(key.clone(), a.clone());
                }
                return Ok(response);
            }
            if status.is_redirection() {
                redirects += 1;
                let location = response
                    .headers()
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let Some(location) = location else {
                    return Err(CriError::registry(
                        image,
                        format!("{status} without Location"),
                    ));
                };
                if redirects > MAX_REDIRECTS {
                    return Err(CriError::registry(image, "too many redirects"));
                }
                let next = resolve_location(&url, &location);
                // Credentials stay with the registry, never go to a CDN,
                // nor down to plain HTTP.
                if !same_origin(&next, &url) {
                    authorization = None;
                }
                url = next;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED && !tried_auth {
                tried_auth = true;
                let challenge = response
                    .headers()
                    .get(WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse);
                authorization = Some(self.authorize(endpoint, image, challenge).await?);
                continue;
            }
            let body = read_limited(response.into_body(), 4096)
                .await
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                .unwrap_or_default();
            return Err(match status {
                StatusCode::NOT_FOUND => CriError::ImageNotFound {
                    reference: image.to_string(),
                },
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    self.forget_token(&key);
                    CriError::RegistryUnauthorized {
                        reference: image.to_string(),
                        reason: format!("{status} from {}: {}", endpoint.host, short(&body)),
                    }
                }
                _ => CriError::registry(
                    image,
                    format!(
                        "{status} from {} for {path}: {}",
                        endpoint.host,
                        short(&body)
                    ),
                ),
            });
        }
    }

    async fn send(
        &self,
        url: &str,
        accept: Option<&str>,
        authorization: Option<&str>,
        image: &ImageRef,
    ) -> Result<http::Response<Incoming>> {
        let uri: Uri = url
            .parse()
            .map_err(|e| CriError::registry(image, format!("bad url {url}: {e}")))?;
        let mut builder = Request::get(uri).header(http::header::USER_AGENT, "orca");
        if let Some(accept) = accept {
            builder = builder.header(ACCEPT, accept);
        }
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        let request = builder
            .body(Empty::new())
            .map_err(|e| CriError::registry(image, e))?;
        self.http.request(request).await.map_err(|e| {
            let reason = format!("GET {url}: {}", error_chain(&e));
            if e.is_connect() {
                // DNS, refused, no route, or no answer in time.
                CriError::RegistryUnreachable {
                    reference: image.to_string(),
                    reason,
                }
            } else {
                CriError::registry(image, reason)
            }
        })
    }

    /// Answers a 401: a Bearer token from the realm, or Basic credentials.
    async fn authorize(
        &self,
        endpoint: &Endpoint,
        image: &ImageRef,
        challenge: Option<Challenge>,
    ) -> Result<String> {
        let credentials = self.config.auth.get(&endpoint.host).or_else(|| {
            (!endpoint.mirror)
                .then(|| self.config.auth.get(&image.registry))
                .flatten()
        });
        let unauthorized = |reason: String| CriError::RegistryUnauthorized {
            reference: image.to_string(),
            reason,
        };
        match challenge {
            Some(Challenge::Basic) => credentials.map(Credentials::basic_header).ok_or_else(|| {
                unauthorized(format!(
                    "{} wants credentials and none are configured",
                    endpoint.host
                ))
            }),
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let url = auth::token_url(
                    &realm,
                    service.as_deref(),
                    scope.as_deref(),
                    &image.repository,
                );
                // Credentials go to a token server of the registry's own
                // site over https (or to a loopback or insecure-configured
                // one); any other realm is asked without them.
                let basic = credentials
                    .filter(|_| self.may_send_credentials(endpoint, &realm))
                    .map(Credentials::basic_header);
                if credentials.is_some() && basic.is_none() {
                    tracing::warn!(registry = %endpoint.host, realm = %realm, "token server is off the registry's site or not https; credentials withheld");
                }
                let response = self.send(&url, None, basic.as_deref(), image).await?;
                let status = response.status();
                let body = read_limited(response.into_body(), 1024 * 1024)
                    .await
                    .map_err(|e| CriError::registry(image, e))?;
                if !status.is_success() {
                    return Err(unauthorized(format!(
                        "token server {} answered {status}",
                        host_of(&realm)
                    )));
                }
                let token: TokenResponse = serde_json::from_slice(&body)
                    .map_err(|e| unauthorized(format!("unreadable token answer: {e}")))?;
                token
                    .into_token()
                    .map(|t| format!("Bearer {t}"))
                    .ok_or_else(|| unauthorized("token server gave no token".into()))
            }
            None => Err(unauthorized(format!(
                "{} answered 401 without a usable challenge",
                endpoint.host
            ))),
        }
    }

    /// Whether credentials for `endpoint` may go to the token server at
    /// `realm`: over https to the registry's own site (the same host, or
    /// one sharing its last two labels, like auth.docker.io for
    /// registry-1.docker.io), or over plain HTTP to a loopback or
    /// `insecure` host only.
    fn may_send_credentials(&self, endpoint: &Endpoint, realm: &str) -> bool {
        let host_port = host_of(realm);
        match scheme_of(realm) {
            "https" => same_site(strip_port(host_port), strip_port(&endpoint.host)),
            "http" => is_loopback(host_port) || self.config.insecure.iter().any(|h| h == host_port),
            _ => false,
        }
    }

    fn cached_token(&self, key: &(String, String)) -> Option<String> {
        self.tokens.lock().ok()?.get(key).cloned()
    }
    fn store_token(&self, key: (String, String), value: String) {
        if let Ok(mut t) = self.tokens.lock() {
            t.insert(key, value);
        }
    }
    fn forget_token(&self, key: &(String, String)) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(key);
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

async fn read_limited(body: Incoming, limit: usize) -> std::result::Result<Bytes, String> {
    let limited = http_body_util::Limited::new(body, limit);
    limited
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| e.to_string())
}

fn short(s: &str) -> &str {
    let end = s.char_indices().nth(200).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests;
