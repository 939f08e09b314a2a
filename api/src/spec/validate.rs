//! The checks every field of a [`ServiceSpec`] passes before anything is
//! created: names, numbers in bounds, paths, probes, TLS and users.

use super::*;
use crate::error::ApiError;
use crate::names::{checked_name, is_dns_label, is_dns_name};

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
    if let Some(c) = &probe.exec {
        if probe.path.is_some() {
            return Err(ApiError::bad_request(format!(
                "invalid {field}: path (HTTP) or exec (a command), not both"
            )));
        }
        if c.is_empty() || c[0].is_empty() || c.iter().any(|a| a.contains('\0')) || c.len() > 256 {
            return Err(ApiError::bad_request(format!(
                "invalid {field}.exec: a non-empty list of arguments, like [\"pg_isready\", \"-U\", \"app\"]"
            )));
        }
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
        super::routes::check_routes(&self.routes, self.strip_prefix, self.domain.as_ref())?;
        super::jobs::check_jobs(self)?;
        if self.command.is_some() && (self.entrypoint.is_some() || self.args.is_some()) {
            return Err(ApiError::bad_request(
                "command is the whole argv: use it alone, or entrypoint and args",
            ));
        }
        if let Some(e) = &self.entrypoint {
            if e.is_empty() || e[0].is_empty() || e.iter().any(|a| a.contains('\0')) {
                return Err(ApiError::bad_request(
                    "invalid entrypoint: must be a non-empty list of arguments",
                ));
            }
        }
        if self.args.iter().flatten().any(|a| a.contains('\0')) {
            return Err(ApiError::bad_request("invalid args: contains NUL"));
        }
        if let Some(dir) = &self.working_dir {
            if !dir.starts_with('/') || dir.contains('\0') || dir.len() > 4096 {
                return Err(ApiError::bad_request(format!(
                    "invalid working_dir {dir:?}: an absolute path"
                )));
            }
        }
        super::ports::check_ports(&self.ports)?;
        super::labels::check_labels(&self.labels)?;
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
        super::privilege::check_secret_refs(self)?;
        if let Some(r) = &self.resources {
            if let Some(cpu) = r.cpu {
                if !cpu.is_finite() || cpu <= 0.0 {
                    return Err(ApiError::bad_request(format!(
                        "invalid resources.cpu {cpu}: must be a positive number of cores"
                    )));
                }
            }
            if let Some(reserve) = r.reserve.as_ref().and_then(|x| x.cpu) {
                if !reserve.is_finite() || !(0.0..=1024.0).contains(&reserve) {
                    return Err(ApiError::bad_request(format!(
                        "invalid resources.reserve.cpu {reserve}: must be 0 to 1024 cores"
                    )));
                }
                if r.cpu.is_some_and(|limit| reserve > limit) {
                    return Err(ApiError::bad_request(format!(
                        "invalid resources.reserve.cpu {reserve}: more than the limit resources.cpu {}",
                        r.cpu.unwrap_or_default()
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
            if let Some(surge) = &d.max_surge {
                let fine = match surge {
                    super::Surge::Count(n) => (0..=MAX_REPLICAS).contains(n),
                    super::Surge::Percent(_) => surge.of(1).is_some(),
                };
                if !fine {
                    return Err(ApiError::bad_request(format!(
                        "invalid deploy.max_surge {}: a count of replicas (0 to {MAX_REPLICAS}) or a percentage like \"25%\"",
                        match surge {
                            super::Surge::Count(n) => n.to_string(),
                            super::Surge::Percent(p) => format!("{p:?}"),
                        }
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
        let mounts = super::volumes::check_volumes(&self.volumes)?;
        let targets: Vec<&str> = mounts.iter().map(Mount::target).collect();
        super::files::check_files(&self.files, &targets)?;
        super::privilege::check_devices(&self.devices)?;
        if self.deploy.as_ref().and_then(|d| d.strategy) == Some(Strategy::Canary)
            && mounts.iter().any(Mount::writable_storage)
        {
            return Err(ApiError::bad_request(
                "deploy.strategy canary runs two versions at once, and a writable volume or bind mount takes one: \
                 use recreate (the default here), or mount it read-only",
            ));
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
