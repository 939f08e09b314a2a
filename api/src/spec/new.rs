//! [`ServiceSpec::new`]: a spec with every field at its default, for code
//! that builds specs (the compose importer) rather than reading them.

use std::collections::BTreeMap;

use super::ServiceSpec;

impl ServiceSpec {
    /// `name` in `project` running `image`, one replica, nothing else set.
    pub fn new(name: &str, project: &str, image: &str) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            project: project.to_string(),
            image: image.to_string(),
            replicas: 1,
            port: None,
            domain: None,
            routes: Vec::new(),
            strip_prefix: false,
            tls: None,
            health: None,
            env: BTreeMap::new(),
            resources: None,
            internal: false,
            placement: None,
            aliases: Vec::new(),
            command: None,
            entrypoint: None,
            args: None,
            working_dir: None,
            deploy: None,
            liveness: None,
            readiness: None,
            files: Vec::new(),
            devices: Vec::new(),
            volumes: Vec::new(),
            stop_grace_secs: None,
            security: None,
            user: None,
            pull: None,
            restart: None,
            schedule: None,
            timezone: None,
            ports: Vec::new(),
            depends_on: None,
            labels: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn new_is_what_the_minimal_json_reads_as() {
        let read: super::ServiceSpec =
            serde_json::from_str(r#"{"name":"a","project":"p","image":"i"}"#).unwrap();
        assert_eq!(super::ServiceSpec::new("a", "p", "i"), read);
    }
}
