//! Resource usage from `Tasks.Metrics`, decoded by the `Any`'s type_url into
//! one struct for cgroups v1 and v2. The message types below are the subset
//! of containerd/cgroups' `stats/v1/metrics.proto` and
//! `cgroup2/stats/metrics.proto` orca reads; the field numbers are theirs.

use containerd_client::services::v1::MetricsRequest;
use prost::Message;

use crate::client::Cri;
use crate::error::{CriError, Result};

/// Usage of one container, whatever the cgroup version.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    /// Memory in use, bytes.
    pub memory_bytes: u64,
    /// Memory limit, bytes (0 when unknown).
    pub memory_limit_bytes: u64,
    /// CPU time used, nanoseconds.
    pub cpu_nanos: u64,
    /// Processes in the cgroup.
    pub pids: u64,
}

mod v1 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "2")]
        pub pids: Option<PidsStat>,
        #[prost(message, optional, tag = "3")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PidsStat {
        #[prost(uint64, tag = "1")]
        pub current: u64,
        #[prost(uint64, tag = "2")]
        pub limit: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(message, optional, tag = "1")]
        pub usage: Option<CpuUsage>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuUsage {
        #[prost(uint64, tag = "1")]
        pub total: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "1")]
        pub cache: u64,
        #[prost(uint64, tag = "19")]
        pub total_rss: u64,
        #[prost(message, optional, tag = "33")]
        pub usage: Option<MemoryEntry>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryEntry {
        #[prost(uint64, tag = "1")]
        pub limit: u64,
        #[prost(uint64, tag = "2")]
        pub usage: u64,
    }
}

mod v2 {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Metrics {
        #[prost(message, optional, tag = "1")]
        pub pids: Option<PidsStat>,
        #[prost(message, optional, tag = "2")]
        pub cpu: Option<CpuStat>,
        #[prost(message, optional, tag = "4")]
        pub memory: Option<MemoryStat>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PidsStat {
        #[prost(uint64, tag = "1")]
        pub current: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct CpuStat {
        #[prost(uint64, tag = "1")]
        pub usage_usec: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MemoryStat {
        #[prost(uint64, tag = "32")]
        pub usage: u64,
        #[prost(uint64, tag = "33")]
        pub usage_limit: u64,
    }
}

/// Decodes a metrics `Any` by its type_url.
pub fn decode(any: &prost_types::Any) -> Result<Usage> {
    let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
    match name {
        "io.containerd.cgroups.v1.Metrics" => {
            let m = v1::Metrics::decode(any.value.as_slice())
                .map_err(|e| CriError::content("cgroups v1 metrics", e))?;
            let mem = m.memory.unwrap_or_default();
            let usage = mem.usage.unwrap_or_default();
            Ok(Usage {
                memory_bytes: usage.usage,
                memory_limit_bytes: if usage.limit >= (1 << 62) {
                    0
                } else {
                    usage.limit
                },
                cpu_nanos: m.cpu.and_then(|c| c.usage).map(|u| u.total).unwrap_or(0),
                pids: m.pids.map(|p| p.current).unwrap_or(0),
            })
        }
        "io.containerd.cgroups.v2.Metrics" => {
            let m = v2::Metrics::decode(any.value.as_slice())
                .map_err(|e| CriError::content("cgroups v2 metrics", e))?;
            let mem = m.memory.unwrap_or_default();
            Ok(Usage {
                memory_bytes: mem.usage,
                memory_limit_bytes: if mem.usage_limit >= (1 << 62) {
                    0
                } else {
                    mem.usage_limit
                },
                cpu_nanos: m.cpu.map(|c| c.usage_usec * 1000).unwrap_or(0),
                pids: m.pids.map(|p| p.current).unwrap_or(0),
            })
        }
        other => Err(CriError::content(
            "task metrics",
            format!("unknown type {other}"),
        )),
    }
}

impl Cri {
    /// Resource usage of container `id`'s task.
    pub async fn usage(&self, id: &str) -> Result<Usage> {
        let reply = self
            .tasks()
            .metrics(self.req(MetricsRequest {
                filters: vec![format!("id=={id}")],
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Metrics", id, s))?
            .into_inner();
        let metric = reply
            .metrics
            .into_iter()
            .find(|m| m.id == id)
            .ok_or_else(|| CriError::NotFound {
                kind: "task",
                id: id.to_string(),
            })?;
        let data = metric
            .data
            .ok_or_else(|| CriError::content("task metrics", "no data"))?;
        decode(&data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_v1_by_type_url() {
        let m = v1::Metrics {
            pids: Some(v1::PidsStat {
                current: 3,
                limit: 0,
            }),
            cpu: Some(v1::CpuStat {
                usage: Some(v1::CpuUsage { total: 42 }),
            }),
            memory: Some(v1::MemoryStat {
                cache: 1,
                total_rss: 2,
                usage: Some(v1::MemoryEntry {
                    limit: 64 << 20,
                    usage: 1000,
                }),
            }),
        };
        let any = prost_types::Any {
            type_url: "io.containerd.cgroups.v1.Metrics".into(),
            value: m.encode_to_vec(),
        };
        assert_eq!(
            decode(&any).unwrap(),
            Usage {
                memory_bytes: 1000,
                memory_limit_bytes: 64 << 20,
                cpu_nanos: 42,
                pids: 3
            }
        );
    }

    #[test]
    fn decodes_v2_and_rejects_unknown() {
        let m = v2::Metrics {
            pids: Some(v2::PidsStat { current: 1 }),
            cpu: Some(v2::CpuStat { usage_usec: 5 }),
            memory: Some(v2::MemoryStat {
                usage: 7,
                usage_limit: u64::MAX,
            }),
        };
        let any = prost_types::Any {
            type_url: "types.containerd.io/io.containerd.cgroups.v2.Metrics".into(),
            value: m.encode_to_vec(),
        };
        assert_eq!(
            decode(&any).unwrap(),
            Usage {
                memory_bytes: 7,
                memory_limit_bytes: 0,
                cpu_nanos: 5000,
                pids: 1
            }
        );
        let any = prost_types::Any {
            type_url: "x.Y".into(),
            value: vec![],
        };
        assert!(decode(&any).is_err());
    }
}
