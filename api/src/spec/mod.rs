//! The service spec: the JSON of `POST /api/v1/deploy` and its TOML twin
//! (`[[service]]` in service.toml), and the checks every field passes before
//! anything is created ([`validate`]). Quantities (`memory`) and image
//! references are checked again by the control plane with the parsers that
//! use them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    #[schemars(pattern(crate::names::LABEL_PATTERN))]
    pub name: String,
    #[serde(default = "default_project")]
    #[schemars(pattern(crate::names::LABEL_PATTERN))]
    pub project: String,
    #[serde(default)]
    pub image: String,
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// Path prefixes of `domain` this service serves (default `/`): several
    /// services share a domain by prefix, the longest one wins.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<String>,
    /// Removes the matched prefix of `routes` before a request reaches a
    /// replica.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
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
    /// The whole argv: replaces the image's Entrypoint and Cmd.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Replaces the image's Entrypoint (and drops its Cmd), like Docker's
    /// `--entrypoint`; not with `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Replaces the image's Cmd, after its Entrypoint (compose's
    /// `command`); not with `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
    /// The process's working directory (default: the image's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy: Option<DeploySettings>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<Probe>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<Probe>,
    /// Small files and secrets as files (see [`FileSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileSpec>,
    /// Device nodes of the host (privileged; under the node's
    /// `[volumes] devices`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    /// Named volumes, bind mounts and tmpfs (see [`VolumeSpec`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<VolumeSpec>,
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
    /// What happens when a replica ends; see [`ServiceSpec::restart_policy`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartPolicy>,
    /// Cron expression: runs the job at those times (in `timezone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA time zone of `schedule` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Ports every node (or, in host mode, every node with a replica)
    /// accepts and forwards to the replicas.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    /// Services of the project that must be started, healthy or completed
    /// before a replica of this one starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depends_on: Option<DependsOn>,
    /// The user's own labels on each replica's container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `pull`: when a deploy asks the registry for the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The rollout strategy in force: the spec's, else `recreate` for a
    /// service that writes to a named volume or a bind mount (two versions
    /// must never write one data directory), else `rolling`.
    pub fn strategy(&self) -> Strategy {
        if let Some(s) = self.deploy.as_ref().and_then(|d| d.strategy) {
            return s;
        }
        if self.mounts().iter().any(Mount::writable_storage) {
            Strategy::Recreate
        } else {
            Strategy::Rolling
        }
    }

    /// The mounts of `volumes` (entries that do not parse, refused at
    /// validation, are left out).
    pub fn mounts(&self) -> Vec<Mount> {
        self.volumes.iter().filter_map(|v| v.mount().ok()).collect()
    }

    /// The restart policy in force: the spec's, else `on-failure` for a
    /// scheduled job and `always` for anything else.
    pub fn restart_policy(&self) -> RestartPolicy {
        self.restart.unwrap_or(if self.schedule.is_some() {
            RestartPolicy::OnFailure
        } else {
            RestartPolicy::Always
        })
    }

    /// True for a service that runs to an end (restart on-failure or never).
    pub fn is_job(&self) -> bool {
        self.restart_policy() != RestartPolicy::Always
    }

    /// The ports it publishes (entries that do not parse, refused at
    /// validation, are left out).
    pub fn published_ports(&self) -> Vec<PublishedPort> {
        self.ports.iter().filter_map(|p| p.parse().ok()).collect()
    }

    /// The pull policy in force: the spec's, else the image's default.
    pub fn pull_policy(&self) -> PullPolicy {
        self.pull
            .unwrap_or_else(|| PullPolicy::default_for(&self.image))
    }
}

/// `security`: how a replica is confined beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SeccompMode {
    #[default]
    Default,
    Unconfined,
}

/// `resources`: memory as a quantity ("512Mi"), cpu in cores, and the
/// most processes a replica may run at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResourcesSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Default [`DEFAULT_PIDS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
    /// What placement holds for each replica; `memory` and `cpu` above
    /// are limits and hold nothing by themselves (see [`Reserve`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve: Option<Reserve>,
}

