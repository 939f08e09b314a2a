//! Volumes in and out of the local node as archives: a backup's or a
//! move's stream (the replicas that mount the volume paused while it is
//! read, unless live), and an archive received, checked and unpacked
//! beside the volume, then swapped in once no replica mounts it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::archive::{self, Piece};
use super::local::LocalAgent;
use super::AgentError;

/// A volume's archive as it streams.
#[derive(Debug)]
pub struct Export {
    /// How long the replicas that mount it were paused (none: live).
    pub paused: Option<Duration>,
    pub data: mpsc::Receiver<Piece>,
}

/// An archive received and unpacked beside its volume.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Received {
    pub bytes: u64,
    pub sha256: String,
    pub members: u64,
}

/// What a receive stages beside a volume, removed if the receive ends
/// without finishing (its connection gone mid-way, say).
struct Staged {
    dir: std::path::PathBuf,
    done: bool,
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            for f in ["incoming.tar", "incoming.tar.gz"] {
                let _ = std::fs::remove_file(self.dir.join(f));
            }
            let _ = std::fs::remove_dir_all(self.dir.join("incoming"));
            if !self.dir.join("data").exists() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// How often a received volume is written back while it arrives.
const WRITEBACK_EVERY: Duration = Duration::from_millis(500);

fn other(e: impl std::fmt::Display) -> AgentError {
    AgentError::Other(e.to_string())
}

impl LocalAgent {
    /// Running replicas that mount volume `project/name`.
    async fn running_users(&self, project: &str, name: &str) -> Result<Vec<String>, AgentError> {
        let mut out = Vec::new();
        for id in self.mounted_by(project, name).await? {
            if self
                .cri
                .task(&id)
                .await?
                .is_some_and(|t| t.state.is_alive())
            {
                out.push(id);
            }
        }
        Ok(out)
    }

