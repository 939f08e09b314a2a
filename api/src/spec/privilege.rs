//! What in a spec reaches beyond its own replicas: the secrets its env
//! names (`${secrets.KEY}`, a plain name of the service's own project) and
//! the privileged fields only an admin may deploy (capabilities outside
//! Docker's default set, no seccomp filter, bind mounts, devices, and
//! published ports below 1024, where a node's own services such as ssh
//! listen).

use super::{SeccompMode, ServiceSpec};
use crate::error::ApiError;

/// Docker's default capability set; `NET_RAW` is in it (orca drops it by
/// default, and adding it back is no privilege).
const BASELINE_CAPABILITIES: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Published ports under this one are the host's own (the kernel's
/// privileged ports): only an admin publishes them.
pub const PRIVILEGED_PORTS_BELOW: u16 = 1024;

/// A secret's name: `[A-Za-z_][A-Za-z0-9_]*`, at most 255 bytes.
pub fn is_secret_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && name.len() <= 255
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Every `${secrets.KEY}` in `value`, as written (checked or not); an
/// unterminated one runs to the end.
fn secret_refs_in(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = value;
    while let Some(start) = rest.find("${secrets.") {
        let after = &rest[start + "${secrets.".len()..];
        match after.find('}') {
            Some(end) => {
                out.push(&after[..end]);
                rest = &after[end + 1..];
            }
            None => {
                out.push(after);
                break;
            }
        }
    }
    out
}

