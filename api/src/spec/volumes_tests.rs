use super::*;
use crate::spec::{ServiceSpec, Strategy};

fn spec(volumes: serde_json::Value) -> Result<ServiceSpec, String> {
    serde_json::from_value(serde_json::json!({
        "name": "db", "project": "shop", "image": "postgres:16", "volumes": volumes
    }))
    .map_err(|e| e.to_string())
}

fn refused(volumes: serde_json::Value) -> String {
    match spec(volumes.clone()) {
        Err(e) => e,
        Ok(s) => {
            let e = s.validate().expect_err(&volumes.to_string());
            assert_eq!(e.status, 400, "{volumes}");
            e.message
        }
    }
}

#[test]
fn short_and_long_syntax_read_alike() {
    let s = spec(serde_json::json!([
        "pgdata:/var/lib/postgresql/data",
        "conf:/etc/app:ro",
        "/srv/media:/media:ro",
        {"source": "data", "target": "/data", "per_replica": true},
        {"source": "seed", "target": "/seed", "nocopy": true},
        {"type": "tmpfs", "target": "/cache", "size": "64Mi"},
    ]))
    .unwrap();
    s.validate().unwrap();
    let m = s.mounts();
    assert_eq!(
        m[0],
        Mount::Volume {
            name: "pgdata".into(),
            target: "/var/lib/postgresql/data".into(),
            read_only: false,
            nocopy: false,
            per_replica: false
        }
    );
    assert!(matches!(
        &m[1],
        Mount::Volume {
            read_only: true,
            ..
        }
    ));
    assert_eq!(
        m[2],
        Mount::Bind {
            source: "/srv/media".into(),
            target: "/media".into(),
            read_only: true
        }
    );
    assert_eq!(m[3].volume_name(2).as_deref(), Some("data-2"));
    assert_eq!(m[0].volume_name(2).as_deref(), Some("pgdata"));
    assert!(matches!(&m[4], Mount::Volume { nocopy: true, .. }));
    assert!(matches!(&m[5], Mount::Tmpfs { size: Some(s), .. } if s == "64Mi"));
    // Written as given.
    let back = serde_json::to_value(&s).unwrap();
    assert_eq!(back["volumes"][0], "pgdata:/var/lib/postgresql/data");
    assert_eq!(back["volumes"][3]["per_replica"], true);
}

#[test]
fn a_writable_volume_makes_recreate_the_default() {
    let rw = spec(serde_json::json!(["pgdata:/data"])).unwrap();
    assert_eq!(rw.strategy(), Strategy::Recreate);
    let bind = spec(serde_json::json!(["/srv/x:/x"])).unwrap();
    assert_eq!(bind.strategy(), Strategy::Recreate);
    // Controls: read-only, tmpfs and nothing keep rolling; an explicit
    // rolling stays rolling.
    for v in [
        serde_json::json!(["pgdata:/data:ro"]),
        serde_json::json!([{"type": "tmpfs", "target": "/t"}]),
        serde_json::json!([]),
    ] {
        assert_eq!(spec(v).unwrap().strategy(), Strategy::Rolling);
    }
    let mut explicit = spec(serde_json::json!(["pgdata:/data"])).unwrap();
    explicit.deploy = Some(crate::spec::DeploySettings {
        strategy: Some(Strategy::Rolling),
        ..Default::default()
    });
    assert_eq!(explicit.strategy(), Strategy::Rolling);
    // A canary beside a writable volume is refused, with why.
    explicit.deploy.as_mut().unwrap().strategy = Some(Strategy::Canary);
    let e = explicit.validate().unwrap_err();
    assert!(e.message.contains("canary"), "{}", e.message);
}

#[test]
fn bad_entries_get_clear_errors() {
    for (v, says) in [
        (serde_json::json!(["/data"]), "anonymous"),
        (serde_json::json!(["Bad_Name:/data"]), "DNS label"),
        (serde_json::json!(["data:relative"]), "absolute"),
        (serde_json::json!(["data:/a/../etc"]), "'..'"),
        (
            serde_json::json!(["./here:/data"]),
            "absolute path on the node",
        ),
        (serde_json::json!(["/srv/../etc:/data"]), "'..'"),
        (serde_json::json!(["data:/data:rx"]), "ro or rw"),
        (serde_json::json!(["a:/b:ro:x"]), "SOURCE:TARGET"),
        (serde_json::json!(["data:/proc/x"]), "/proc"),
        (serde_json::json!(["data:/sys"]), "/sys"),
        (serde_json::json!(["data:/dev/shm"]), "/dev"),
        (serde_json::json!(["data:/"]), "cannot be /"),
        (serde_json::json!(["data:/etc/hosts"]), "orca's own"),
        (serde_json::json!(["a:/data", "b:/data"]), "two entries"),
        (
            serde_json::json!([{"source": "a", "target": "/a", "bogus": 1}]),
            "unknown field",
        ),
        (serde_json::json!([{"target": "/a"}]), "needs a source"),
        (
            serde_json::json!([{"type": "tmpfs", "target": "/a", "source": "x"}]),
            "tmpfs",
        ),
        (
            serde_json::json!([{"source": "a", "target": "/a", "size": "1Mi"}]),
            "tmpfs only",
        ),
        (
            serde_json::json!([{"source": "/srv", "target": "/a", "per_replica": true}]),
            "named volumes only",
        ),
        (
            serde_json::json!([{"source": "a", "target": "/a", "per_replica": true, "type": "tmpfs"}]),
            "named volumes only",
        ),
        (serde_json::json!([42]), "NAME:/path"),
    ] {
        let message = refused(v.clone());
        assert!(message.contains(says), "{v}: {message}");
    }
}

#[test]
fn bind_mounts_are_privileged_and_volumes_are_not() {
    let s = spec(serde_json::json!(["/srv/media:/media", "pgdata:/data"])).unwrap();
    assert_eq!(s.privileged_fields(), ["volumes bind mount /srv/media"]);
    let control = spec(serde_json::json!(["pgdata:/data"])).unwrap();
    assert!(control.privileged_fields().is_empty());
}
