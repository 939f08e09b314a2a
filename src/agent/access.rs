//! What of its host a node lets replicas reach: the `[volumes]
//! host_paths` bind mounts may come from and the `[volumes] devices`
//! (glob patterns) replicas may be given. A node tells the server when it
//! connects, so that a deploy is checked against the nodes that could run
//! it and a replica is placed only where its host paths and devices are
//! allowed. The node checks again at start, with links resolved.

use std::path::Path;

use api::spec::{Mount, ServiceSpec};
use serde::{Deserialize, Serialize};

use super::files::glob_match;

/// A node's `[volumes]` allowlists.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAccess {
    #[serde(default)]
    pub host_paths: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
}

impl HostAccess {
    /// The lists as a node's `[volumes]` config has them.
    pub fn new(host_paths: &[std::path::PathBuf], devices: &[String]) -> Self {
        Self {
            host_paths: host_paths
                .iter()
                .map(|p| p.to_string_lossy().into_owned())
                .collect(),
            devices: devices.to_vec(),
        }
    }

    /// The first of `spec`'s devices (its host side) that no pattern of
    /// `devices` matches.
    pub fn refused_device<'a>(&self, spec: &'a ServiceSpec) -> Option<&'a str> {
        spec.devices
            .iter()
            .map(|d| d.split_once(':').map_or(d.as_str(), |(h, _)| h))
            .find(|host| !self.devices.iter().any(|p| glob_match(p, host)))
    }

    /// Whether `spec`'s bind mounts and devices are all allowed here, by
    /// their paths (the node resolves links when it starts a replica);
    /// else what is not, and the key that would allow it.
    pub fn allows(&self, spec: &ServiceSpec) -> Result<(), String> {
        if let Some(host) = self.refused_device(spec) {
            return Err(format!("device {host} ([volumes] devices)"));
        }
        for m in spec.mounts() {
            if let Mount::Bind { source, .. } = m {
                let path = Path::new(&source);
                if !self.host_paths.iter().any(|root| path.starts_with(root)) {
                    return Err(format!("host path {source} ([volumes] host_paths)"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(volumes: &[&str], devices: &[&str]) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "s", "image": "i", "volumes": volumes, "devices": devices
        }))
        .unwrap()
    }

    #[test]
    fn paths_and_devices_are_matched_against_the_lists() {
        let access = HostAccess {
            host_paths: vec!["/srv/media".into()],
            devices: vec!["/dev/ttyUSB*".into()],
        };
        assert_eq!(
            access.allows(&spec(&["/srv/media/films:/films:ro"], &[])),
            Ok(())
        );
        assert_eq!(
            access.allows(&spec(&["/srv/media:/m"], &["/dev/ttyUSB0"])),
            Ok(())
        );
        assert_eq!(access.allows(&spec(&["data:/data"], &[])), Ok(()));
        // A sibling that shares the prefix as a string is outside.
        let e = access.allows(&spec(&["/srv/media2:/m"], &[])).unwrap_err();
        assert!(e.contains("/srv/media2") && e.contains("host_paths"), "{e}");
        let e = access.allows(&spec(&[], &["/dev/ttyACM0"])).unwrap_err();
        assert!(e.contains("/dev/ttyACM0") && e.contains("devices"), "{e}");
        // A node that allows nothing allows what reaches nothing.
        let none = HostAccess::default();
        assert_eq!(none.allows(&spec(&["data:/data"], &[])), Ok(()));
        assert!(none.allows(&spec(&["/srv/media:/m"], &[])).is_err());
    }
}
