//! The spec's rules, one by one.

use super::*;
use crate::resources::{CpuLimit, MemoryLimit};

fn image() -> ImageConfig {
    ImageConfig {
        entrypoint: Some(vec!["/bin/web".into()]),
        cmd: Some(vec!["--flag".into()]),
        env: Some(vec![
            "PATH=/bin".into(),
            "VERSION=v1".into(),
            "EMPTY=".into(),
        ]),
        working_dir: Some("/www".into()),
        ..Default::default()
    }
}

fn config() -> ContainerConfig {
    ContainerConfig {
        id: "web-1".into(),
        ..Default::default()
    }
}

fn json(spec: &Spec) -> serde_json::Value {
    serde_json::to_value(spec).unwrap()
}

#[test]
fn process_from_image() {
    let spec = json(&build_spec("orca", &image(), &config(), &UserDb::default()).unwrap());
    let p = &spec["process"];
    assert_eq!(p["args"], serde_json::json!(["/bin/web", "--flag"]));
    assert_eq!(p["cwd"], "/www");
    assert_eq!(
        p["env"],
        serde_json::json!(["PATH=/bin", "VERSION=v1", "EMPTY=", "HOSTNAME=web-1"])
    );
    assert_eq!(p["user"]["uid"], 0);
    assert_eq!(p["noNewPrivileges"], true);
    assert_eq!(spec["hostname"], "web-1");
    assert_eq!(spec["root"]["path"], "rootfs");
    assert_eq!(spec["linux"]["cgroupsPath"], "/orca/web-1");
}

#[test]
fn overrides_win() {
    let mut c = config();
    c.command = Some(vec!["/bin/sh".into(), "-c".into(), "env".into()]);
    c.env = vec![("VERSION".into(), "v9".into()), ("NEW".into(), "x".into())];
    c.working_dir = Some("/tmp".into());
    c.user = Some("65534:65534".into());
    c.hostname = Some("box".into());
    let spec = json(&build_spec("orca", &image(), &c, &UserDb::default()).unwrap());
    let p = &spec["process"];
    assert_eq!(p["args"], serde_json::json!(["/bin/sh", "-c", "env"]));
    assert_eq!(
        p["env"],
        serde_json::json!(["PATH=/bin", "VERSION=v9", "EMPTY=", "NEW=x", "HOSTNAME=box"])
    );
    assert_eq!(p["cwd"], "/tmp");
    assert_eq!(p["user"]["uid"], 65534);
    assert_eq!(p["user"]["gid"], 65534);
}

#[test]
fn entrypoint_and_args_replace_their_halves() {
    let argv = |e: Option<&[&str]>, a: Option<&[&str]>| {
        let own = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (e, a) = (e.map(own), a.map(own));
        process_args(&image(), None, e.as_deref(), a.as_deref()).unwrap()
    };
    // compose's command: the image's Entrypoint, then the new Cmd.
    assert_eq!(argv(None, Some(&["-v"])), ["/bin/web", "-v"]);
    // An entrypoint drops the image's Cmd, as Docker does.
    assert_eq!(argv(Some(&["/bin/sh"]), None), ["/bin/sh"]);
    assert_eq!(
        argv(Some(&["/bin/sh", "-c"]), Some(&["env"])),
        ["/bin/sh", "-c", "env"]
    );
    assert_eq!(argv(None, None), ["/bin/web", "--flag"]);
}

#[test]
fn path_is_filled_in() {
    let img = ImageConfig {
        cmd: Some(vec!["x".into()]),
        ..Default::default()
    };
    let env = merged_env(&img, &[], "h").unwrap();
    assert_eq!(env[0], format!("PATH={DEFAULT_PATH}"));
    assert!(merged_env(&img, &[("A=B".into(), "x".into())], "h").is_err());
}

