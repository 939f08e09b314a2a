//! The service spec: the JSON of `POST /api/v1/deploy` and its TOML twin
//! (`[[service]]` in service.toml), and the checks every field passes before
//! anything is created. Quantities (`memory`) and image references are
//! checked again by the control plane with the parsers that use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::names::{checked_name, is_dns_label, is_dns_name};

/// Most replicas one service may ask for (on purpose a human-sized number:
/// a typo like 1000 should be an error, not a hundred OOM kills).
pub const MAX_REPLICAS: i64 = 100;
/// Most services in one deploy request.
pub const MAX_SERVICES_PER_DEPLOY: usize = 200;

fn default_project() -> String {
    "default".to_string()
}
fn default_replicas() -> i64 {
    1
}

/// One service as the user describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default = "default_project")]
    pub project: String,
    #[serde(default)]
    pub image: String,
    #[serde(default = "default_replicas")]
    pub replicas: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// HTTPS for `domain` on the ingress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourcesSpec>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub internal: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<String>,
    /// Seconds between SIGTERM and SIGKILL when a replica stops (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_grace_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<SecuritySpec>,
    /// Who the replica's process runs as: `uid`, `uid:gid`, or a user (and
    /// group) name from the image's own account files. Default: the
    /// image's USER.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// When to ask the registry; see [`ServiceSpec::pull_policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<PullPolicy>,
}

/// `pull`: when a deploy asks the registry for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PullPolicy {
    /// Every deploy resolves the reference at the registry (and uses the
    /// local image, saying so, when the registry cannot be reached).
    Always,
    /// The local image if containerd has it, else the registry.
    Missing,
    /// The local image only (air-gapped hosts).
    Never,
}

impl PullPolicy {
    /// The default for `image`: `always` for `:latest` and untagged
    /// references, `missing` for any other tag and for digests.
    pub fn default_for(image: &str) -> PullPolicy {
        if image.contains('@') {
            return PullPolicy::Missing;
        }
        let last = image.rsplit('/').next().unwrap_or(image);
        match last.split_once(':') {
            Some((_, tag)) if tag != "latest" => PullPolicy::Missing,
            _ => PullPolicy::Always,
        }
    }
}

impl ServiceSpec {
    /// The pull policy in force: the spec's, else the image's default.
    pub fn pull_policy(&self) -> PullPolicy {
        self.pull
            .unwrap_or_else(|| PullPolicy::default_for(&self.image))
    }
}

/// `security`: how a replica is confined beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SecuritySpec {
    /// Capabilities added to the default set, by Linux name (`NET_RAW`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from it (`ALL` for every one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// The seccomp filter: `default` (Docker's default profile, when
    /// unset) or `unconfined`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seccomp: Option<SeccompMode>,
    /// The root filesystem read-only: writes go to volumes and `/tmp`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only_rootfs: bool,
}

/// `security.seccomp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    #[default]
    Default,
    Unconfined,
}

/// `resources`: memory as a quantity ("512Mi"), cpu in cores, and the
/// most processes a replica may run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Default [`DEFAULT_PIDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

/// Processes (and threads) a replica may run at once unless
/// `resources.pids` says otherwise: a fork bomb stops there.
pub const DEFAULT_PIDS: i64 = 1024;
/// The kernel's own ceiling on process ids.
pub const MAX_PIDS: i64 = 4_194_304;

/// `placement`: a node by id, or nodes by labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// How replicas are spread over the nodes that fit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<PlacementStrategy>,
    /// Seconds a node may be disconnected before its replicas of this
    /// service are placed elsewhere (0: never); default the cluster's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reschedule_after_secs: Option<u64>,
}

/// `placement.strategy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategy {
    /// Replicas of a service on as many nodes as possible.
    #[default]
    Spread,
    /// Fill the fullest node that fits.
    Binpack,
}

/// Rollout strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Rolling,
    Canary,
}

/// `deploy`: how new versions go out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i64>,
    /// Seconds a rolling update may take before it is reverted (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_secs: Option<u64>,
}

