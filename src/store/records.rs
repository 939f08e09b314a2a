//! What is stored about services and nodes.

use serde::{Deserialize, Serialize};

use api::spec::ServiceSpec;

/// Versions kept per service.
pub const MAX_HISTORY: usize = 50;

/// One version of a service: what was deployed, when, by whom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRecord {
    pub version: u64,
    pub spec: ServiceSpec,
    pub image_digest: Option<String>,
    pub deployed_at: String,
    pub deployed_by: String,
    /// What made it, when not a plain deploy ("rollback to 3").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A service's desired state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceRecord {
    /// The current version's spec; `spec.replicas` is the desired count
    /// (scaling changes it without making a version).
    pub spec: ServiceSpec,
    pub version: u64,
    pub image_digest: Option<String>,
    /// Stopped on request: no replicas until deployed again.
    pub stopped: bool,
    /// Bumped by every acknowledged change, so a worker can tell it has
    /// converged to the latest one.
    pub generation: u64,
    pub history: Vec<VersionRecord>,
    pub updated_at: String,
    /// The last rollout that was reverted, until the next change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Reverted>,
    /// Digest of the secrets the spec refers to, as deployed: a redeploy
    /// after a secret changed is a new version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_fingerprint: Option<String>,
    /// A new version taking a share of the traffic beside this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// A job's runs (for a service that runs to an end).
    #[serde(default, skip_serializing_if = "JobRecord::is_empty")]
    pub job: JobRecord,
}

/// A job's runs: which one is wanted, which one ended last and how.
/// Replicas carry the number of the run they belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct JobRecord {
    /// The latest run asked for (0: none yet).
    pub run: u64,
    /// The latest run that ended (every replica over for good).
    pub done: u64,
    /// When the latest run was asked for (RFC 3339) and what asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    /// The latest schedule time handled, run or skipped (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_due: Option<i64>,
    /// The exit code of each replica of the run that ended last, by slot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exit_codes: Vec<u32>,
    /// When that run ended (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Due times skipped because a run was still going, and the latest.
    #[serde(default)]
    pub skipped: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_skipped: Option<String>,
}

impl JobRecord {
    fn is_empty(&self) -> bool {
        *self == JobRecord::default()
    }

    /// True while the latest run asked for has not ended.
    pub fn active(&self) -> bool {
        self.run > self.done
    }

    /// How the run that ended last went: every replica exited 0.
    pub fn succeeded(&self) -> Option<bool> {
        (self.done > 0).then(|| self.exit_codes.iter().all(|c| *c == 0))
    }
}

/// A rollout that failed and was undone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reverted {
    /// The version that failed.
    pub version: u64,
    /// Why, and which version serves instead.
    pub message: String,
}

/// A canary: a version running beside the stable one with a traffic share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub version: u64,
    pub spec: ServiceSpec,
    pub image_digest: Option<String>,
    /// Percent of requests it gets.
    pub weight: u32,
    /// Why it failed without a crash (no room on any node): it then runs
    /// no replica until it is rolled back or deployed anew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
}

impl Canary {
    /// Canary replicas for `stable` stable ones: the weight's share, at least one.
    pub fn replicas(&self, stable: u32) -> u32 {
        ((u64::from(stable) * u64::from(self.weight)).div_ceil(100) as u32).max(1)
    }
}

impl ServiceRecord {
    /// Marks a change to the record made at `at` (RFC 3339): a new
    /// generation, which `orca deploy` and friends wait for.
    pub fn changed_at(&mut self, at: String) {
        self.generation += 1;
        self.updated_at = at;
    }

    /// A record of `spec` at `version`, with versions 1 to `version` in
    /// its history (all of `spec`, deployed by "ci"), for tests.
    #[cfg(test)]
    pub fn for_tests(spec: ServiceSpec, version: u64) -> Self {
        ServiceRecord {
            history: (1..=version)
                .map(|v| VersionRecord {
                    version: v,
                    spec: spec.clone(),
                    image_digest: None,
                    deployed_at: String::new(),
                    deployed_by: "ci".into(),
                    note: None,
                })
                .collect(),
            spec,
            version,
            image_digest: None,
            stopped: false,
            generation: 1,
            updated_at: String::new(),
            reverted: None,
            canary: None,
            secrets_fingerprint: None,
            job: JobRecord::default(),
        }
    }

    /// Replicas wanted now.
    pub fn desired_replicas(&self) -> u32 {
        if self.stopped {
            0
        } else {
            self.spec.replicas.clamp(0, api::spec::MAX_REPLICAS) as u32
        }
    }
}

/// What the control plane remembers about a node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct NodeRecord {
    pub id: String,
    pub drained: bool,
    /// Unix seconds by which a drain stops what has not moved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_deadline: Option<u64>,
    /// The address the node last connected from (or advertised).
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    pub cpu: f64,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub version: String,
    /// SHA-256 (hex) of the client certificate issued to the node; a
    /// connection with any other certificate is refused. None for the
    /// server's own node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_sha256: Option<String>,
    /// The replicas it ran when last heard from, so that a server restart
    /// does not take a disconnected node's replicas for lost.
    #[serde(default)]
    pub inventory: Vec<crate::agent::Instance>,
    /// Which /24 of `[network] subnet` its replicas take (the server's own
    /// node has 0); given at the join, kept for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet_index: Option<u32>,
    /// Its ingress serves HTTPS (as it said when it last connected).
    #[serde(default)]
    pub https: bool,
    /// What of its host replicas may reach (as it said when it last
    /// connected).
    #[serde(default)]
    pub access: crate::agent::access::HostAccess,
}

/// True when two specs differ in more than the replica count.
pub fn spec_changed(a: &ServiceSpec, b: &ServiceSpec) -> bool {
    let mut a = a.clone();
    a.replicas = b.replicas;
    &a != b
}

/// A certificate an ACME authority issued: the chain (PEM), its key
/// (PEM, sealed like a secret) and its validity (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcmeCert {
    pub domain: String,
    pub cert_pem: String,
    pub key_sealed: Vec<u8>,
    pub not_before: u64,
    pub not_after: u64,
}

impl AcmeCert {
    /// When to get a new one: at two-thirds of its lifetime.
    pub fn renew_at(&self) -> u64 {
        self.not_before + self.not_after.saturating_sub(self.not_before) * 2 / 3
    }
}

/// A join token: its id, the SHA-256 (hex) of its secret, and when it
/// expires (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRecord {
    pub id: String,
    pub secret_sha256: String,
    pub expires_at: u64,
    /// For a server of the control plane, not an agent.
    #[serde(default)]
    pub server: bool,
}

/// A named volume: the node that holds it (the only one its replicas run
/// on), kept from the first start that claimed it until `orca volume rm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    pub project: String,
    pub name: String,
    pub node: String,
    /// Unix seconds of the claim.
    pub created: u64,
}

impl VolumeRecord {
    /// `project/name`, its key.
    pub fn key(&self) -> String {
        format!("{}/{}", self.project, self.name)
    }
}
