//! The spec's checks, one by one.

use super::*;

fn spec(json: &str) -> Result<ServiceSpec, String> {
    serde_json::from_str::<ServiceSpec>(json).map_err(|e| e.to_string())
}

#[test]
fn seed_payload_parses() {
    let req: DeployRequest = serde_json::from_str(
        r#"{"services":[{"name":"my-app","project":"frontend","image":"nginx:alpine","replicas":2,"port":80,
        "domain":"app.example.com","health":"/healthz","env":{"KEY":"${secrets.KEY}"},
        "resources":{"memory":"512Mi","cpu":1.0},"internal":true,"placement":{"node":"worker-1"}}]}"#,
    )
    .unwrap();
    let s = &req.services[0];
    assert_eq!(s.replicas, 2);
    assert_eq!(
        s.resources.as_ref().unwrap().memory.as_deref(),
        Some("512Mi")
    );
    s.validate().unwrap();
}

#[test]
fn defaults() {
    let s = spec(r#"{"name":"web","image":"nginx"}"#).unwrap();
    assert_eq!(s.project, "default");
    assert_eq!(s.replicas, 1);
    s.validate().unwrap();
}

#[test]
fn unknown_field_is_named() {
    let e = spec(r#"{"name":"web","image":"x","replica":3}"#).unwrap_err();
    assert!(e.contains("unknown field `replica`"), "{e}");
}

#[test]
fn bad_fields() {
    let cases = [
        (r#"{"name":"../etc","image":"x"}"#, "invalid service name"),
        (r#"{"name":"A_B","image":"x"}"#, "invalid service name"),
        (
            r#"{"name":"web","project":"Bad Project","image":"x"}"#,
            "invalid project",
        ),
        (r#"{"name":"web"}"#, "missing image"),
        (
            r#"{"name":"web","image":"x","replicas":-1}"#,
            "invalid replicas -1",
        ),
        (
            r#"{"name":"web","image":"x","replicas":100000}"#,
            "invalid replicas 100000",
        ),
        (r#"{"name":"web","image":"x","port":0}"#, "invalid port"),
        (
            r#"{"name":"web","image":"x","health":"healthz"}"#,
            "invalid health",
        ),
        (
            r#"{"name":"web","image":"x","env":{"A=B":"1"}}"#,
            "invalid env name",
        ),
        (
            r#"{"name":"web","image":"x","resources":{"cpu":-1}}"#,
            "invalid resources.cpu",
        ),
        (
            r#"{"name":"web","image":"x","aliases":["Not_ok"]}"#,
            "invalid alias",
        ),
        (
            r#"{"name":"web","image":"x","deploy":{"canary_weight":101}}"#,
            "invalid deploy.canary_weight",
        ),
        (
            r#"{"name":"web","image":"x","command":[]}"#,
            "invalid command",
        ),
    ];
    for (json, want) in cases {
        let e = spec(json).unwrap().validate().unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.message.contains(want), "{json}: {}", e.message);
    }
    let long = format!(r#"{{"name":"{}","image":"x"}}"#, "a".repeat(64));
    assert!(spec(&long).unwrap().validate().is_err());
    let empty = r#"{"name":"","image":"x"}"#;
    assert!(spec(empty).unwrap().validate().is_err());
}

#[test]
fn pull_defaults_by_reference() {
    use PullPolicy::*;
    for (image, want) in [
        ("nginx", Always),
        ("nginx:latest", Always),
        ("nginx:alpine", Missing),
        ("127.0.0.1:5000/app", Always),
        ("127.0.0.1:5000/app:v1", Missing),
        ("app@sha256:abc", Missing),
    ] {
        assert_eq!(PullPolicy::default_for(image), want, "{image}");
    }
    let s = spec(r#"{"name":"a","image":"app:v1","pull":"never"}"#).unwrap();
    assert_eq!(s.pull_policy(), Never);
    assert!(spec(r#"{"name":"a","image":"x","pull":"sometimes"}"#).is_err());
}

#[test]
fn tls_is_acme_or_files_and_says_so_otherwise() {
    let s = spec(r#"{"name":"a","image":"i","domain":"a.test","tls":"acme"}"#).unwrap();
    assert_eq!(s.tls, Some(TlsSpec::Mode(TlsMode::Acme)));
    assert!(s.validate().is_ok());
    let s = spec(r#"{"name":"a","image":"i","domain":"a.test","tls":{"cert":"/c","key":"/k"}}"#)
        .unwrap();
    assert!(matches!(s.tls, Some(TlsSpec::Files(_))));
    for bad in [
        r#"{"name":"a","image":"i","tls":"letsencrypt"}"#,
        r#"{"name":"a","image":"i","tls":{"cert":"/c"}}"#,
        r#"{"name":"a","image":"i","tls":{"cert":"/c","key":"/k","x":1}}"#,
        r#"{"name":"a","image":"i","tls":3}"#,
    ] {
        assert!(spec(bad).is_err(), "{bad}");
    }
    let e = spec(r#"{"name":"a","image":"i","tls":"letsencrypt"}"#).unwrap_err();
    assert!(e.contains(r#"must be "acme" or"#), "{e}");
    let no_domain = spec(r#"{"name":"a","image":"i","tls":"acme"}"#).unwrap();
    assert!(no_domain
        .validate()
        .unwrap_err()
        .message
        .contains("tls needs a domain"));
}

#[test]
fn users_and_confinement_are_checked() {
    for ok in ["1000", "1000:1000", "nginx", "www-data:www-data", "0"] {
        let s = spec(&format!(
            r#"{{"name":"web","image":"nginx","user":"{ok}"}}"#
        ))
        .unwrap();
        s.validate()
            .unwrap_or_else(|e| panic!("{ok}: {}", e.message));
    }
    for bad in [
        "",
        "1000:",
        ":1000",
        "-x",
        "a b",
        "root;rm",
        "99999999999",
        "a:b:c",
        &"u".repeat(33),
    ] {
        let s = spec(&format!(
            r#"{{"name":"web","image":"nginx","user":"{bad}"}}"#
        ))
        .unwrap();
        assert_eq!(s.validate().unwrap_err().status, 400, "{bad:?}");
    }
    let s = spec(
        r#"{"name":"web","image":"nginx","security":{"seccomp":"unconfined","read_only_rootfs":true}}"#,
    )
    .unwrap();
    let sec = s.security.as_ref().unwrap();
    assert_eq!(sec.seccomp, Some(SeccompMode::Unconfined));
    assert!(sec.read_only_rootfs);
    let e = spec(r#"{"name":"web","image":"nginx","security":{"seccomp":"off"}}"#).unwrap_err();
    assert!(e.contains("unknown variant"), "{e}");
}

#[test]
fn a_surge_is_a_count_or_a_share_rounded_up_and_at_least_one() {
    let pct = |p: &str| Surge::Percent(p.into());
    assert_eq!(pct("25%").of(10), Some(3));
    assert_eq!(pct("50%").of(30), Some(15));
    assert_eq!(pct("0%").of(30), Some(1));
    assert_eq!(Surge::Count(0).of(10), Some(1));
    assert_eq!(Surge::Count(4).of(10), Some(4));
    assert_eq!(pct("120%").of(10), None);
    assert_eq!(pct("lots").of(10), None);
    assert_eq!(Surge::Count(-1).of(10), None);
    // The default: 25% of the replicas, rounded up.
    assert_eq!(surge_of(None, 10), 3);
    assert_eq!(surge_of(None, 30), 8);
    assert_eq!(surge_of(None, 1), 1);
}

#[test]
fn a_reservation_is_checked_against_its_limit() {
    let spec = |resources: serde_json::Value| -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": "web", "image": "web:v1", "resources": resources
        }))
        .unwrap()
    };
    assert!(
        spec(serde_json::json!({"cpu": 1.0, "reserve": {"cpu": 0.5}}))
            .validate()
            .is_ok()
    );
    assert!(spec(serde_json::json!({"reserve": {"cpu": 0.0}}))
        .validate()
        .is_ok());
    let over = spec(serde_json::json!({"cpu": 0.5, "reserve": {"cpu": 1.0}}));
    assert!(over
        .validate()
        .unwrap_err()
        .message
        .contains("more than the limit"));
    let negative = spec(serde_json::json!({"reserve": {"cpu": -1.0}}));
    assert!(negative
        .validate()
        .unwrap_err()
        .message
        .contains("reserve.cpu"));
}
