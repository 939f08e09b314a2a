//! A first start as on a fresh host: no token in cluster.toml, so the server
//! makes an admin token in `data_dir/admin.token`, and the CLI on that host
//! uses it with no `--token` and no `ORCA_TOKEN`. And orca's own log, which
//! has no colour codes in a file and is JSON with `ORCA_LOG_FORMAT=json`.

#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;

use common::server::{Extra, OrcaServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_start_makes_an_admin_token_that_the_cli_on_the_host_uses() {
    let Some(env) = common::env() else { return };
    let extra = Extra {
        no_tokens: true,
        ..Default::default()
    };
    let mut server = OrcaServer::start_with(&env, "first-start", extra).await;
    let data = server.dir.path().join("data");
    let data_dir = data.to_str().unwrap().to_string();
    let file = data.join("admin.token");
    let value = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(value.len() >= 32, "{value:?}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let log = server.log();
    assert!(log.contains(&file.display().to_string()), "{log}");
    assert!(!log.contains(&value), "the log shows the token's value");
    assert!(
        !log.contains('\u{1b}'),
        "colour codes in a log file:\n{log}"
    );

    // No --token, no ORCA_TOKEN: the CLI reads the file, and it is an
    // admin's (only an admin may make tokens).
    let on_host = [("ORCA_DATA_DIR", data_dir.as_str())];
    let (code, out, err) = server
        .cli_env(
            &on_host,
            &["token", "create", "--name", "board", "--role", "viewer"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let viewer = out
        .split_whitespace()
        .find(|w| w.len() >= 32)
        .unwrap_or_else(|| panic!("no token in {out:?}"))
        .to_string();
    let (code, out, err) = server.cli_env(&on_host, &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Without the file, the same command fails and says where a token comes from.
    let elsewhere = tempfile::tempdir().unwrap();
    let no_file = [("ORCA_DATA_DIR", elsewhere.path().to_str().unwrap())];
    let (code, _, err) = server.cli_env(&no_file, &["status"]).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("no token") && err.contains("admin.token"),
        "{err}"
    );
    assert!(err.contains("missing bearer token"), "{err}");

    // ORCA_TOKEN, then --token, come before the file.
    let as_viewer = [
        ("ORCA_DATA_DIR", data_dir.as_str()),
        ("ORCA_TOKEN", viewer.as_str()),
    ];
    let (code, _, err) = server
        .cli_env(
            &as_viewer,
            &["token", "create", "--name", "x", "--role", "viewer"],
        )
        .await;
    assert_eq!(code, 1, "a viewer made a token: {err}");
    assert!(err.contains("admin"), "{err}");
    let (code, _, err) = server
        .cli_env(
            &on_host,
            &[
                "--token", &viewer, "token", "create", "--name", "y", "--role", "viewer",
            ],
        )
        .await;
    assert_eq!(code, 1, "a viewer made a token: {err}");

    // kill -9 and a restart: the same token, still an admin's; none made again.
    server.kill9();
    server.spawn().await;
    assert_eq!(std::fs::read_to_string(&file).unwrap().trim(), value);
    let (code, out, err) = server
        .cli_env(
            &on_host,
            &["token", "create", "--name", "board2", "--role", "viewer"],
        )
        .await;
    assert_eq!(code, 0, "{out}{err}");
    let tokens: serde_json::Value = server
        .client(Some(&value))
        .get("/api/v1/tokens")
        .await
        .unwrap();
    let admins = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["role"] == "admin")
        .count();
    assert_eq!(admins, 1, "{tokens}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orca_log_format_json_gives_one_object_per_line() {
    let Some(env) = common::env() else { return };
    let extra = Extra {
        env: &[("ORCA_LOG_FORMAT", "json")],
        ..Default::default()
    };
    let server = OrcaServer::start_with(&env, "log-json", extra).await;
    let log = server.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for line in lines {
        let entry: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
        assert!(
            entry["level"].is_string() && entry["fields"].is_object(),
            "{line}"
        );
    }
}