/// `resources.reserve`: what the scheduler sets aside on a node for each
/// replica, and the only thing it counts. The CPU reservation defaults to
/// 0 (a CPU limit is a cap shared by time, not a claim); the memory
/// reservation defaults to the memory limit, so memory is never
/// overcommitted by accident (`memory = "0"` opts out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Reserve {
    /// Cores, 0 to 1024.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// A quantity ("256Mi"), or "0".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
}

/// Processes (and threads) a replica may run at once unless
/// `resources.pids` says otherwise: a fork bomb stops there.
pub const DEFAULT_PIDS: i64 = 1024;
/// The kernel's own ceiling on process ids.
pub const MAX_PIDS: i64 = 4_194_304;

/// `placement`: a node by id, or nodes by labels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
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
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PlacementStrategy {
    /// Replicas of a service on as many nodes as possible.
    #[default]
    Spread,
    /// Fill the fullest node that fits.
    Binpack,
}

/// Rollout strategy.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    #[default]
    Rolling,
    Canary,
    /// Every old replica stops (its grace honoured) before a new one
    /// starts: never two versions on one volume.
    Recreate,
}

/// `deploy`: how new versions go out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeploySettings {
    /// Default `recreate` for a service with a writable named volume or
    /// bind mount, `rolling` otherwise (see [`ServiceSpec::strategy`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_unavailable: Option<i64>,
    /// New replicas started at once during a rolling update, beside the
    /// old ones: a count, or a percentage of the replicas ("25%", the
    /// default), rounded up; at least 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_surge: Option<Surge>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i64>,
    /// Seconds a rolling update may take before it is reverted (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_deadline_secs: Option<u64>,
}

/// `deploy.max_surge`: a count (`3`) or a share of the replicas (`"25%"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum Surge {
    Count(i64),
    Percent(String),
}

/// The default `deploy.max_surge`, in percent of the replicas.
pub const DEFAULT_SURGE_PERCENT: u32 = 25;

impl Surge {
    /// New replicas that may start at once for `replicas` wanted: at
    /// least 1. `None` for a malformed value (refused by validation).
    pub fn of(&self, replicas: u32) -> Option<u32> {
        let n = match self {
            Surge::Count(n) => u32::try_from(*n).ok()?,
            Surge::Percent(p) => {
                let pct: u32 = p.strip_suffix('%')?.trim().parse().ok()?;
                if pct > 100 {
                    return None;
                }
                percent_of(replicas, pct)
            }
        };
        Some(n.max(1))
    }
}

/// `pct` percent of `replicas`, rounded up.
fn percent_of(replicas: u32, pct: u32) -> u32 {
    (u64::from(replicas) * u64::from(pct)).div_ceil(100) as u32
}

/// The surge of a spec's rolling update for `replicas` wanted.
pub fn surge_of(deploy: Option<&DeploySettings>, replicas: u32) -> u32 {
    deploy
        .and_then(|d| d.max_surge.as_ref())
        .and_then(|s| s.of(replicas))
        .unwrap_or_else(|| percent_of(replicas, DEFAULT_SURGE_PERCENT).max(1))
}

/// A health probe: an HTTP GET of `path`, a command run in the replica
/// (`exec`, exit 0 is healthy), or a TCP connect to `port`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Probe {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The program and its arguments, run like `orca exec` (no shell:
    /// `["sh", "-c", "..."]` for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub services: Vec<ServiceSpec>,
}

/// `POST /api/v1/deploy` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, schemars::JsonSchema)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScaleRequest {
    #[schemars(range(min = 0, max = MAX_REPLICAS))]
    pub replicas: i64,
}

mod files;
mod jobs;
mod labels;
mod new;
mod ports;
mod privilege;
mod routes;
mod tls;
mod validate;
mod volumes;

pub use files::{FileSpec, MAX_FILES_BYTES};
pub use jobs::{dependency_cycle, Condition, DependsOn, RestartPolicy, Schedule};
pub use ports::{PortMode, PortSpec, Protocol, PublishedPort};
pub use tls::{TlsFiles, TlsMode, TlsSpec};
pub use volumes::{check_target, Mount, VolumeObject, VolumeSpec, VolumeType};

pub use privilege::{is_secret_name, PRIVILEGED_PORTS_BELOW};
pub use routes::{route_prefixes, routes_overlap};

#[cfg(test)]
mod tests;
