//! The one name validator: every service, project, node and alias name
//! passes through [`checked_name`] before it reaches containerd ids, file
//! paths, DNS or firewall rules.

use crate::error::ApiError;

/// Longest DNS label.
pub const MAX_NAME: usize = 63;

/// [`is_dns_label`] as a regular expression (for the OpenAPI document).
pub const LABEL_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

/// True for a DNS label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 chars.
pub fn is_dns_label(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// `name` if it is a DNS label, else a 400 naming `field`.
pub fn checked_name<'a>(field: &str, name: &'a str) -> Result<&'a str, ApiError> {
    if is_dns_label(name) {
        Ok(name)
    } else {
        let shown: String = name.chars().take(80).collect();
        Err(ApiError::bad_request(format!(
            "invalid {field} {shown:?}: must be a DNS label (lowercase letters, digits and '-', at most {MAX_NAME} characters, not starting or ending with '-')"
        )))
    }
}

/// Top-level domains a project may not be named after: replicas resolve
/// `<service>.<project>`, so a project `org` would shadow `pypi.org` for
/// every replica. The most used generic and country domains, and the
/// special-use ones.
pub const RESERVED_PROJECTS: [&str; 48] = [
    "com",
    "org",
    "net",
    "io",
    "dev",
    "app",
    "ai",
    "co",
    "me",
    "info",
    "biz",
    "edu",
    "gov",
    "mil",
    "int",
    "xyz",
    "cloud",
    "online",
    "site",
    "tech",
    "top",
    "page",
    "arpa",
    "local",
    "localhost",
    "internal",
    "test",
    "example",
    "invalid",
    "onion",
    "home",
    "lan",
    "corp",
    "us",
    "uk",
    "de",
    "fr",
    "cn",
    "jp",
    "ru",
    "br",
    "in",
    "eu",
    "nl",
    "au",
    "ca",
    "it",
    "orca",
];

/// A 400 when `project` is reserved: a listed top-level domain, or one of
/// `extra` (`[network] reserved_names`).
pub fn check_project_not_reserved(project: &str, extra: &[String]) -> Result<(), ApiError> {
    if RESERVED_PROJECTS.contains(&project) || extra.iter().any(|e| e == project) {
        return Err(ApiError::bad_request(format!(
            "project name {project:?} is reserved: replicas resolve <service>.{project} to \
             orca's services, which would shadow that domain"
        )));
    }
    Ok(())
}

/// True for a DNS name of labels joined by dots (a `domain`).
pub fn is_dns_name(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|l| {
            let lower = l.to_ascii_lowercase();
            is_dns_label(&lower) && lower == l
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        for ok in ["a", "web", "my-app", "a1", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in [
            "",
            "../etc",
            "A_B",
            "-a",
            "a-",
            "a.b",
            "Web",
            &"a".repeat(64),
            "a b",
            "é",
        ] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn error_names_the_field() {
        let e = checked_name("service name", "A_B").unwrap_err();
        assert_eq!(e.status, 400);
        assert!(
            e.message.starts_with("invalid service name \"A_B\""),
            "{}",
            e.message
        );
    }

    #[test]
    fn domains() {
        assert!(is_dns_name("app.example.com"));
        assert!(is_dns_name("localhost"));
        assert!(!is_dns_name("app..com"));
        assert!(!is_dns_name("App.com"));
        assert!(!is_dns_name("a_b.com"));
    }

    #[test]
    fn top_level_domains_and_configured_names_are_reserved_projects() {
        let extra = vec!["acme".to_string()];
        for p in ["org", "com", "io", "acme"] {
            assert!(check_project_not_reserved(p, &extra).is_err(), "{p}");
        }
        for p in ["shop", "orgs", "default"] {
            assert!(check_project_not_reserved(p, &extra).is_ok(), "{p}");
        }
    }
}
