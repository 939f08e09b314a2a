//! `orca store`: a snapshot of the server's whole store taken over the API
//! (`backup`); a new server's store made from one, offline (`restore`),
//! in a data directory or on the etcd a config names; and a running
//! server's store moved to etcd (`migrate`).

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
    /// Make a server's store from a snapshot: in --data-dir (sled, with no
    /// server running on it) or on the etcd of --config's [store]; refused
    /// unless that store is empty.
    Restore {
        file: PathBuf,
        #[arg(
            long = "data-dir",
            required_unless_present = "config",
            conflicts_with = "config"
        )]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Move the running server's store to the etcd of --config's [store]
    /// (admin): its last snapshot is kept in --file, then written into
    /// etcd; the server takes no change after it, until restarted with
    /// --config, when it adopts what runs.
    Migrate {
        /// The new backend: etcd.
        #[arg(long)]
        to: String,
        /// The server's config with its new [store].
        #[arg(long)]
        config: PathBuf,
        /// Where the snapshot is kept (a new file).
        #[arg(short = 'f', long = "file", default_value = "orca-store-migrate.json")]
        file: PathBuf,
    },
}

/// The etcd store of `config`'s [store], with writes free (no server
/// uses it now).
fn etcd_of(config: &Path) -> anyhow::Result<(crate::store::EtcdStore, String)> {
    let config = crate::config::Config::load(Some(config))?;
    if config.store.backend != crate::store::settings::Backend::Etcd {
        anyhow::bail!("{}: [store] backend is not \"etcd\"", config.store.prefix);
    }
    let at = format!(
        "{} under {}",
        config.store.endpoints.join(", "),
        config.store.prefix
    );
    let store = crate::store::EtcdStore::open(&config.store, None)
        .with_context(|| format!("open the store on etcd at {at}"))?;
    Ok((store, at))
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
        StoreCommand::Restore {
            file,
            data_dir,
            config,
        } => {
            let text = std::fs::read(&file).with_context(|| format!("read {}", file.display()))?;
            let snapshot: StoreSnapshot = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a store snapshot", file.display()))?;
            let (n, at) = match (data_dir, config) {
                (Some(dir), _) => {
                    let store = SledStore::open(&dir.join("db"))
                        .with_context(|| format!("open the store in {}", dir.display()))?;
                    let at = dir.display().to_string();
                    let n = snapshot::restore(&snapshot, &store)
                        .with_context(|| format!("restore into {at}"))?;
                    (n, at)
                }
                (None, Some(config)) => {
                    let (store, at) =
                        tokio::task::spawn_blocking(move || etcd_of(&config)).await??;
                    let snap = snapshot.clone();
                    let n = tokio::task::spawn_blocking(move || snapshot::restore(&snap, &store))
                        .await?
                        .with_context(|| format!("restore into etcd at {at}"))?;
                    (n, at)
                }
                (None, None) => anyhow::bail!("give --data-dir or --config"),
            };
            outln!(
                "restored {n} entries (taken {}) into {at}",
                snapshot.taken_at
            )
        }
        StoreCommand::Migrate { to, config, file } => {
            if to != "etcd" {
                anyhow::bail!("--to {to:?}: etcd is the store a server moves to");
            }
            migrate(client, config, file).await
        }
    }
}

/// See `StoreCommand::Migrate`. The target is checked empty before the
/// server is frozen, and the snapshot is on disk before it is written
/// anywhere: a failure at any step loses nothing.
async fn migrate(client: &ApiClient, config: PathBuf, file: PathBuf) -> anyhow::Result<()> {
    let (store, at) = tokio::task::spawn_blocking(move || etcd_of(&config)).await??;
    let store = std::sync::Arc::new(store);
    let probe = store.clone();
    tokio::task::spawn_blocking(move || snapshot::empty(probe.as_ref()))
        .await?
        .with_context(|| format!("etcd at {at}"))?;
    let snapshot: StoreSnapshot = client.post("/api/v1/store/freeze", &()).await?;
    write_new(&file, &serde_json::to_vec(&snapshot)?)?;
    let snap = snapshot.clone();
    let n = tokio::task::spawn_blocking(move || snapshot::restore(&snap, store.as_ref()))
        .await?
        .with_context(|| {
            format!(
                "write into etcd at {at} (the server takes no change now; its last snapshot is in {}: `orca store restore {} --config ...` once etcd takes it)",
                file.display(),
                file.display()
            )
        })?;
    outln!(
        "moved {n} entries into etcd at {at} (snapshot kept in {}); the server takes no change now: restart it with the new config, and it adopts what runs",
        file.display()
    )
}

/// A new file (0600) at `path`, never one that is there.
fn write_new(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::cluster::pki::write_new_private(path, bytes)
        .with_context(|| format!("create {} (it must not exist)", path.display()))
}
