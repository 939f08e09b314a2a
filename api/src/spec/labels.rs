//! `labels`: the user's own metadata on a service's replicas, as Docker's
//! and compose's `labels` are. They land on each replica's container in
//! containerd, beside orca's own, which they can never shadow.

use std::collections::BTreeMap;

use crate::error::ApiError;

/// At most this many labels.
const MAX_LABELS: usize = 64;
/// A key's most bytes.
const MAX_KEY: usize = 128;
/// A value's most bytes (containerd takes 4 KiB for key and value).
const MAX_VALUE: usize = 2048;
/// Prefixes that belong to orca and containerd.
const RESERVED: [&str; 2] = ["orca.", "io.containerd."];

/// Each key is 1 to 128 bytes of `[A-Za-z0-9._/:@-]`, starting with a
/// letter or digit, outside `orca.` and `io.containerd.`; each value 1 to
/// 2048 bytes without NUL; at most 64 labels.
pub(super) fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if labels.len() > MAX_LABELS {
        return Err(ApiError::bad_request(format!(
            "invalid labels: at most {MAX_LABELS}"
        )));
    }
    for (key, value) in labels {
        let plain = key.len() <= MAX_KEY
            && key.starts_with(|c: char| c.is_ascii_alphanumeric())
            && key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._/:@-".contains(&b));
        if !plain {
            return Err(ApiError::bad_request(format!(
                "invalid label {key:?}: 1 to {MAX_KEY} of [A-Za-z0-9._/:@-], starting with a letter or digit"
            )));
        }
        if let Some(prefix) = RESERVED.iter().find(|p| key.starts_with(*p)) {
            return Err(ApiError::bad_request(format!(
                "invalid label {key:?}: {prefix} labels are orca's and containerd's own"
            )));
        }
        if value.is_empty() || value.len() > MAX_VALUE || value.contains('\0') {
            return Err(ApiError::bad_request(format!(
                "invalid value of label {key}: 1 to {MAX_VALUE} bytes, no NUL (containerd keeps no label with an empty value)"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn keys_and_values() {
        check_labels(&labels(&[
            ("com.example.description", "Accounting webapp"),
            ("traefik.http.routers.web.rule", "Host(`a.test`)"),
            ("tier", "front"),
        ]))
        .unwrap();
        assert!(check_labels(&labels(&[("bare", "")])).is_err());
        for (key, says) in [
            ("orca.service", "orca's and containerd's own"),
            ("io.containerd.image.name", "orca's and containerd's own"),
            ("", "starting with a letter"),
            (".hidden", "starting with a letter"),
            ("a b", "[A-Za-z0-9._/:@-]"),
            ("ключ", "[A-Za-z0-9._/:@-]"),
        ] {
            let e = check_labels(&labels(&[(key, "v")])).unwrap_err();
            assert_eq!(e.status, 400);
            assert!(e.message.contains(says), "{key}: {}", e.message);
        }
        let long = "x".repeat(MAX_VALUE + 1);
        assert!(check_labels(&labels(&[("k", &long)])).is_err());
        assert!(check_labels(&labels(&[("k", "a\0b")])).is_err());
        let many: BTreeMap<String, String> = (0..=MAX_LABELS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check_labels(&many).is_err());
    }
}
