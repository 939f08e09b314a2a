//! `orca volume`: named volumes listed, deleted, moved, backed up to a
//! file or stdout, and restored from one.

use std::path::PathBuf;

use anyhow::Context;
use api::client::ApiClient;
use api::volumes::{VolumeMoved, VolumeRestored, VolumesResponse};
use clap::Subcommand;
use serde_json::Value;
use std::io::Write;

use super::commands::print_json;
use super::out::{self, outln};
use super::table;

#[derive(Subcommand)]
pub enum VolumeCommand {
    /// Volumes with their node, size and the services using them.
    Ls {
        #[arg(long)]
        project: Option<String>,
    },
    /// Delete a volume and its data (refused while a service uses it).
    Rm { volume: String },
    /// Move a volume to another node: its replicas stop, the data is
    /// copied and checked, and they start there.
    Mv {
        volume: String,
        #[arg(long)]
        to: String,
    },
    /// Write a tar.gz of the volume (to stdout, or --file); its replicas
    /// are paused while it is read unless --live.
    Backup {
        volume: String,
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        #[arg(long)]
        live: bool,
    },
    /// Replace the volume's content with a tar.gz (never merged).
    Restore { volume: String, file: PathBuf },
}

/// `PROJECT/NAME`, or `NAME` of project `default`.
fn split(volume: &str) -> (&str, &str) {
    volume.split_once('/').unwrap_or(("default", volume))
}

pub async fn run(client: &ApiClient, command: VolumeCommand, json: bool) -> anyhow::Result<()> {
    match command {
        VolumeCommand::Ls { project } => {
            let path = match &project {
                Some(p) => format!("/api/v1/volumes?project={p}"),
                None => "/api/v1/volumes".to_string(),
            };
            let v: VolumesResponse = client.get(&path).await?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v
                .volumes
                .iter()
                .map(|v| {
                    vec![
                        format!("{}/{}", v.project, v.name),
                        v.node.clone(),
                        v.size_bytes.map_or("?".into(), table::bytes),
                        v.created.clone(),
                        v.used_by.join(","),
                    ]
                })
                .collect();
            out::write(&table::render(
                &["VOLUME", "NODE", "SIZE", "CREATED", "USED BY"],
                &rows,
            ))
        }
        VolumeCommand::Rm { volume } => {
            let (p, n) = split(&volume);
            let v: Value = client.delete(&format!("/api/v1/volumes/{p}/{n}")).await?;
            if json {
                return print_json(&v);
            }
            outln!("deleted volume {p}/{n} and its data")
        }
        VolumeCommand::Mv { volume, to } => {
            let (p, n) = split(&volume);
            let v: VolumeMoved = client
                .post(
                    &format!("/api/v1/volumes/{p}/{n}/move"),
                    &serde_json::json!({ "node": to }),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            outln!(
                "moved {p}/{n} from {} to {} ({}): {} in {:.1}s (sha256 {})",
                v.from,
                v.to,
                v.via,
                table::bytes(v.bytes),
                v.seconds,
                &v.sha256[..12.min(v.sha256.len())]
            )
        }
        VolumeCommand::Backup { volume, file, live } => {
            let (p, n) = split(&volume);
            let path = format!(
                "/api/v1/volumes/{p}/{n}/backup{}",
                if live { "?live=true" } else { "" }
            );
            let mut sink: Box<dyn std::io::Write + Send> = match &file {
                Some(f) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(f).with_context(|| format!("create {}", f.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout())),
            };
            let mut failed = None;
            client
                .stream(&path, |data| match sink.write_all(data) {
                    Ok(()) => std::ops::ControlFlow::Continue(()),
                    Err(e) => {
                        failed = Some(e);
                        std::ops::ControlFlow::Break(())
                    }
                })
                .await?;
            if let Some(e) = failed {
                return Err(e).context("write the backup");
            }
            sink.flush().context("write the backup")?;
            if let Some(f) = file {
                out::warn(&format!("wrote a backup of {p}/{n} to {}", f.display()));
            }
            Ok(())
        }
        VolumeCommand::Restore { volume, file } => {
            let (p, n) = split(&volume);
            let f = tokio::fs::File::open(&file)
                .await
                .with_context(|| format!("open {}", file.display()))?;
            let v: VolumeRestored = client
                .upload(&format!("/api/v1/volumes/{p}/{n}/restore"), f)
                .await?;
            if json {
                return print_json(&v);
            }
            outln!(
                "restored {p}/{n} on {} from {} ({} entries)",
                v.node,
                table::bytes(v.bytes),
                v.members
            )
        }
    }
}
