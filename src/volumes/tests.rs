use super::*;

fn spec(json: serde_json::Value) -> ServiceSpec {
    let mut base = serde_json::json!({"name": "db", "project": "shop", "image": "pg:16"});
    for (k, v) in json.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn held(pairs: &[(&str, &str)]) -> BTreeMap<String, VolumeRecord> {
    pairs
        .iter()
        .map(|(key, node)| {
            let (project, name) = key.split_once('/').unwrap();
            (
                key.to_string(),
                VolumeRecord {
                    project: project.into(),
                    name: name.into(),
                    node: node.to_string(),
                    created: 1,
                },
            )
        })
        .collect()
}

fn pin(s: &ServiceSpec, slot: u32, h: &BTreeMap<String, VolumeRecord>) -> Pin {
    pin_of(s, slot, &|k| h.get(k).map(|v| v.node.clone()))
}

#[test]
fn a_replica_follows_its_data() {
    let s = spec(
        serde_json::json!({"volumes": ["pgdata:/data", "/srv/x:/x", {"type": "tmpfs", "target": "/t"}]}),
    );
    assert_eq!(pin(&s, 0, &held(&[])), Pin::Free);
    let h = held(&[("shop/pgdata", "n2")]);
    assert_eq!(
        pin(&s, 0, &h),
        Pin::Node {
            node: "n2".into(),
            volume: "shop/pgdata".into()
        }
    );
    // Another project's volume of the same name is another volume.
    assert_eq!(pin(&s, 0, &held(&[("bank/pgdata", "n2")])), Pin::Free);
    // placement.node against the data: nowhere, with the way out.
    let mut pinned = s.clone();
    pinned.placement = Some(api::spec::Placement {
        node: Some("n3".into()),
        ..Default::default()
    });
    match pin(&pinned, 0, &h) {
        Pin::Nowhere(why) => assert!(why.contains("orca volume mv shop/pgdata --to n3"), "{why}"),
        other => panic!("{other:?}"),
    }
    // Two volumes on two nodes: nowhere.
    let two = spec(serde_json::json!({"volumes": ["a:/a", "b:/b"]}));
    assert!(matches!(
        pin(&two, 0, &held(&[("shop/a", "n1"), ("shop/b", "n2")])),
        Pin::Nowhere(_)
    ));
    assert!(matches!(
        pin(&two, 0, &held(&[("shop/a", "n1"), ("shop/b", "n1")])),
        Pin::Node { .. }
    ));
}

#[test]
fn per_replica_volumes_pin_each_slot_alone() {
    let s = spec(
        serde_json::json!({"replicas": 3, "volumes": [{"source": "data", "target": "/data", "per_replica": true}]}),
    );
    assert_eq!(volumes_of(&s, 2), ["shop/data-2"]);
    let h = held(&[("shop/data-0", "n1"), ("shop/data-1", "n2")]);
    assert!(matches!(pin(&s, 0, &h), Pin::Node { ref node, .. } if node == "n1"));
    assert!(matches!(pin(&s, 1, &h), Pin::Node { ref node, .. } if node == "n2"));
    assert_eq!(pin(&s, 2, &h), Pin::Free);
    let m = mounts_of(&s, 1);
    assert!(matches!(&m[0], MountSpec::Volume { name, .. } if name == "data-1"));
}

#[test]
fn a_claim_is_made_once_and_never_moves_a_volume() {
    let h = held(&[("shop/pgdata", "n2")]);
    let keys = vec!["shop/pgdata".to_string(), "shop/cache".to_string()];
    let err = claim(&h, &keys, "n1", 5).unwrap_err();
    assert!(err.contains("on node n2"), "{err}");
    let new = claim(&h, &keys, "n2", 5).unwrap();
    assert_eq!(new.len(), 1);
    assert_eq!(
        (new[0].key(), new[0].node.as_str()),
        ("shop/cache".to_string(), "n2")
    );
}

#[test]
fn used_by_names_services_that_mount_it() {
    let db = ServiceRecord::for_tests(spec(serde_json::json!({"volumes": ["pgdata:/data"]})), 1);
    let mut backup = ServiceRecord::for_tests(
        spec(serde_json::json!({"name": "backup", "volumes": ["pgdata:/data:ro"]})),
        1,
    );
    let other = ServiceRecord::for_tests(
        spec(serde_json::json!({"name": "x", "project": "bank", "volumes": ["pgdata:/data"]})),
        1,
    );
    assert_eq!(
        used_by([&db, &backup, &other], "shop", "pgdata"),
        ["backup", "db"]
    );
    backup.stopped = true;
    assert_eq!(used_by([&db, &backup], "shop", "pgdata"), ["db"]);
    assert!(used_by([&db], "shop", "other").is_empty());
}
