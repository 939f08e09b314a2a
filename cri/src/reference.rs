//! Image references: parsing and normalising `nginx:alpine` into
//! `docker.io/library/nginx:alpine`, the way Docker and containerd name images.

use std::fmt;

use crate::error::{CriError, Result};

/// Docker Hub's name in references.
pub const DOCKER_HUB: &str = "docker.io";
/// Docker Hub's registry API host.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";

/// A normalised image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImageRef {
    /// Registry host (and port): `docker.io`, `127.0.0.1:5000`, `ghcr.io`.
    pub registry: String,
    /// Repository path in the registry: `library/nginx`.
    pub repository: String,
    /// Tag, if any (`latest` when neither tag nor digest was given).
    pub tag: Option<String>,
    /// Digest (`sha256:...`), if pinned.
    pub digest: Option<String>,
}

impl ImageRef {
    /// Parses and normalises a reference.
    pub fn parse(input: &str) -> Result<Self> {
        let bad = |reason: &str| CriError::InvalidReference {
            reference: input.to_string(),
            reason: reason.to_string(),
        };
        if input.is_empty() {
            return Err(bad("empty"));
        }
        if input.len() > 4096 {
            return Err(bad("too long"));
        }
        if input.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace"));
        }

        let (rest, digest) = match input.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest).map_err(|r| bad(&r))?;
                (rest, Some(digest.to_string()))
            }
            None => (input, None),
        };

        // A tag is a ':' after the last '/', so "host:5000/app" has none.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let at = last_slash + i;
                (&rest[..at], Some(rest[at + 1..].to_string()))
            }
            None => (rest, None),
        };
        if let Some(tag) = &tag {
            validate_tag(tag).map_err(|r| bad(&r))?;
        }

        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                let registry = if first == "index.docker.io" {
                    DOCKER_HUB
                } else {
                    first
                };
                (registry.to_string(), remainder.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        validate_registry(&registry).map_err(|r| bad(&r))?;
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(|r| bad(&r))?;

        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when
    /// pinned, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host to talk to for this reference's registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// `registry/repository` without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same reference pinned to `digest`, keeping the tag for humans.
    pub fn with_digest(&self, digest: &str) -> Self {
        ImageRef {
            digest: Some(digest.to_string()),
            ..self.clone()
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for ImageRef {
    type Err = CriError;
    fn from_str(s: &str) -> Result<Self> {
        ImageRef::parse(s)
    }
}

/// `sha256:<64 hex>` (or sha512 with 128).
pub fn validate_digest(digest: &str) -> std::result::Result<(), String> {
    let (algorithm, hex) = digest
        .split_once(':')
        .ok_or_else(|| format!("digest {digest:?} has no algorithm"))?;
    let want = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ => return Err(format!("unsupported digest algorithm {algorithm:?}")),
    };
    if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!("malformed digest {digest:?}"));
    }
    Ok(())
}

fn validate_tag(tag: &str) -> std::result::Result<(), String> {
    let mut chars = tag.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok
        || tag.len() > 128
        || !tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err(format!("malformed tag {tag:?}"));
    }
    Ok(())
}

fn validate_registry(registry: &str) -> std::result::Result<(), String> {
    let bad = || format!("malformed registry {registry:?}");
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    let labels_ok = !host.is_empty()
        && host.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        });
    if labels_ok {
        Ok(())
    } else {
        Err(bad())
    }
}

fn validate_repository(repository: &str) -> std::result::Result<(), String> {
    if repository.is_empty() {
        return Err("empty repository".into());
    }
    for component in repository.split('/') {
        let bytes = component.as_bytes();
        let valid_chars = component
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        let alnum_ends = bytes.first().is_some_and(u8::is_ascii_alphanumeric)
            && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
        if !valid_chars || !alnum_ends {
            return Err(format!(
                "malformed repository {repository:?} (lowercase letters, digits and . _ - only)"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        ImageRef::parse(s).unwrap().to_string()
    }

    #[test]
    fn normalises_docker_hub_names() {
        assert_eq!(norm("nginx:alpine"), "docker.io/library/nginx:alpine");
        assert_eq!(norm("nginx"), "docker.io/library/nginx:latest");
        assert_eq!(norm("bitnami/redis:7"), "docker.io/bitnami/redis:7");
        assert_eq!(norm("docker.io/nginx"), "docker.io/library/nginx:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx:1"),
            "docker.io/library/nginx:1"
        );
    }

    #[test]
    fn keeps_other_registries() {
        assert_eq!(
            norm("127.0.0.1:5000/orca-test/web:v1"),
            "127.0.0.1:5000/orca-test/web:v1"
        );
        assert_eq!(norm("localhost/app"), "localhost/app:latest");
        assert_eq!(norm("ghcr.io/o/r/x:1.2"), "ghcr.io/o/r/x:1.2");
        let r = ImageRef::parse("host:5000/app").unwrap();
        assert_eq!(r.registry, "host:5000");
        assert_eq!(r.tag.as_deref(), Some("latest"));
    }

    #[test]
    fn digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageRef::parse(&format!("nginx@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = ImageRef::parse(&format!("nginx:1@{d}")).unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/nginx:1@{d}"));
        assert!(ImageRef::parse("nginx@sha256:abc").is_err());
        assert!(ImageRef::parse("nginx@md5:abc").is_err());
    }

    #[test]
    fn api_host_of_docker_hub() {
        assert_eq!(
            ImageRef::parse("nginx").unwrap().api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(
            ImageRef::parse("127.0.0.1:5000/a").unwrap().api_host(),
            "127.0.0.1:5000"
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Nginx",
            "nginx:",
            "nginx:-x",
            "a b",
            "../etc/passwd",
            "x//y",
            "nginx:a/b",
            "-a",
            "a-",
        ] {
            let err = ImageRef::parse(bad);
            assert!(err.is_err(), "{bad:?} should not parse: {err:?}");
        }
        let msg = ImageRef::parse("Nginx").unwrap_err().to_string();
        assert!(
            msg.starts_with("invalid image reference \"Nginx\""),
            "{msg}"
        );
    }
}
