//! Every compose file of docker/awesome-compose (a copy under
//! tests/fixtures/compose, with its license) either converts, or is
//! refused only for keys orca refuses; a dozen are checked key by key.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use compose::{convert, Context, Converted};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/compose")
}

/// Files the compose files read (secrets, env files) are not in the copy:
/// each reads as a line naming it.
fn read(p: &Path) -> std::io::Result<String> {
    Ok(format!("content of {}\n", p.display()))
}

fn convert_file(name: &str) -> Converted {
    let path = corpus().join(name);
    let text = std::fs::read_to_string(&path).unwrap();
    // The .env files of the corpus (copied beside their compose file).
    let stem = name.split('.').next().unwrap();
    let env: BTreeMap<String, String> =
        std::fs::read_to_string(corpus().join(format!("{stem}.env")))
            .map(|t| compose::dotenv::parse(&t).unwrap().into_iter().collect())
            .unwrap_or_default();
    let ctx = Context {
        dir: PathBuf::from("/srv").join(stem),
        env,
        project: None,
        read: &read,
    };
    convert(&text, &ctx).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The reasons a refusal may give: orca's refused keys, and nothing else.
const REFUSED_KEYS: &[&str] = &[
    "build without image",
    "network_mode",
    "privileged",
    "pid:",
    "ipc:",
    "extends",
    "volumes_from",
    "ipv4_address",
    "ipv6_address",
    "external_links",
    "userns_mode",
    "cgroup_parent",
    "sysctls",
    "security_opt",
    "runtime",
    "deploy.mode global",
];

#[test]
fn every_file_converts_or_is_refused_for_refused_keys_only() {
    let mut names: Vec<String> = std::fs::read_dir(corpus())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") || n.ends_with(".yml"))
        .collect();
    names.sort();
    assert!(names.len() >= 39, "the corpus has {} files", names.len());
    let (mut ok, mut refused) = (0, 0);
    for name in &names {
        let c = convert_file(name);
        if c.refused.is_empty() {
            ok += 1;
            println!(
                "{name}: converted, {} services, {} notes",
                c.services.len(),
                c.notes.len()
            );
            for spec in &c.services {
                let r = spec.validate();
                // Binds are checked against the node at deploy, not here.
                assert!(
                    r.is_ok(),
                    "{name}: {}: {:?}",
                    spec.name,
                    r.err().map(|e| e.message)
                );
            }
        } else {
            refused += 1;
            println!("{name}: refused: {:?}", c.refused);
            // What converted beside the refusals (--ignore-unsupported) is valid.
            for spec in c.services.iter().filter(|s| !s.image.is_empty()) {
                let r = spec.validate();
                assert!(
                    r.is_ok(),
                    "{name}: {}: {:?}",
                    spec.name,
                    r.err().map(|e| e.message)
                );
            }
            for line in &c.refused {
                assert!(
                    REFUSED_KEYS.iter().any(|k| line.contains(k)),
                    "{name}: refused for a key not on the list: {line}"
                );
            }
        }
    }
    println!("{ok} converted, {refused} refused for refused keys");
    // 30 of the 39 build their own images (or need a runtime, sysctls or
    // the host's network); the 9 others convert whole.
    assert!(ok >= 9, "only {ok} of {} converted", names.len());
}

#[test]
fn a_dozen_map_key_by_key() {
    let c = convert_file("gitea-postgres.yaml");
    assert!(c.refused.is_empty(), "{:?}", c.refused);
    assert_eq!(c.project, "gitea-postgres");
    let gitea = c.services.iter().find(|s| s.name == "gitea").unwrap();
    assert_eq!(gitea.image, "gitea/gitea:latest");
    assert_eq!(gitea.env["DB_HOST"], "db:5432");
    assert_eq!(gitea.ports[0].parse().unwrap().key(), "3000/tcp");
    assert!(
        matches!(&gitea.mounts()[0], api::spec::Mount::Volume { name, target, .. } if name == "git-data" && target == "/data"),
        "{:?}",
        gitea.mounts()
    );
    assert!(
        c.notes.iter().any(|n| n.contains("expose ignored")),
        "{:?}",
        c.notes
    );

    let c = convert_file("nginx-flask-mysql.yaml");
    assert!(
        c.refused
            .iter()
            .any(|r| r == "line 28: backend: build: build without image: orca runs images; build and push it, then name it in image"),
        "{:?}",
        c.refused
    );
    let db = c.services.iter().find(|s| s.name == "db").unwrap();
    assert_eq!(
        db.args.as_deref(),
        Some(&["--default-authentication-plugin=mysql_native_password".to_string()][..])
    );
    let probe = db.readiness.as_ref().unwrap();
    assert_eq!(
        probe.exec.as_ref().unwrap()[..2],
        ["sh".to_string(), "-c".to_string()]
    );
    assert_eq!(
        (
            probe.interval_secs,
            probe.failure_threshold,
            probe.initial_delay_secs
        ),
        (Some(3), Some(5), Some(30))
    );
    assert_eq!(db.files[0].target, "/run/secrets/db-password");
    assert!(db.files[0]
        .content
        .as_deref()
        .unwrap()
        .contains("db/password.txt"));
    let backend = c.services.iter().find(|s| s.name == "backend").unwrap();
    assert_eq!(
        backend.depends_on.as_ref().unwrap().conditions()["db"],
        api::spec::Condition::Healthy
    );

    let c = convert_file("pihole-cloudflared-DoH.yaml");
    assert!(
        c.refused.iter().any(|r| r.contains("ipv4_address")),
        "{:?}",
        c.refused
    );
    let pihole = c.services.iter().find(|s| s.name == "pihole").unwrap();
    let keys: Vec<String> = pihole
        .ports
        .iter()
        .map(|p| p.parse().unwrap().key())
        .collect();
    assert!(
        keys.contains(&"53/udp".to_string()) && keys.contains(&"67/udp".to_string()),
        "{keys:?}"
    );
    assert_eq!(pihole.security.as_ref().unwrap().cap_add, ["NET_ADMIN"]);
    assert_eq!(pihole.env["TZ"], "Etc/UTC", "from the .env file");
    assert!(
        matches!(&pihole.mounts()[0], api::spec::Mount::Bind { source, .. } if source == "/etc/pihole"),
        "{:?}",
        pihole.mounts()
    );

    for (file, service, image) in [
        ("wordpress-mysql.yaml", "wordpress", "wordpress:latest"),
        (
            "postgresql-pgadmin.yaml",
            "pgadmin",
            "dpage/pgadmin4:latest",
        ),
        ("prometheus-grafana.yaml", "grafana", "grafana/grafana"),
        ("minecraft.yaml", "minecraft", "itzg/minecraft-server"),
        ("plex.yaml", "plex", "linuxserver/plex"),
        (
            "portainer.yaml",
            "portainer",
            "portainer/portainer-ce:alpine",
        ),
        ("nextcloud-redis-mariadb.yaml", "redis", "redis:alpine"),
        ("wireguard.yaml", "wireguard", "linuxserver/wireguard"),
        (
            "elasticsearch-logstash-kibana.yaml",
            "kibana",
            "kibana:7.16.1",
        ),
    ] {
        let c = convert_file(file);
        let s = c.services.iter().find(|s| s.name == service);
        let s = s.unwrap_or_else(|| {
            panic!(
                "{file}: no {service} in {:?}",
                c.services.iter().map(|s| &s.name).collect::<Vec<_>>()
            )
        });
        assert_eq!(s.image, image, "{file}");
        assert_eq!(s.project, file.split('.').next().unwrap(), "{file}");
    }
}