/// An HTTP health probe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_threshold: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_delay_secs: Option<u64>,
}

/// `POST /api/v1/deploy` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub services: Vec<ServiceSpec>,
}

/// `POST /api/v1/deploy` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct DeployResponse {
    pub deployed: Vec<String>,
    pub errors: Vec<String>,
    /// Services whose spec was unchanged (nothing was done for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unchanged: Vec<String>,
    /// The record generation each deployed service is at now (every
    /// acknowledged change bumps it: the highest is the latest).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generations: BTreeMap<String, u64>,
    /// The version each deployed service rolls out to (a canary's version
    /// for a canary); wait for its `rollout` in status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub versions: BTreeMap<String, u64>,
}

/// `POST /api/v1/services/{name}/scale` body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    pub replicas: i64,
}

/// `tls`: `"acme"`, or `{ cert, key }` files on the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// A certificate from an ACME authority.
    Acme,
}

/// PEM files on the server's host, read again when they change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

/// A `tls` that the server can act on.
fn check_tls(tls: &TlsSpec, domain: Option<&String>) -> Result<(), ApiError> {
    if domain.is_none() {
        return Err(ApiError::bad_request("tls needs a domain"));
    }
    match tls {
        TlsSpec::Mode(TlsMode::Acme) => Ok(()),
        TlsSpec::Files(f) => {
            for (field, path) in [("tls.cert", &f.cert), ("tls.key", &f.key)] {
                let ok = path.starts_with('/')
                    && path.len() <= 4096
                    && !path.contains('\0')
                    && !path.split('/').any(|c| c == "..");
                if !ok {
                    return Err(ApiError::bad_request(format!(
                        "invalid {field} {path:?}: must be an absolute file path on the server"
                    )));
                }
            }
            Ok(())
        }
    }
}

/// `user`: `uid`, `uid:gid`, `name` or `name:group`, each part a number
/// or a POSIX-style account name (letters, digits, `_`, `-`, `.`; not
/// starting with `-`), at most 32 characters.
fn check_user(user: &str) -> Result<(), ApiError> {
    let part = |p: &str| {
        !p.is_empty()
            && p.len() <= 32
            && !p.starts_with('-')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            && (p.chars().all(|c| c.is_ascii_digit()) && p.parse::<u32>().is_ok()
                || !p.chars().all(|c| c.is_ascii_digit()))
    };
    let ok = match user.split_once(':') {
        Some((u, g)) => part(u) && part(g),
        None => part(user),
    };
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid user {user:?}: uid[:gid] (\"1000\", \"1000:1000\") or a name from the image (\"nginx\")"
        )))
    }
}

fn check_env_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 255
        && !key.as_bytes()[0].is_ascii_digit()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

fn check_path(field: &str, path: &str) -> Result<(), ApiError> {
    if path.starts_with('/') && path.len() <= 1024 && path.bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "invalid {field} {path:?}: must be an absolute URL path"
        )))
    }
}

fn check_probe(field: &str, probe: &Probe) -> Result<(), ApiError> {
    if let Some(p) = &probe.path {
        check_path(&format!("{field}.path"), p)?;
    }
    for (name, v) in [
        ("interval_secs", probe.interval_secs),
        ("timeout_secs", probe.timeout_secs),
    ] {
        if let Some(v) = v {
            if v == 0 || v > 3600 {
                return Err(ApiError::bad_request(format!(
                    "invalid {field}.{name} {v}: must be 1 to 3600"
                )));
            }
        }
    }
    if let Some(t) = probe.failure_threshold {
        if t == 0 || t > 100 {
            return Err(ApiError::bad_request(format!(
                "invalid {field}.failure_threshold {t}: must be 1 to 100"
            )));
        }
    }
    Ok(())
}

impl ServiceSpec {
    /// Checks every field that needs no outside knowledge. The error names
    /// the service (when its name is valid) and the field.
    pub fn validate(&self) -> Result<(), ApiError> {
        checked_name("service name", &self.name)?;
        let ctx = |e: ApiError| ApiError::new(e.status, format!("{}: {}", self.name, e.message));
        self.validate_fields().map_err(ctx)
    }

