//! `orca store`: a snapshot of the server's whole store taken over the API
//! (`backup`), and a new server's data directory made from one, offline
//! (`restore`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use api::client::ApiClient;
use api::store::StoreSnapshot;
use clap::Subcommand;

use super::out::outln;
use crate::store::{snapshot, SledStore};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Write a consistent snapshot of the store (admin) to stdout, or
    /// --file. Secrets stay sealed in it.
    Backup {
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Make a server's store in --data-dir from a snapshot, with no server
    /// running on it; refused unless that store is empty.
    Restore {
        file: PathBuf,
        #[arg(long = "data-dir")]
        data_dir: PathBuf,
    },
}

pub async fn run(client: &ApiClient, command: StoreCommand) -> anyhow::Result<()> {
    match command {
        StoreCommand::Backup { file } => {
            let snapshot: StoreSnapshot = client.get("/api/v1/store/backup").await?;
            let bytes = serde_json::to_vec(&snapshot)?;
            match file {
                Some(path) => write_new(&path, &bytes)?,
                None => std::io::stdout().write_all(&bytes)?,
            }
            Ok(())
        }
        StoreCommand::Restore { file, data_dir } => {
            let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let snapshot: StoreSnapshot = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a store snapshot", file.display()))?;
            let store = SledStore::open(&data_dir.join("db"))
                .with_context(|| format!("open the store in {}", data_dir.display()))?;
            let n = snapshot::restore(&snapshot, &store)
                .with_context(|| format!("restore into {}", data_dir.display()))?;
            outln!(
                "restored {n} entries (taken {}) into {}",
                snapshot.taken_at,
                data_dir.display()
            )
        }
    }
}

/// Writes `bytes` to a new file at `path` (0600): an existing file is
/// never overwritten.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {} (it must not exist)", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}
