//! Secrets stored before they had projects move to `default/NAME` at the
//! start, sealed again under their new key, so no lookup falls back.

use std::sync::Arc;

use crate::control::endpoints::cluster::{migrate_legacy_secrets, sealed_secret};
use crate::secrets::SecretBox;
use crate::store::{MemStore, Repo};

#[test]
fn legacy_secrets_move_to_the_default_project() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = SecretBox::open(&dir.path().join("secrets.key")).unwrap();
    let repo = Repo::new(Arc::new(MemStore::default()));
    repo.put_secret("OLD", &secrets.seal("OLD", "old-value"))
        .unwrap();
    repo.put_secret("TAKEN", &secrets.seal("TAKEN", "shadowed"))
        .unwrap();
    repo.put_secret("default/TAKEN", &secrets.seal("default/TAKEN", "current"))
        .unwrap();
    repo.put_secret("bank/KEY", &secrets.seal("bank/KEY", "bank-value"))
        .unwrap();
    assert_eq!(migrate_legacy_secrets(&repo, &secrets).unwrap(), 1);
    let (key, sealed) = sealed_secret(&repo, "default", "OLD").unwrap().unwrap();
    assert_eq!(key, "default/OLD");
    assert_eq!(&*secrets.open_value(&key, &sealed).unwrap(), "old-value");
    assert!(repo.secret("OLD").unwrap().is_none());
    // A taken key is left alone (the old value unused), and no other
    // project's secret is reachable by a name with a path in it.
    let (key, sealed) = sealed_secret(&repo, "default", "TAKEN").unwrap().unwrap();
    assert_eq!(&*secrets.open_value(&key, &sealed).unwrap(), "current");
    assert!(sealed_secret(&repo, "default", "bank/KEY")
        .unwrap()
        .is_none());
    assert!(sealed_secret(&repo, "default", "../bank/KEY")
        .unwrap()
        .is_none());
    assert!(sealed_secret(&repo, "default", "KEY").unwrap().is_none());
    assert!(sealed_secret(&repo, "bank", "KEY").unwrap().is_some());
    // Again: nothing more to move.
    assert_eq!(migrate_legacy_secrets(&repo, &secrets).unwrap(), 0);
}
