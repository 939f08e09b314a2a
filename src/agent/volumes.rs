//! Volumes on a node: named volumes as directories under
//! `data_dir/volumes/<project>/<name>/data`, each with a `volume.json`
//! saying when it was made and whether the image's content was copied in;
//! bind mounts checked against `[volumes] host_paths`; and the lease that
//! keeps two versions from writing one volume (the `orca.volumes` label
//! of every replica that mounts one). Nothing here deletes a volume except
//! [`Volumes::remove`], which the operator's `orca volume rm` reaches.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where removed volumes wait to be deleted, beside the projects (no
/// project name starts with a dot).
const TRASH: &str = ".trash";

/// Label with the named volumes a replica mounts: `project/name:rw`,
/// comma-separated.
pub const VOLUMES_LABEL: &str = "orca.volumes";

/// One mount of a replica, as the server resolved it (a per-replica
/// volume already named for its slot).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    Volume {
        name: String,
        target: String,
        read_only: bool,
        nocopy: bool,
    },
    Bind {
        source: PathBuf,
        target: String,
        read_only: bool,
    },
    Tmpfs {
        target: String,
        size_bytes: Option<u64>,
    },
}

/// A volume as its node has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeInfo {
    pub project: String,
    pub name: String,
    /// Unix seconds.
    pub created: u64,
    pub size_bytes: u64,
}

/// What `volume.json` records.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Meta {
    created: u64,
    /// The image's content was copied in (or there was none, or nocopy):
    /// never again.
    filled: bool,
}

/// The volumes of one node.
#[derive(Debug, Clone, Default)]
pub struct Volumes {
    root: PathBuf,
    host_paths: Vec<PathBuf>,
}

/// A named volume ready to mount.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub data: PathBuf,
    /// Never filled yet: copy the image's content in before the start.
    pub fill: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn err(op: &str, path: &Path, e: impl std::fmt::Display) -> String {
    format!("{op} {}: {e}", path.display())
}

