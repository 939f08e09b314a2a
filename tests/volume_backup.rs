//! Backups and restores of a volume on a real node: a consistent backup
//! taken while a writer appends numbered lines is a prefix with no torn
//! line (its replica paused meanwhile, for as long as the answer says);
//! owners, modes, links, hard links, sparse files and extended attributes
//! survive a round trip; a restore replaces the content (never merges) and
//! starts the replica again; hostile archives are refused with nothing
//! written.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use api::client::ApiClient;
use common::server::OrcaServer;
use http::Method;
use http_body_util::BodyExt;
use serde_json::{json, Value};

async fn backup(c: &ApiClient, path: &str) -> (Vec<u8>, Option<u64>) {
    let r = c.send(Method::GET, path, None).await.unwrap();
    let paused = r
        .headers()
        .get("x-orca-paused-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    let body = r.into_body().collect().await.unwrap().to_bytes().to_vec();
    (body, paused)
}

fn untar(archive: &[u8], into: &Path) {
    let file = into.with_extension("tar.gz");
    std::fs::write(&file, archive).unwrap();
    std::fs::create_dir_all(into).unwrap();
    let ok = std::process::Command::new("tar")
        .args([
            "--extract",
            "--gzip",
            "--numeric-owner",
            "--xattrs",
            "--xattrs-include=*",
            "--file",
        ])
        .arg(&file)
        .arg("--directory")
        .arg(into)
        .status()
        .unwrap();
    assert!(ok.success());
}

async fn restore(c: &ApiClient, path: &str, archive: Vec<u8>) -> Result<Value, (u16, String)> {
    match c.send(Method::PUT, path, Some(archive)).await {
        Ok(r) => {
            let body = r.into_body().collect().await.unwrap().to_bytes();
            Ok(serde_json::from_slice(&body).unwrap())
        }
        Err(api::client::ClientError::Api { status, message }) => Err((status, message)),
        Err(e) => panic!("{e}"),
    }
}

async fn exec(c: &ApiClient, service: &str, script: &str) -> String {
    common::eventually("an exec", Duration::from_secs(30), async || {
        match c
            .post::<_, Value>(
                &format!("/api/v1/services/{service}/exec"),
                &json!({ "command": ["sh", "-c", script] }),
            )
            .await
        {
            Ok(r) if r["exit_code"] == 0 => Ok(r["stdout"].as_str().unwrap().to_string()),
            other => Err(format!("{other:?}")),
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_consistent_backup_of_a_busy_writer_has_no_torn_line() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "backup").await;
    let c = server.admin();
    let writer =
        "i=0; while true; do i=$((i+1)); echo \"line $i of the numbered log\" >> /data/log; done";
    let r: Value = c
        .post(
            "/api/v1/deploy",
            &json!({ "services": [{ "name": "writer", "image": env.image("stateful:v1"),
                     "command": ["sh", "-c", writer], "volumes": ["logs:/data"], "stop_grace_secs": 1 }] }),
        )
        .await
        .unwrap();
    assert!(r["errors"].as_array().unwrap().is_empty(), "{r}");
    common::wait_for(&c, "writer", "running", |s| s.running_replicas == 1).await;
    exec(&c, "writer", "test -s /data/log").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for round in 0..3 {
        let (archive, paused) = backup(&c, "/api/v1/volumes/default/logs/backup").await;
        let paused = paused.expect("the pause is reported");
        let dir = tempfile::tempdir().unwrap();
        untar(&archive, &dir.path().join("out"));
        let log = std::fs::read_to_string(dir.path().join("out/log")).unwrap();
        assert!(log.ends_with('\n'), "round {round}: a torn last line");
        let lines: Vec<&str> = log.lines().collect();
        assert!(lines.len() > 10, "round {round}: {} lines", lines.len());
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(
                *line,
                format!("line {} of the numbered log", n + 1),
                "round {round}"
            );
        }
        eprintln!(
            "round {round}: {} lines, replicas paused {paused} ms",
            lines.len()
        );
    }
    // The writer runs on after the backups.
    let before = exec(&c, "writer", "wc -l < /data/log").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = exec(&c, "writer", "wc -l < /data/log").await;
    assert!(after.trim().parse::<u64>().unwrap() > before.trim().parse::<u64>().unwrap());
    let _: Value = c.delete("/api/v1/services/writer").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restore_replaces_the_content_and_keeps_every_attribute() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "restore").await;
    let c = server.admin();
    let spec = json!({ "services": [{ "name": "app", "image": env.image("stateful:v1"),
                       "volumes": ["state:/state"], "stop_grace_secs": 1 }] });
    let _: Value = c.post("/api/v1/deploy", &spec).await.unwrap();
    common::wait_for(&c, "app", "running", |s| s.running_replicas == 1).await;
    exec(&c, "app", "test -d /state").await;
    // The content, made on the host: owners, modes, links, a sparse file,
    // an extended attribute.
    let data = server.dir.path().join("data/volumes/default/state/data");
    std::fs::create_dir_all(data.join("dir")).unwrap();
    std::fs::write(data.join("dir/owned"), "owned\n").unwrap();
    std::os::unix::fs::chown(data.join("dir/owned"), Some(123), Some(456)).unwrap();
    std::fs::set_permissions(
        data.join("dir/owned"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    std::os::unix::fs::symlink("dir/owned", data.join("link")).unwrap();
    std::fs::hard_link(data.join("dir/owned"), data.join("hard")).unwrap();
    let sparse = std::fs::File::create(data.join("sparse")).unwrap();
    sparse.set_len(256 << 20).unwrap();
    drop(sparse);
    xattr::set(data.join("dir/owned"), "user.orca", b"kept").unwrap();

    let (archive, _) = backup(&c, "/api/v1/volumes/default/state/backup").await;
    // Changed after the backup: a file added, one removed.
    std::fs::write(data.join("extra"), "added later\n").unwrap();
    std::fs::remove_file(data.join("link")).unwrap();

    let r = restore(&c, "/api/v1/volumes/default/state/restore", archive.clone())
        .await
        .unwrap();
    assert!(r["members"].as_u64().unwrap() >= 6, "{r}");
    assert!(!data.join("extra").exists(), "merged into the old content");
    let m = std::fs::symlink_metadata(data.join("dir/owned")).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (123, 456, 0o751));
    assert_eq!(
        std::fs::read_link(data.join("link")).unwrap(),
        Path::new("dir/owned")
    );
    assert_eq!(
        m.ino(),
        std::fs::metadata(data.join("hard")).unwrap().ino(),
        "the hard link"
    );
    let s = std::fs::metadata(data.join("sparse")).unwrap();
    assert_eq!(s.len(), 256 << 20);
    assert!(
        s.blocks() * 512 < 1 << 20,
        "sparse no more: {} blocks",
        s.blocks()
    );
    assert_eq!(
        xattr::get(data.join("dir/owned"), "user.orca")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    // The replica runs again, on the restored content.
    common::wait_for(&c, "app", "running again", |s| s.running_replicas == 1).await;
    assert_eq!(exec(&c, "app", "cat /state/link").await, "owned\n");

    // Hostile archives: 400, nothing written, nothing left.
    std::fs::write(data.join("marker"), "still here\n").unwrap();
    for (name, target, kind) in [
        ("../escape", "", tar::EntryType::Regular),
        ("/etc/evil", "", tar::EntryType::Regular),
        ("up", "../../../etc", tar::EntryType::Symlink),
    ] {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(if target.is_empty() { 1 } else { 0 });
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.as_old_mut().linkname[..target.len()].copy_from_slice(target.as_bytes());
        h.set_cksum();
        let body: &[u8] = if target.is_empty() { b"x" } else { b"" };
        b.append(&h, body).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &b.into_inner().unwrap()).unwrap();
        let (status, message) = restore(
            &c,
            "/api/v1/volumes/default/state/restore",
            gz.finish().unwrap(),
        )
        .await
        .unwrap_err();
        assert_eq!(status, 400, "{name}: {message}");
        assert!(message.contains("archive refused"), "{message}");
        assert_eq!(
            std::fs::read_to_string(data.join("marker")).unwrap(),
            "still here\n"
        );
        let left: Vec<_> = std::fs::read_dir(data.parent().unwrap())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("incoming"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
    assert!(!Path::new("/etc/evil").exists());
    let _: Value = c.delete("/api/v1/services/app").await.unwrap();
}
