//! The systemd units in `vagrant/`: `systemd-analyze verify` takes each
//! without a word (pointed at the binary this build made, since
//! /usr/local/bin/orca exists only once installed), and each keeps the
//! containers through a restart of orca (`KillMode=process`) and restarts
//! orca when it fails.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: [&str; 2] = ["orca.service", "orca-agent.service"];

/// systemd-analyze, or `None` outside CI when it is missing (under CI its
/// absence fails the test).
fn analyzer() -> Option<PathBuf> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if found {
        return Some(PathBuf::from("systemd-analyze"));
    }
    assert!(
        !common::in_ci(),
        "systemd-analyze is missing under CI (apt-get install systemd)"
    );
    eprintln!("SKIPPING: no systemd-analyze (apt-get install systemd)");
    None
}

/// `unit`'s text with its ExecStart on this build's binary, written to `dir`.
fn staged(dir: &Path, unit: &str, text: &str) -> PathBuf {
    let bin = common::orca_bin();
    let path = dir.join(unit);
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/orca", bin.to_str().unwrap()),
    )
    .unwrap();
    path
}

/// `systemd-analyze verify`: (success, everything it printed).
fn verify(analyzer: &Path, unit: &Path) -> (bool, String) {
    let out = Command::new(analyzer)
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn unit_text(unit: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("vagrant")
            .join(unit),
    )
    .unwrap()
}

#[test]
fn the_units_verify_cleanly_and_keep_containers_through_a_restart() {
    let Some(analyzer) = analyzer() else { return };
    let dir = tempfile::tempdir().unwrap();
    for unit in UNITS {
        let text = unit_text(unit);
        let (ok, said) = verify(&analyzer, &staged(dir.path(), unit, &text));
        assert!(ok && said.trim().is_empty(), "{unit}: {said}");
        for line in ["KillMode=process", "Restart=on-failure", "LimitNOFILE="] {
            assert!(
                text.lines().any(|l| l.starts_with(line)),
                "{unit} lacks {line}"
            );
        }
        assert!(text.contains("WantedBy=multi-user.target"), "{unit}");
    }
}

#[test]
fn verify_does_report_a_broken_unit() {
    // The control for the test above: the same check on a unit with an
    // unknown key and a bad kill mode is not silent.
    let Some(analyzer) = analyzer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let broken =
        unit_text("orca.service").replace("KillMode=process", "KillMode=sometimes\nRestartEvery=2");
    let (_, said) = verify(&analyzer, &staged(dir.path(), "orca.service", &broken));
    assert!(
        said.contains("RestartEvery") && said.contains("sometimes"),
        "{said}"
    );
}