    fn validate_fields(&self) -> Result<(), ApiError> {
        checked_name("project", &self.project)?;
        if self.image.trim().is_empty() {
            return Err(ApiError::bad_request("missing image"));
        }
        if !(0..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(ApiError::bad_request(format!(
                "invalid replicas {}: must be 0 to {MAX_REPLICAS}",
                self.replicas
            )));
        }
        if let Some(port) = self.port {
            if port == 0 || port > 65535 {
                return Err(ApiError::bad_request(format!(
                    "invalid port {port}: must be 1 to 65535"
                )));
            }
        }
        if let Some(domain) = &self.domain {
            if !is_dns_name(domain) {
                return Err(ApiError::bad_request(format!("invalid domain {domain:?}")));
            }
        }
        if let Some(tls) = &self.tls {
            check_tls(tls, self.domain.as_ref())?;
        }
        if let Some(h) = &self.health {
            check_path("health", h)?;
        }
        for (k, v) in &self.env {
            if !check_env_key(k) {
                return Err(ApiError::bad_request(format!("invalid env name {k:?}")));
            }
            if v.contains('\0') {
                return Err(ApiError::bad_request(format!(
                    "invalid env value for {k}: contains NUL"
                )));
            }
        }
        if let Some(r) = &self.resources {
            if let Some(cpu) = r.cpu {
                if !cpu.is_finite() || cpu <= 0.0 {
                    return Err(ApiError::bad_request(format!(
                        "invalid resources.cpu {cpu}: must be a positive number of cores"
                    )));
                }
            }
            if let Some(pids) = r.pids {
                if !(8..=MAX_PIDS).contains(&pids) {
                    return Err(ApiError::bad_request(format!(
                        "invalid resources.pids {pids}: must be 8 to {MAX_PIDS}"
                    )));
                }
            }
        }
        if let Some(sec) = &self.security {
            for (field, names) in [("cap_add", &sec.cap_add), ("cap_drop", &sec.cap_drop)] {
                let bad = names.iter().find(|n| {
                    n.is_empty()
                        || n.len() > 32
                        || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                });
                if let Some(bad) = bad {
                    return Err(ApiError::bad_request(format!(
                        "invalid security.{field} entry {bad:?}: a capability name like NET_RAW"
                    )));
                }
            }
        }
        if let Some(user) = &self.user {
            check_user(user)?;
        }
        if let Some(p) = &self.placement {
            if let Some(node) = &p.node {
                checked_name("placement.node", node)?;
            }
        }
        for alias in &self.aliases {
            if !is_dns_label(alias) {
                return Err(ApiError::bad_request(format!(
                    "invalid alias {alias:?}: must be a DNS label"
                )));
            }
        }
        if let Some(c) = &self.command {
            if c.is_empty() || c[0].is_empty() || c.iter().any(|a| a.contains('\0')) {
                return Err(ApiError::bad_request(
                    "invalid command: must be a non-empty list of arguments",
                ));
            }
        }
        if let Some(d) = &self.deploy {
            if let Some(m) = d.max_unavailable {
                if !(0..=MAX_REPLICAS).contains(&m) {
                    return Err(ApiError::bad_request(format!(
                        "invalid deploy.max_unavailable {m}"
                    )));
                }
            }
            if let Some(w) = d.canary_weight {
                if !(0..=100).contains(&w) {
                    return Err(ApiError::bad_request(format!(
                        "invalid deploy.canary_weight {w}: must be 0 to 100"
                    )));
                }
            }
        }
        if let Some(g) = self.stop_grace_secs {
            if g > 3600 {
                return Err(ApiError::bad_request(format!(
                    "invalid stop_grace_secs {g}: at most 3600"
                )));
            }
        }
        if !self.volumes.is_empty() {
            return Err(ApiError::bad_request("volumes are not supported yet"));
        }
        if let Some(p) = &self.liveness {
            check_probe("liveness", p)?;
        }
        if let Some(p) = &self.readiness {
            check_probe("readiness", p)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