#[test]
fn no_command_is_an_error() {
    let err = build_spec(
        "orca",
        &ImageConfig::default(),
        &config(),
        &UserDb::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no Entrypoint or Cmd"), "{err}");
}

#[test]
fn limits_and_hardening() {
    let mut c = config();
    c.resources.memory = Some(MemoryLimit::parse("64Mi").unwrap());
    c.resources.cpu = Some(CpuLimit::new(0.5).unwrap());
    let spec = json(&build_spec("orca", &image(), &c, &UserDb::default()).unwrap());
    let r = &spec["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 64 << 20);
    assert_eq!(r["cpu"]["quota"], 50_000);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["devices"][0]["allow"], false);
    assert_eq!(r["devices"][0]["access"], "rwm");
    let caps = spec["process"]["capabilities"]["bounding"]
        .as_array()
        .unwrap();
    assert_eq!(caps.len(), 13);
    assert!(caps.contains(&serde_json::json!("CAP_NET_BIND_SERVICE")));
    assert!(!caps.contains(&serde_json::json!("CAP_SYS_ADMIN")));
    assert!(!caps.contains(&serde_json::json!("CAP_NET_RAW")));
    assert!(r.get("pids").is_none(), "no pids limit unless asked");
    assert_eq!(
        spec["process"]["capabilities"]["ambient"],
        serde_json::json!([])
    );
    assert!(spec["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("/proc/kcore")));
    assert!(spec["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("/proc/sys")));
    let mounts: Vec<&str> = spec["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for m in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ] {
        assert!(mounts.contains(&m), "{m} missing");
    }
}

#[test]
fn namespaces_by_network_mode() {
    let kinds = |c: &ContainerConfig| -> Vec<serde_json::Value> {
        json(&build_spec("orca", &image(), c, &UserDb::default()).unwrap())["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .clone()
    };
    let mut c = config();
    let ns = kinds(&c);
    assert_eq!(ns.len(), 5);
    assert!(ns.iter().all(|n| n["type"] != "cgroup"));
    c.network = NetworkMode::Join("/run/netns/x".into());
    let ns = kinds(&c);
    assert!(ns
        .iter()
        .any(|n| n["type"] == "network" && n["path"] == "/run/netns/x"));
    c.network = NetworkMode::Host;
    assert!(kinds(&c).iter().all(|n| n["type"] != "network"));
}

#[test]
fn ids_and_users() {
    assert!(validate_id("web-1.a_b").is_ok());
    for bad in ["", "../x", "a/b", "-a", &"a".repeat(77)] {
        assert!(validate_id(bad).is_err(), "{bad}");
    }
}

#[test]
fn capabilities_added_and_dropped_and_a_pids_limit() {
    let caps_of = |c: &ContainerConfig| -> Vec<String> {
        let spec = json(&build_spec("orca", &image(), c, &UserDb::default()).unwrap());
        let mut v: Vec<String> = spec["process"]["capabilities"]["effective"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let mut c = config();
    c.cap_add = vec!["net_raw".into(), "CAP_NET_ADMIN".into()];
    c.cap_drop = vec!["CHOWN".into()];
    let caps = caps_of(&c);
    assert!(caps.contains(&"CAP_NET_RAW".to_string()));
    assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
    assert!(!caps.contains(&"CAP_CHOWN".to_string()));
    assert_eq!(caps.len(), 14);
    c.cap_drop = vec!["ALL".into()];
    c.cap_add = vec!["KILL".into()];
    assert_eq!(caps_of(&c), vec!["CAP_KILL".to_string()]);
    c.cap_add = vec!["ALL".into()];
    assert_eq!(caps_of(&c).len(), 41);
    c.cap_add = vec!["CAP_NOPE".into()];
    assert!(build_spec("orca", &image(), &c, &UserDb::default()).is_err());

    let mut c = config();
    c.resources.pids = Some(1024);
    let spec = json(&build_spec("orca", &image(), &c, &UserDb::default()).unwrap());
    assert_eq!(spec["linux"]["resources"]["pids"]["limit"], 1024);
}