/// Whether `s` may be a directory name here (a DNS label, as validated).
fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Volumes {
    /// Volumes under `data_dir/volumes`; bind mounts only beneath
    /// `host_paths`.
    pub fn new(data_dir: &Path, host_paths: Vec<PathBuf>) -> Self {
        Self {
            root: data_dir.join("volumes"),
            host_paths,
        }
    }

    /// The volume's own directory (its `data`, `volume.json`, and what a
    /// restore or a move stages beside them).
    pub fn dir(&self, project: &str, name: &str) -> Result<PathBuf, String> {
        if !plain(project) || !plain(name) {
            return Err(format!("invalid volume {project}/{name}"));
        }
        Ok(self.root.join(project).join(name))
    }

    fn meta(dir: &Path) -> Option<Meta> {
        let text = std::fs::read(dir.join("volume.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    fn write_meta(dir: &Path, meta: &Meta) -> Result<(), String> {
        let path = dir.join("volume.json");
        let tmp = dir.join("volume.json.tmp");
        let bytes = serde_json::to_vec(meta).map_err(|e| e.to_string())?;
        std::fs::write(&tmp, bytes).map_err(|e| err("write", &tmp, e))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(|e| err("sync", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| err("rename", &path, e))?;
        // The directory too: its renames (the meta's, a swap's) last.
        std::fs::File::open(dir)
            .and_then(|f| f.sync_all())
            .map_err(|e| err("sync", dir, e))
    }

    /// The volume's data directory, made on first use. `fill` is set for
    /// a volume whose image content was never copied in.
    pub fn prepare(&self, project: &str, name: &str) -> Result<Prepared, String> {
        let dir = self.dir(project, name)?;
        let data = dir.join("data");
        if !data.is_dir() {
            std::fs::create_dir_all(&data).map_err(|e| err("create", &data, e))?;
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| err("chmod", &dir, e))?;
        }
        let meta = match Self::meta(&dir) {
            Some(m) => m,
            None => {
                let m = Meta {
                    created: unix_now(),
                    filled: false,
                };
                Self::write_meta(&dir, &m)?;
                m
            }
        };
        Ok(Prepared {
            data,
            fill: !meta.filled,
        })
    }

    /// Whether the volume exists here.
    pub fn exists(&self, project: &str, name: &str) -> bool {
        self.dir(project, name)
            .is_ok_and(|d| Self::meta(&d).is_some() && d.join("data").is_dir())
    }

    /// Puts what a restore or a move unpacked (`incoming`) in place of the
    /// volume's content, which is deleted, never merged; a volume new here
    /// is made, and counts as filled (no copy-up over it).
    pub fn swap_in(&self, project: &str, name: &str) -> Result<(), String> {
        let dir = self.dir(project, name)?;
        let incoming = dir.join("incoming");
        if !incoming.is_dir() {
            return Err(format!("nothing received for volume {project}/{name}"));
        }
        let data = dir.join("data");
        let old = dir.join("data.old");
        if data.exists() {
            let _ = std::fs::remove_dir_all(&old);
            std::fs::rename(&data, &old).map_err(|e| err("rename", &data, e))?;
        }
        std::fs::rename(&incoming, &data).map_err(|e| err("rename", &incoming, e))?;
        let mut meta = Self::meta(&dir).unwrap_or(Meta {
            created: unix_now(),
            filled: true,
        });
        meta.filled = true;
        Self::write_meta(&dir, &meta)?;
        if old.exists() {
            // The replaced content goes in the background: the volume is
            // whole and in place already.
            let trash = dir.join(format!("trash-{:08x}", rand::random::<u32>()));
            std::fs::rename(&old, &trash).map_err(|e| err("rename", &old, e))?;
            std::thread::spawn(move || {
                if let Err(e) = std::fs::remove_dir_all(&trash) {
                    tracing::warn!(dir = %trash.display(), error = %e, "removing a volume's replaced content");
                }
            });
        }
        Ok(())
    }

    /// Puts right what a crash left mid-way: a swap cut between its two
    /// renames gets the old content back; what was staged goes.
    pub fn sweep(&self) {
        let Ok(projects) = std::fs::read_dir(&self.root) else {
            return;
        };
        for p in projects.flatten() {
            if p.file_name() == TRASH {
                let trash = p.path();
                std::thread::spawn(move || {
                    if let Err(e) = std::fs::remove_dir_all(&trash) {
                        tracing::warn!(dir = %trash.display(), error = %e, "removing volumes");
                    }
                });
                continue;
            }
            let Ok(names) = std::fs::read_dir(p.path()) else {
                continue;
            };
            for n in names.flatten() {
                let dir = n.path();
                let (data, old) = (dir.join("data"), dir.join("data.old"));
                if !data.exists() && old.is_dir() {
                    if let Err(e) = std::fs::rename(&old, &data) {
                        tracing::warn!(dir = %dir.display(), error = %e, "restoring a volume's content");
                    }
                }
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name.starts_with("incoming")
                        || name.starts_with("backup-")
                        || name.starts_with("trash-")
                        || name == "data.old"
                    {
                        let path = e.path();
                        let gone = if path.is_dir() {
                            std::fs::remove_dir_all(&path)
                        } else {
                            std::fs::remove_file(&path)
                        };
                        if gone.is_ok() {
                            tracing::info!(path = %path.display(), "removed what a cut-off volume transfer left");
                        }
                    }
                }
            }
        }
    }

    /// Records that the volume was filled (or needs no filling): a second
    /// start never copies over data.
    pub fn filled(&self, project: &str, name: &str) -> Result<(), String> {
        let dir = self.dir(project, name)?;
        let mut meta = Self::meta(&dir).unwrap_or_default();
        meta.filled = true;
        Self::write_meta(&dir, &meta)
    }

    /// A bind mount's source, resolved: an existing path beneath one of
    /// `[volumes] host_paths`.
    pub fn bind_source(&self, source: &Path) -> Result<PathBuf, String> {
        let real = source
            .canonicalize()
            .map_err(|e| format!("bind mount source {}: {e}", source.display()))?;
        let allowed = self.host_paths.iter().any(|root| {
            root.canonicalize()
                .is_ok_and(|root| real == root || real.starts_with(&root))
        });
        if allowed {
            Ok(real)
        } else {
            Err(format!(
                "bind mount source {} is not under this node's [volumes] host_paths ({})",
                source.display(),
                self.host_paths
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }

    /// Every volume on the node, with its size.
    pub fn list(&self) -> Vec<VolumeInfo> {
        let mut out = Vec::new();
        let Ok(projects) = std::fs::read_dir(&self.root) else {
            return out;
        };
        for p in projects.flatten() {
            let project = p.file_name().to_string_lossy().into_owned();
            if project.starts_with('.') {
                continue;
            }
            let Ok(names) = std::fs::read_dir(p.path()) else {
                continue;
            };
            for n in names.flatten() {
                let name = n.file_name().to_string_lossy().into_owned();
                let dir = n.path();
                let Some(meta) = Self::meta(&dir) else {
                    continue;
                };
                out.push(VolumeInfo {
                    project: project.clone(),
                    name,
                    created: meta.created,
                    size_bytes: disk_usage(&dir.join("data")),
                });
            }
        }
        out.sort_by(|a, b| (&a.project, &a.name).cmp(&(&b.project, &b.name)));
        out
    }

    /// Deletes a volume and its data (the operator named it).
    pub fn remove(&self, project: &str, name: &str) -> Result<bool, String> {
        let dir = self.dir(project, name)?;
        if !dir.exists() {
            return Ok(false);
        }
        // Out of the way at once, deleted in the background (a crash
        // mid-way leaves it to the next sweep).
        let trash = self.root.join(TRASH);
        std::fs::create_dir_all(&trash).map_err(|e| err("create", &trash, e))?;
        let gone = trash.join(format!("{project}-{name}-{:08x}", rand::random::<u32>()));
        std::fs::rename(&dir, &gone).map_err(|e| err("rename", &dir, e))?;
        std::thread::spawn(move || {
            if let Err(e) = std::fs::remove_dir_all(&gone) {
                tracing::warn!(dir = %gone.display(), error = %e, "removing a volume");
            }
        });
        Ok(true)
    }
}

/// Bytes the files under `dir` take on disk (no link followed).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                todo.push(e.path());
            }
        }
    }
    total
}

