//! `files`: small files put into a replica, given inline (`content`) or
//! as a secret of the service's project (`secret`, on a tmpfs, never on
//! disk), each with a mode. At most [`MAX_FILES_BYTES`] of content in all,
//! as Swarm's configs allow.

use serde::{Deserialize, Serialize};

use super::privilege::is_secret_name;
use super::volumes::check_target;
use crate::error::ApiError;

/// Most bytes of inline content a service's files may hold together.
pub const MAX_FILES_BYTES: usize = 512 * 1024;
/// Most files a service may have.
pub const MAX_FILES: usize = 64;

/// One entry of `files`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Where the replica sees it: an absolute path.
    pub target: String,
    /// The file's text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// A secret of the service's project, as the file's content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Octal permissions ("0444"); default 0444, 0400 for a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

impl FileSpec {
    /// The permissions in force (`mode` validated).
    pub fn mode_bits(&self) -> u32 {
        self.mode
            .as_deref()
            .and_then(parse_mode)
            .unwrap_or(if self.secret.is_some() { 0o400 } else { 0o444 })
    }
}

/// `"0640"` or `"640"` as bits, at most 0o7777.
fn parse_mode(m: &str) -> Option<u32> {
    if m.is_empty() || m.len() > 4 || !m.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(m, 8).ok()
}

/// Every file has a target, one source and a mode, and they fit.
pub(super) fn check_files(files: &[FileSpec], volume_targets: &[&str]) -> Result<(), ApiError> {
    if files.len() > MAX_FILES {
        return Err(ApiError::bad_request(format!(
            "invalid files: {} entries, at most {MAX_FILES}",
            files.len()
        )));
    }
    let mut total = 0usize;
    let mut seen: Vec<&str> = volume_targets.to_vec();
    for f in files {
        let bad = |why: String| {
            ApiError::bad_request(format!("invalid files entry {:?}: {why}", f.target))
        };
        check_target(&f.target, &f.target)?;
        if seen.contains(&f.target.as_str()) {
            return Err(bad("two entries of files or volumes mount it".into()));
        }
        seen.push(&f.target);
        match (&f.content, &f.secret) {
            (Some(c), None) => total += c.len(),
            (None, Some(s)) if is_secret_name(s) => {}
            (None, Some(s)) => {
                return Err(bad(format!(
                    "secret {s:?} must match [A-Za-z_][A-Za-z0-9_]* (a secret of the service's own project)"
                )))
            }
            _ => return Err(bad("needs content or a secret (one of them)".into())),
        }
        if let Some(m) = &f.mode {
            if parse_mode(m).is_none() {
                return Err(bad(format!("mode {m:?} must be octal like \"0444\"")));
            }
        }
    }
    if total > MAX_FILES_BYTES {
        return Err(ApiError::bad_request(format!(
            "invalid files: {total} bytes of content, at most {MAX_FILES_BYTES} (512 KiB) in all"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::spec::ServiceSpec;

    fn spec(files: serde_json::Value) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "db", "image": "pg:16", "files": files, "volumes": ["data:/data"]
        }))
        .unwrap()
    }

    #[test]
    fn files_take_content_or_a_secret() {
        let s = spec(serde_json::json!([
            {"target": "/etc/app.conf", "content": "a=1\n", "mode": "0640"},
            {"target": "/run/secrets/db_password", "secret": "DB_PASS"},
        ]));
        s.validate().unwrap();
        assert_eq!(s.files[0].mode_bits(), 0o640);
        assert_eq!(s.files[1].mode_bits(), 0o400);
        assert_eq!(s.secret_refs(), ["DB_PASS"]);
        for (files, says) in [
            (serde_json::json!([{"target": "/a"}]), "content or a secret"),
            (
                serde_json::json!([{"target": "/a", "content": "x", "secret": "K"}]),
                "one of them",
            ),
            (
                serde_json::json!([{"target": "/a", "secret": "../K"}]),
                "must match",
            ),
            (
                serde_json::json!([{"target": "/a", "content": "x", "mode": "999"}]),
                "octal",
            ),
            (
                serde_json::json!([{"target": "a", "content": "x"}]),
                "absolute",
            ),
            (
                serde_json::json!([{"target": "/proc/x", "content": "x"}]),
                "/proc",
            ),
            (
                serde_json::json!([{"target": "/data", "content": "x"}]),
                "two entries",
            ),
            (
                serde_json::json!([{"target": "/a", "content": "x"}, {"target": "/a", "content": "y"}]),
                "two entries",
            ),
            (
                serde_json::json!([{"target": "/a", "content": "x".repeat(600 * 1024)}]),
                "512 KiB",
            ),
        ] {
            let e = spec(files.clone()).validate().unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(says), "{files}: {}", e.message);
        }
        let bad: Result<ServiceSpec, _> = serde_json::from_value(serde_json::json!({
            "name": "db", "image": "x", "files": [{"target": "/a", "content": "x", "owner": 1}]
        }));
        assert!(bad.unwrap_err().to_string().contains("unknown field"));
    }
}
