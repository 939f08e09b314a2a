//! Resource limits as users write them (`"64Mi"`, `0.5` cores) and as the
//! kernel wants them (bytes, CFS quota and period).

use crate::error::{CriError, Result};

/// CFS period used for CPU limits, in microseconds (the kernel's default).
pub const CFS_PERIOD_US: u64 = 100_000;
/// Smallest memory limit accepted: below this runc cannot even start a shell.
pub const MIN_MEMORY_BYTES: u64 = 4 * 1024 * 1024;
/// Largest CPU limit accepted, in cores.
pub const MAX_CPU_CORES: f64 = 1024.0;

/// A memory limit in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct MemoryLimit(pub u64);

impl MemoryLimit {
    /// Parses Kubernetes-style quantities: `64Mi`, `1Gi`, `512M`, `100k`,
    /// `1048576`. Binary suffixes (Ki, Mi, Gi, Ti) are powers of 1024,
    /// decimal ones (k, M, G, T) powers of 1000.
    pub fn parse(input: &str) -> Result<Self> {
        let bytes = quantity(input, "resources.memory")?;
        if bytes < MIN_MEMORY_BYTES {
            return Err(CriError::InvalidConfig {
                field: "resources.memory",
                reason: format!("{input:?} is below the minimum of 4Mi"),
            });
        }
        Ok(MemoryLimit(bytes))
    }

    /// The limit in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// A memory reservation (`resources.reserve.memory`) in bytes: a quantity
/// as for a limit, or `"0"`, with no minimum.
pub fn memory_reservation(input: &str) -> Result<u64> {
    quantity(input, "resources.reserve.memory")
}

/// The size of a tmpfs (`volumes[].size`) in bytes: a quantity, at least
/// one page.
pub fn tmpfs_size(input: &str) -> Result<u64> {
    let bytes = quantity(input, "volumes size")?;
    if bytes < 4096 {
        return Err(CriError::InvalidConfig {
            field: "volumes size",
            reason: format!("{input:?} is below 4Ki"),
        });
    }
    Ok(bytes)
}

/// Bytes from a quantity, for `field`'s errors.
fn quantity(input: &str, field: &'static str) -> Result<u64> {
    let bad = |reason: String| CriError::InvalidConfig { field, reason };
    let s = input.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (number, suffix) = s.split_at(split);
    if number.is_empty() {
        return Err(bad(format!(
            "{input:?} is not a quantity like \"64Mi\" or \"1Gi\""
        )));
    }
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" | "K" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        other => {
            return Err(bad(format!(
                "unknown unit {other:?} in {input:?} (use Ki, Mi, Gi, Ti, k, M, G or T)"
            )))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| bad(format!("{input:?} is not a number with a unit")))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes > (i64::MAX as f64) {
        return Err(bad(format!("{input:?} is too large")));
    }
    Ok(bytes.round() as u64)
}

/// A CPU limit in cores, enforced as a CFS quota per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpuLimit(f64);

impl CpuLimit {
    /// Accepts cores as a positive float up to [`MAX_CPU_CORES`].
    pub fn new(cores: f64) -> Result<Self> {
        if !cores.is_finite() || cores <= 0.0 {
            return Err(CriError::InvalidConfig {
                field: "resources.cpu",
                reason: format!("{cores} is not a positive number of cores"),
            });
        }
        if cores > MAX_CPU_CORES {
            return Err(CriError::InvalidConfig {
                field: "resources.cpu",
                reason: format!("{cores} cores is more than the maximum of {MAX_CPU_CORES}"),
            });
        }
        // The kernel refuses quotas under 1 ms.
        if cores * (CFS_PERIOD_US as f64) < 1000.0 {
            return Err(CriError::InvalidConfig {
                field: "resources.cpu",
                reason: format!("{cores} cores is below the minimum of 0.01"),
            });
        }
        Ok(CpuLimit(cores))
    }

    /// Cores as given.
    pub fn cores(self) -> f64 {
        self.0
    }

    /// CFS quota in microseconds per [`CFS_PERIOD_US`].
    pub fn quota_us(self) -> i64 {
        (self.0 * CFS_PERIOD_US as f64).round() as i64
    }

    /// CFS period in microseconds.
    pub fn period_us(self) -> u64 {
        CFS_PERIOD_US
    }

    /// Relative weight (cpu.shares) proportional to the cores, like Docker's
    /// `--cpus` leaves at 1024 per core.
    pub fn shares(self) -> u64 {
        ((self.0 * 1024.0).round() as u64).max(2)
    }
}

/// Limits for one container.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Resources {
    pub memory: Option<MemoryLimit>,
    pub cpu: Option<CpuLimit>,
    /// Most processes and threads at once (the pids cgroup); `None` leaves
    /// the limit to the parent cgroup.
    pub pids: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(MemoryLimit::parse("64Mi").unwrap().bytes(), 64 << 20);
        assert_eq!(MemoryLimit::parse("1Gi").unwrap().bytes(), 1 << 30);
        assert_eq!(MemoryLimit::parse("512M").unwrap().bytes(), 512_000_000);
        assert_eq!(MemoryLimit::parse("0.5Gi").unwrap().bytes(), 512 << 20);
        assert_eq!(MemoryLimit::parse("8388608").unwrap().bytes(), 8 << 20);
        assert_eq!(MemoryLimit::parse("10000k").unwrap().bytes(), 10_000_000);
    }

    #[test]
    fn memory_errors_name_the_field() {
        for bad in [
            "", "Mi", "64mb", "-1Gi", "1.2.3Mi", "lots", "1Xi", "1Mi", "0", "1e9",
        ] {
            let err = MemoryLimit::parse(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid resources.memory"),
                "{bad:?}: {err}"
            );
        }
        assert!(MemoryLimit::parse("99999999999Ti").is_err());
    }

    #[test]
    fn cpu_quota() {
        let c = CpuLimit::new(0.5).unwrap();
        assert_eq!(c.quota_us(), 50_000);
        assert_eq!(c.period_us(), 100_000);
        assert_eq!(c.shares(), 512);
        assert_eq!(CpuLimit::new(2.0).unwrap().quota_us(), 200_000);
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 0.001, 5000.0] {
            assert!(CpuLimit::new(bad).is_err(), "{bad}");
        }
    }
}