    pub(super) async fn export(
        &self,
        project: &str,
        name: &str,
        pause: bool,
        gzip: bool,
    ) -> Result<Export, AgentError> {
        if !self.volumes.exists(project, name) {
            return Err(AgentError::NotFound(format!(
                "no volume {project}/{name} on this node"
            )));
        }
        let dir = self.volumes.dir(project, name).map_err(other)?;
        let data = dir.join("data");
        let users = if pause {
            self.running_users(project, name).await?
        } else {
            Vec::new()
        };
        if users.is_empty() {
            let mut tar = archive::tar_create(&data, None, gzip);
            tar.stdout(std::process::Stdio::piped());
            let child = tar.spawn().map_err(|e| other(format!("run tar: {e}")))?;
            return Ok(Export {
                paused: pause.then_some(Duration::ZERO),
                data: archive::stream(child, || {}),
            });
        }
        // Consistent: frozen while tar copies them to a file beside the
        // volume (disk speed), thawed before the slower compression.
        let tmp = dir.join(format!("backup-{:08x}.tar", rand::random::<u32>()));
        let started = Instant::now();
        let mut paused = Vec::new();
        let mut copy = Err(other("not started"));
        for id in &users {
            match self.cri.pause(id).await {
                Ok(()) => paused.push(id.clone()),
                Err(e) => {
                    copy = Err(other(format!("pause {id}: {e}")));
                    break;
                }
            }
        }
        if paused.len() == users.len() {
            copy = match archive::tar_create(&data, Some(&tmp), false).output().await {
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(other(format!(
                    "tar failed: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                ))),
                Err(e) => Err(other(format!("run tar: {e}"))),
            };
        }
        for id in &paused {
            if let Err(e) = self.cri.resume(id).await {
                tracing::error!(instance = %id, error = %e, "resuming a replica after a backup failed");
            }
        }
        let held = started.elapsed();
        tracing::info!(volume = %format!("{project}/{name}"), replicas = paused.len(), paused_ms = held.as_millis() as u64, "replicas paused for a backup");
        if let Err(e) = copy {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let mut reader = if gzip {
            let mut c = tokio::process::Command::new("gzip");
            c.arg("--stdout").arg(&tmp);
            c
        } else {
            let mut c = tokio::process::Command::new("cat");
            c.arg(&tmp);
            c
        };
        reader
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let child = reader
            .spawn()
            .map_err(|e| other(format!("read the backup: {e}")));
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        Ok(Export {
            paused: Some(held),
            data: archive::stream(child, move || {
                let _ = std::fs::remove_file(&tmp);
            }),
        })
    }

    pub(super) async fn receive(
        &self,
        project: &str,
        name: &str,
        gzip: bool,
        data: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<Received, AgentError> {
        let dir = self.volumes.dir(project, name).map_err(other)?;
        std::fs::create_dir_all(&dir).map_err(other)?;
        let mut staged = Staged {
            dir: dir.clone(),
            done: false,
        };
        let incoming = dir.join("incoming");
        let _ = std::fs::remove_dir_all(&incoming);
        std::fs::create_dir_all(&incoming).map_err(other)?;
        // Written back while it arrives, so that the last sync has little
        // left to do.
        let unpacking = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let writeback = {
            let (dir, unpacking) = (
                std::fs::File::open(&incoming).map_err(other)?,
                unpacking.clone(),
            );
            tokio::task::spawn_blocking(move || {
                while unpacking.load(std::sync::atomic::Ordering::Relaxed) {
                    std::thread::sleep(WRITEBACK_EVERY);
                    let _ = nix::unistd::syncfs(&dir);
                }
            })
        };
        let started = Instant::now();
        let received = unpack(data, gzip, &incoming).await;
        unpacking.store(false, std::sync::atomic::Ordering::Relaxed);
        let _ = writeback.await;
        let received = received?;
        let unpacked = started.elapsed();
        // On disk before anything is swapped for it or removed after it:
        // a power cut after a restore or a move finds the new content.
        let synced = incoming.clone();
        tokio::task::spawn_blocking(move || {
            let dir = std::fs::File::open(&synced)?;
            nix::unistd::syncfs(&dir).map_err(std::io::Error::from)
        })
        .await
        .map_err(other)?
        .map_err(|e| other(format!("syncing the received volume: {e}")))?;
        tracing::info!(
            volume = %format!("{project}/{name}"),
            unpacked_ms = unpacked.as_millis() as u64,
            synced_ms = (started.elapsed() - unpacked).as_millis() as u64,
            "volume received"
        );
        staged.done = true;
        Ok(received)
    }

    pub(super) async fn commit(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let _held = self.volume_starts.lock().await;
        let users = self.running_users(project, name).await?;
        if !users.is_empty() {
            return Err(AgentError::Other(format!(
                "volume {project}/{name} is mounted by {}",
                users.join(", ")
            )));
        }
        let v = self.volumes.clone();
        let (p, n) = (project.to_string(), name.to_string());
        tokio::task::spawn_blocking(move || v.swap_in(&p, &n))
            .await
            .map_err(other)?
            .map_err(AgentError::Other)
    }

    pub(super) fn discard(&self, project: &str, name: &str) -> Result<(), AgentError> {
        let dir = self.volumes.dir(project, name).map_err(other)?;
        for f in ["incoming.tar", "incoming.tar.gz"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
        let _ = std::fs::remove_dir_all(dir.join("incoming"));
        // A volume made only to receive, and never swapped in, goes too.
        if !dir.join("data").exists() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    /// Every replica on the node that mounts the volume, running or not
    /// (one being removed still holds it).
    pub(super) async fn users(&self, project: &str, name: &str) -> Result<Vec<String>, AgentError> {
        self.mounted_by(project, name).await
    }
}

/// Plain tar to the checker (which may have stopped reading: a verdict
/// already) and to GNU tar.
async fn fan_out(
    plain: bytes::Bytes,
    to_check: &mpsc::Sender<bytes::Bytes>,
    tar_in: &mut tokio::process::ChildStdin,
) -> std::io::Result<()> {
    let _ = to_check.send(plain.clone()).await;
    tar_in.write_all(&plain).await
}

/// Unpacks an archive as it arrives into `into` (a fresh staging
/// directory beside the volume): decompressed once, in a thread of its
/// own, then fed both to GNU tar and to [`archive::check_seekable`], which
/// reads every member's header. A hostile member fails the whole receive (the staging
/// goes; GNU tar itself never writes outside `into`: it refuses `..`
/// members and makes links leaving the tree only at the end, as
/// placeholders).
async fn unpack(
    mut data: mpsc::Receiver<bytes::Bytes>,
    gzip: bool,
    into: &std::path::Path,
) -> Result<Received, AgentError> {
    use std::io::Read;
    let mut tar = archive::tar_extract(into)
        .spawn()
        .map_err(|e| other(format!("run tar: {e}")))?;
    let mut tar_in = tar.stdin.take().ok_or_else(|| other("tar's stdin"))?;
    archive::widen_pipe(&tar_in);
    let (to_check, checked) = mpsc::channel::<bytes::Bytes>(16);
    let checker = tokio::task::spawn_blocking(move || {
        archive::check_seekable(archive::ChannelReader::new(checked))
    });
    let (mut hash, mut bytes) = (Sha256::new(), 0u64);
    let fed: Result<(), String> = if gzip {
        // Decompressed in a thread of its own (zlib-rs), in pieces.
        let (compressed, to_inflate) = mpsc::channel::<bytes::Bytes>(16);
        let (inflated, mut plain) = mpsc::channel::<bytes::Bytes>(16);
        let inflater = tokio::task::spawn_blocking(move || {
            let mut gz = flate2::read::MultiGzDecoder::new(archive::ChannelReader::new(to_inflate));
            loop {
                let mut buf = bytes::BytesMut::zeroed(archive::PIECE);
                let mut filled = 0;
                while filled < buf.len() {
                    match gz.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(_) => {
                            return Err("the archive is not gzip, or it is damaged".to_string())
                        }
                    }
                }
                buf.truncate(filled);
                if filled == 0 || inflated.blocking_send(buf.freeze()).is_err() {
                    return Ok(());
                }
            }
        });
        let feed = async {
            while let Some(piece) = data.recv().await {
                bytes += piece.len() as u64;
                hash.update(&piece);
                if compressed.send(piece).await.is_err() {
                    break;
                }
            }
            drop(compressed);
        };
        let relay = async {
            while let Some(piece) = plain.recv().await {
                fan_out(piece, &to_check, &mut tar_in)
                    .await
                    .map_err(|e| format!("tar: {e}"))?;
            }
            Ok::<(), String>(())
        };
        let ((), relayed) = tokio::join!(feed, relay);
        let inflated = inflater.await.map_err(other)?;
        relayed.and(inflated)
    } else {
        let mut out = Ok(());
        while let Some(piece) = data.recv().await {
            bytes += piece.len() as u64;
            hash.update(&piece);
            if let Err(e) = fan_out(piece, &to_check, &mut tar_in).await {
                out = Err(format!("tar: {e}"));
                break;
            }
        }
        out
    };
    drop(tar_in);
    drop(to_check);
    let verdict = checker.await.map_err(other)?;
    let unpacked = tar.wait_with_output().await.map_err(other)?;
    let members = match verdict {
        Ok(n) => n,
        Err(why) => return Err(AgentError::Other(format!("archive refused: {why}"))),
    };
    fed.map_err(|e| other(format!("receiving the archive: {e}")))?;
    if !unpacked.status.success() {
        return Err(other(format!(
            "tar failed: {}",
            String::from_utf8_lossy(&unpacked.stderr).trim()
        )));
    }
    Ok(Received {
        bytes,
        sha256: hex::encode(hash.finalize()),
        members,
    })
}