/// The `orca.volumes` label value for a replica of `project` mounting `mounts`.
pub fn label_of(project: &str, mounts: &[MountSpec]) -> Option<String> {
    let parts: Vec<String> = mounts
        .iter()
        .filter_map(|m| match m {
            MountSpec::Volume {
                name, read_only, ..
            } => Some(format!(
                "{project}/{name}:{}",
                if *read_only { "ro" } else { "rw" }
            )),
            _ => None,
        })
        .collect();
    (!parts.is_empty()).then(|| parts.join(","))
}

/// The volumes a label value names, each with whether it is written.
pub fn parse_label(value: &str) -> Vec<(&str, bool)> {
    value
        .split(',')
        .filter_map(|p| p.rsplit_once(':'))
        .map(|(v, mode)| (v, mode == "rw"))
        .collect()
}

/// Who holds a volume: a replica's id, service and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub id: String,
    pub service: String,
    pub version: u64,
    pub volumes: String,
}

/// The lease: why a replica of `service` at `version`, mounting `mine`
/// (a label value), may not start beside `running` replicas. A volume one
/// of them writes, or that this one would write while another version
/// has it, is taken; replicas of one service and version share.
pub fn conflict(service: &str, version: u64, mine: &str, running: &[Holder]) -> Option<String> {
    let wants = parse_label(mine);
    for h in running {
        if h.service == service && h.version == version {
            continue;
        }
        for (theirs, they_write) in parse_label(&h.volumes) {
            let Some((_, i_write)) = wants.iter().find(|(v, _)| *v == theirs) else {
                continue;
            };
            let other_service = h.service != service;
            // Other services of the project share a volume (that is what
            // naming it means); another version of this one never writes
            // beside it.
            if !other_service && (they_write || *i_write) {
                return Some(format!(
                    "volume {theirs} is held by replica {} of version {} (the lease keeps two versions from writing one volume)",
                    h.id, h.version
                ));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_keeps_versions_apart_and_lets_one_version_share() {
        let held = |service: &str, version, volumes: &str| Holder {
            id: format!("{service}.0.x{version}"),
            service: service.into(),
            version,
            volumes: volumes.into(),
        };
        let running = [held("db", 1, "p/data:rw")];
        let why = conflict("db", 2, "p/data:rw", &running).unwrap();
        assert!(why.contains("p/data") && why.contains("version 1"), "{why}");
        // Read-only by the new version while the old one writes: refused.
        assert!(conflict("db", 2, "p/data:ro", &running).is_some());
        // Controls: the same version shares; another volume is free;
        // another service of the project shares by naming it.
        assert!(conflict("db", 1, "p/data:rw", &running).is_none());
        assert!(conflict("db", 2, "p/other:rw", &running).is_none());
        assert!(conflict("web", 5, "p/data:rw", &running).is_none());
        // Both read-only: no writer, no conflict.
        let ro = [held("db", 1, "p/data:ro")];
        assert!(conflict("db", 2, "p/data:ro", &ro).is_none());
    }

    #[test]
    fn volumes_are_made_once_and_filled_once() {
        let dir = tempfile::tempdir().unwrap();
        let v = Volumes::new(dir.path(), vec![]);
        let p = v.prepare("shop", "pgdata").unwrap();
        assert!(p.fill && p.data.is_dir());
        std::fs::write(p.data.join("row"), "1").unwrap();
        v.filled("shop", "pgdata").unwrap();
        let again = v.prepare("shop", "pgdata").unwrap();
        assert!(!again.fill);
        assert_eq!(
            std::fs::read_to_string(again.data.join("row")).unwrap(),
            "1"
        );
        let list = v.list();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].project.as_str(), list[0].name.as_str()),
            ("shop", "pgdata")
        );
        assert!(list[0].size_bytes > 0);
        assert!(v.prepare("../x", "y").is_err() && v.prepare("p", "a/b").is_err());
        assert!(v.remove("shop", "pgdata").unwrap());
        assert!(v.list().is_empty());
    }

    #[test]
    fn bind_sources_stay_beneath_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let allowed = dir.path().join("srv");
        std::fs::create_dir_all(allowed.join("media")).unwrap();
        std::fs::create_dir_all(dir.path().join("secret")).unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret"), allowed.join("link")).unwrap();
        let v = Volumes::new(dir.path(), vec![allowed.clone()]);
        assert!(v.bind_source(&allowed.join("media")).is_ok());
        // A link out of the allowed tree, a path beside it, a missing one.
        assert!(v.bind_source(&allowed.join("link")).is_err());
        assert!(v.bind_source(&dir.path().join("secret")).is_err());
        assert!(v.bind_source(&allowed.join("nope")).is_err());
    }
}