impl ServiceSpec {
    /// The secret names the spec's env refers to, sorted, each once.
    pub fn secret_refs(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .env
            .values()
            .flat_map(|v| secret_refs_in(v))
            .map(str::to_string)
            .chain(self.files.iter().filter_map(|f| f.secret.clone()))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The fields of the spec only an admin may deploy, named as the 403
    /// names them (`security.cap_add SYS_ADMIN`).
    pub fn privileged_fields(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .mounts()
            .iter()
            .filter_map(|m| match m {
                super::Mount::Bind { source, .. } => Some(format!("volumes bind mount {source}")),
                _ => None,
            })
            .collect();
        out.extend(self.devices.iter().map(|d| format!("devices {d}")));
        out.extend(
            self.published_ports()
                .iter()
                .filter(|p| p.published < PRIVILEGED_PORTS_BELOW)
                .map(|p| format!("ports {} (below {PRIVILEGED_PORTS_BELOW})", p.key())),
        );
        let Some(sec) = &self.security else {
            return out;
        };
        out.extend(
            sec.cap_add
                .iter()
                .filter(|name| {
                    let upper = name.trim().to_ascii_uppercase();
                    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
                    !BASELINE_CAPABILITIES.contains(&bare)
                })
                .map(|name| format!("security.cap_add {name}")),
        );
        if sec.seccomp == Some(SeccompMode::Unconfined) {
            out.push("security.seccomp unconfined".into());
        }
        out
    }
}

/// `devices`: `HOST[:CONTAINER]`, each an absolute plain path, at most
/// 64 of them, no container path twice.
pub(super) fn check_devices(devices: &[String]) -> Result<(), ApiError> {
    if devices.len() > 64 {
        return Err(ApiError::bad_request("invalid devices: at most 64"));
    }
    let plain = |p: &str| {
        p.starts_with('/')
            && p.len() > 1
            && p.len() <= 255
            && !p.contains('\0')
            && p[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..")
    };
    let mut seen = Vec::new();
    for d in devices {
        let (host, container) = d.split_once(':').unwrap_or((d, d));
        if !plain(host) || !plain(container) || container.contains(':') {
            return Err(ApiError::bad_request(format!(
                "invalid devices entry {d:?}: a device node's absolute path, like /dev/ttyUSB0 (or HOST:CONTAINER)"
            )));
        }
        if container.starts_with("/proc/") || container.starts_with("/sys/") {
            return Err(ApiError::bad_request(format!(
                "invalid devices entry {d:?}: not on /proc or /sys"
            )));
        }
        if seen.contains(&container) {
            return Err(ApiError::bad_request(format!(
                "invalid devices: {container} twice"
            )));
        }
        seen.push(container);
    }
    Ok(())
}

/// Each `${secrets.KEY}` in env names a plain secret name.
pub(super) fn check_secret_refs(spec: &ServiceSpec) -> Result<(), ApiError> {
    for (key, value) in &spec.env {
        let mut rest = value.as_str();
        while let Some(start) = rest.find("${secrets.") {
            let after = &rest[start + "${secrets.".len()..];
            let Some(end) = after.find('}') else {
                return Err(ApiError::bad_request(format!(
                    "invalid env {key}: unterminated ${{secrets."
                )));
            };
            let name = &after[..end];
            if !is_secret_name(name) {
                return Err(ApiError::bad_request(format!(
                    "invalid env {key}: secret name {name:?} must match [A-Za-z_][A-Za-z0-9_]* \
                     (a secret of the service's own project)"
                )));
            }
            rest = &after[end + 1..];
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> ServiceSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn secret_names_are_plain() {
        for good in ["DB_PASS", "_x", "a1", "K"] {
            assert!(is_secret_name(good), "{good}");
        }
        for bad in ["", "1A", "bank/KEY", "a-b", "a.b", "../x", "A B", "é"] {
            assert!(!is_secret_name(bad), "{bad}");
        }
        let s = spec(r#"{"name":"a","image":"x","env":{"P":"${secrets.bank/BANKKEY}"}}"#);
        let e = s.validate().unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains("bank/BANKKEY"), "{}", e.message);
        let s = spec(r#"{"name":"a","image":"x","env":{"P":"${secrets.BANKKEY"}}"#);
        assert_eq!(s.validate().unwrap_err().status, 400);
        // Positive control: a plain name validates.
        let s = spec(r#"{"name":"a","image":"x","env":{"P":"u:${secrets.BANKKEY}@h"}}"#);
        s.validate().unwrap();
        assert_eq!(s.secret_refs(), ["BANKKEY"]);
    }

    #[test]
    fn finds_secret_references() {
        let s = spec(
            r#"{"name":"a","image":"x","env":{"A":"${secrets.DB_PASS}","B":"x${secrets.ONE}y${secrets.TWO}","C":"plain","D":"${secrets.ONE}"}}"#,
        );
        assert_eq!(s.secret_refs(), ["DB_PASS", "ONE", "TWO"]);
    }

    #[test]
    fn privileged_fields_are_named() {
        let s = spec(
            r#"{"name":"a","image":"x","security":{"cap_add":["NET_RAW","cap_chown","SYS_ADMIN","ALL"],"seccomp":"unconfined"}}"#,
        );
        assert_eq!(
            s.privileged_fields(),
            [
                "security.cap_add SYS_ADMIN",
                "security.cap_add ALL",
                "security.seccomp unconfined"
            ]
        );
        let baseline = spec(
            r#"{"name":"a","image":"x","security":{"cap_add":["NET_RAW","KILL"],"cap_drop":["ALL"],"seccomp":"default","read_only_rootfs":true}}"#,
        );
        assert!(baseline.privileged_fields().is_empty());
        assert!(spec(r#"{"name":"a","image":"x"}"#)
            .privileged_fields()
            .is_empty());
    }

    #[test]
    fn low_published_ports_are_privileged() {
        let s = spec(
            r#"{"name":"a","image":"x","ports":["22:2222","1023:80/udp","1024:80",{"published":8443,"target":443}]}"#,
        );
        assert_eq!(
            s.privileged_fields(),
            ["ports 22/tcp (below 1024)", "ports 1023/udp (below 1024)"]
        );
        // The target is the replica's own business: a high published port
        // to a low target is no privilege.
        assert!(spec(r#"{"name":"a","image":"x","ports":["8080:80"]}"#)
            .privileged_fields()
            .is_empty());
    }
}
