//! A volume's data in and out: a backup streamed from its node (its
//! replicas paused while it is read, unless live); a restore that checks
//! and unpacks the archive beside the volume (the replicas stopping once
//! the whole archive is in), then swaps the content (never merged) and
//! starts them again; and
//! a move to another node (replicas stopped, the data streamed node to
//! node (see [`super::volume_direct`]) or through the server over the
//! cluster's connections, and checked by SHA-256, the record
//! switched, replicas started there, and only then the source copy gone).
//! Until the switch, a failure or a crash leaves the source in use.

use std::time::{Duration, Instant};

use api::volumes::{VolumeMoved, VolumeRestored};
use api::{ApiError, ApiResponse};
use bytes::Bytes;
use tokio::sync::mpsc;

use crate::agent::archive::Piece;
use crate::agent::{AgentError, NodeAgent};
use crate::control::ControlPlane;

/// How often a stop's end is looked for.
const STOP_POLL: Duration = Duration::from_millis(50);
/// How long stopping a volume's replicas may take beyond their grace.
const STOP_SLACK: Duration = Duration::from_secs(30);

fn agent_error(key: &str, e: AgentError) -> ApiError {
    let text = e.to_string();
    if text.starts_with("archive refused") {
        ApiError::bad_request(format!("volume {key}: {text}"))
    } else if e.is_unavailable() || matches!(e, AgentError::Unreachable { .. }) {
        ApiError::new(503, format!("volume {key}: {text}"))
    } else if matches!(e, AgentError::NotFound(_)) {
        ApiError::not_found(text)
    } else {
        ApiError::internal(format!("volume {key}: {text}"))
    }
}

impl ControlPlane {
    /// The node that holds `project/name` and its agent.
    fn volume_node(&self, key: &str) -> Result<(String, std::sync::Arc<dyn NodeAgent>), ApiError> {
        let node = self
            .inner()
            .state()
            .volumes
            .get(key)
            .map(|v| v.node.clone())
            .ok_or_else(|| ApiError::not_found(format!("no volume {key}")))?;
        let agent = self.inner().node_agent(&node).map_err(|e| {
            ApiError::new(
                503,
                format!("volume {key} is on node {node}, which cannot be reached: {e}"),
            )
        })?;
        Ok((node, agent))
    }

    /// Wakes every service whose replicas mount `project/name`.
    fn wake_users(&self, project: &str, name: &str) {
        let st = self.inner().state();
        for s in crate::volumes::used_by(st.records.values(), project, name) {
            crate::control::worker::wake(self.inner(), &s);
        }
    }

    /// Marks the volume busy (its replicas stop), and waits until none on
    /// `agent` mounts it any more.
    async fn stop_users(
        &self,
        project: &str,
        name: &str,
        why: &str,
        agent: &dyn NodeAgent,
    ) -> Result<(), ApiError> {
        let key = format!("{project}/{name}");
        if !self
            .inner()
            .state
            .set_busy(&key, Some(why.to_string()))
            .await
        {
            return Err(ApiError::conflict(format!(
                "volume {key} is {}",
                self.inner()
                    .state()
                    .busy
                    .get(&key)
                    .cloned()
                    .unwrap_or_default()
            )));
        }
        self.wake_users(project, name);
        let grace = {
            let st = self.inner().state();
            crate::volumes::used_by(st.records.values(), project, name)
                .iter()
                .filter_map(|s| st.records.get(s)?.spec.stop_grace_secs)
                .max()
                .map_or(crate::control::DEFAULT_STOP_GRACE, Duration::from_secs)
        };
        let deadline = Instant::now() + grace + STOP_SLACK;
        loop {
            match agent.volume_users(project, name).await {
                Ok(users) if users.is_empty() => return Ok(()),
                Ok(users) if Instant::now() > deadline => {
                    self.release(project, name).await;
                    return Err(ApiError::conflict(format!(
                        "volume {key}: {} still running after {}s",
                        users.join(", "),
                        (grace + STOP_SLACK).as_secs()
                    )));
                }
                Ok(_) => tokio::time::sleep(STOP_POLL).await,
                Err(e) => {
                    self.release(project, name).await;
                    return Err(agent_error(&key, e));
                }
            }
        }
    }

    /// The volume is free again: its replicas start.
    async fn release(&self, project: &str, name: &str) {
        self.inner()
            .state
            .set_busy(&format!("{project}/{name}"), None)
            .await;
        self.wake_users(project, name);
    }

    /// `GET .../backup`: a tar.gz streamed from the volume's node.
    pub(crate) async fn backup_volume(
        &self,
        project: &str,
        name: &str,
        live: bool,
    ) -> Result<ApiResponse, ApiError> {
        let key = format!("{project}/{name}");
        let (node, agent) = self.volume_node(&key)?;
        let mut export = agent
            .export_volume(project, name, !live, true)
            .await
            .map_err(|e| agent_error(&key, e))?;
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let paused = export.paused;
        tracing::info!(volume = %key, node = %node, paused_ms = ?paused.map(|p| p.as_millis()), "backup started");
        self.inner().spawn(async move {
            while let Some(piece) = export.data.recv().await {
                match piece {
                    Piece::Data(bytes) => {
                        if tx.send(bytes).await.is_err() {
                            return;
                        }
                    }
                    Piece::End(Ok(sha)) => {
                        tracing::info!(volume = %key, sha256 = %sha, "backup sent");
                        return;
                    }
                    // The stream ends short: the gzip trailer is missing,
                    // so no reader takes it for a whole archive.
                    Piece::End(Err(e)) => {
                        tracing::error!(volume = %key, error = %e, "backup broke off");
                        return;
                    }
                }
            }
        });
        let mut headers = vec![(
            "content-disposition",
            format!("attachment; filename=\"{project}-{name}.tar.gz\""),
        )];
        if let Some(p) = paused {
            headers.push(("x-orca-paused-ms", p.as_millis().to_string()));
        }
        Ok(ApiResponse::Download {
            data: rx,
            content_type: "application/gzip",
            headers,
        })
    }

    /// `PUT .../restore`: see the module doc.
    pub(crate) async fn restore_volume(
        &self,
        project: &str,
        name: &str,
        body: api::request::Upload,
    ) -> Result<ApiResponse, ApiError> {
        let key = format!("{project}/{name}");
        let (node, agent) = self.volume_node(&key)?;
        let mut upload = body
            .take()
            .ok_or_else(|| ApiError::bad_request("the archive is missing"))?;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let started = Instant::now();
        let feed = async move {
            while let Some(part) = upload.recv().await {
                match part {
                    Ok(b) => {
                        // The node stopped taking it: its answer says why.
                        if tx.send(b).await.is_err() {
                            return Ok(false);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(true)
        };
        // Once the whole archive is in, the replicas stop while the node
        // finishes unpacking it and writes it to disk.
        let fed_then_stopped = async {
            let fed = feed.await;
            let uploaded = started.elapsed();
            let stopped = match fed {
                Ok(true) => Some(
                    self.stop_users(project, name, "being restored", agent.as_ref())
                        .await,
                ),
                _ => None,
            };
            (fed, uploaded, stopped, started.elapsed())
        };
        let (received, (fed, uploaded, stopped, stop_done)) = tokio::join!(
            async {
                let r = agent.receive_volume(project, name, true, rx).await;
                (r, started.elapsed())
            },
            fed_then_stopped
        );
        let (received, unpacked) = received;
        // Whether this restore holds the volume (its replicas stopped).
        let held = matches!(stopped, Some(Ok(())));
        let outcome = match (fed, received, stopped) {
            (Err(e), _, _) => Err(ApiError::bad_request(format!(
                "the archive did not arrive whole: {e}"
            ))),
            (_, _, Some(Err(e))) => Err(e),
            (_, Err(e), _) => Err(agent_error(&key, e)),
            (Ok(false), Ok(_), _) => Err(ApiError::internal(format!(
                "volume {key}: the node stopped taking the archive"
            ))),
            (Ok(true), Ok(r), _) => Ok(r),
        };
        let received = match outcome {
            Ok(r) => r,
            Err(e) => {
                let _ = agent.discard_volume(project, name).await;
                if held {
                    self.release(project, name).await;
                }
                return Err(e);
            }
        };
        let committed = agent.commit_volume(project, name).await;
        if committed.is_err() {
            let _ = agent.discard_volume(project, name).await;
        }
        self.release(project, name).await;
        committed.map_err(|e| agent_error(&key, e))?;
        tracing::info!(
            volume = %key,
            node = %node,
            bytes = received.bytes,
            uploaded_ms = uploaded.as_millis() as u64,
            stopped_ms = stop_done.as_millis() as u64,
            unpacked_ms = unpacked.as_millis() as u64,
            swapped_ms = (started.elapsed() - unpacked.max(stop_done)).as_millis() as u64,
            "volume restored"
        );
        ApiResponse::ok(&VolumeRestored {
            project: project.into(),
            name: name.into(),
            node,
            bytes: received.bytes,
            sha256: received.sha256,
            members: received.members,
        })
    }

    /// `POST .../move`: see the module doc.
    pub(crate) async fn move_volume(
        &self,
        project: &str,
        name: &str,
        to: &str,
    ) -> Result<ApiResponse, ApiError> {
        let key = format!("{project}/{name}");
        let (from, source) = self.volume_node(&key)?;
        if from == to {
            return Err(ApiError::conflict(format!(
                "volume {key} is on node {to} already"
            )));
        }
        let table = self.inner().nodes.snapshot();
        match table.get(to) {
            None => return Err(ApiError::not_found(format!("no node {to}"))),
            Some(n) if !n.schedulable() || n.record.drained => {
                return Err(ApiError::conflict(format!(
                    "node {to} takes no replicas now (down or drained)"
                )))
            }
            Some(_) => {}
        }
        let target = self
            .inner()
            .node_agent(to)
            .map_err(|e| ApiError::new(503, format!("node {to} cannot be reached: {e}")))?;
        let started = Instant::now();
        self.stop_users(
            project,
            name,
            &format!("moving to node {to}"),
            source.as_ref(),
        )
        .await?;
        let stopped = started.elapsed();
        let copied = self
            .copy(project, name, (&from, to), source.as_ref(), target.as_ref())
            .await;
        let copy_took = started.elapsed() - stopped;
        let (bytes, sha256, via) = match copied {
            Ok(done) => done,
            Err(e) => {
                let _ = target.discard_volume(project, name).await;
                self.release(project, name).await;
                return Err(e);
            }
        };
        // The switch: from here the target holds it.
        let mut record = self
            .inner()
            .state()
            .volumes
            .get(&key)
            .cloned()
            .ok_or_else(|| {
                ApiError::conflict(format!("volume {key} was deleted during the move"))
            })?;
        record.node = to.to_string();
        if let Err(e) = self.inner().repo.put_volume(&record) {
            let _ = target.discard_volume(project, name).await;
            self.release(project, name).await;
            return Err(super::store_error(e));
        }
        self.inner().state.set_volume(&key, Some(record)).await;
        self.release(project, name).await;
        if let Err(e) = source.remove_volume(project, name).await {
            tracing::warn!(volume = %key, node = %from, error = %e, "the moved volume's source copy was not removed");
        }
        let seconds = started.elapsed().as_secs_f64();
        tracing::info!(
            volume = %key,
            from = %from,
            to,
            bytes,
            seconds,
            via,
            stopped_ms = stopped.as_millis() as u64,
            copied_ms = copy_took.as_millis() as u64,
            "volume moved"
        );
        ApiResponse::ok(&VolumeMoved {
            project: project.into(),
            name: name.into(),
            from,
            to: to.into(),
            bytes,
            sha256,
            seconds,
            via: via.into(),
        })
    }

    /// Streams the volume from `source` into `target` (straight from node
    /// to node if it can, else through the server), unpacked there beside
    /// (not yet in place of) anything, and swaps it in once both sides'
    /// SHA-256 agree; how the data went.
    async fn copy(
        &self,
        project: &str,
        name: &str,
        (from, to): (&str, &str),
        source: &dyn NodeAgent,
        target: &dyn NodeAgent,
    ) -> Result<(u64, String, &'static str), ApiError> {
        let key = format!("{project}/{name}");
        let direct = self
            .copy_direct(project, name, (from, to), source, target)
            .await?;
        if let Some((bytes, sha)) = direct {
            target
                .commit_volume(project, name)
                .await
                .map_err(|e| agent_error(&key, e))?;
            return Ok((bytes, sha, "direct"));
        }
        let mut export = source
            .export_volume(project, name, false, false)
            .await
            .map_err(|e| agent_error(&key, e))?;
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        let pump = async move {
            while let Some(piece) = export.data.recv().await {
                match piece {
                    Piece::Data(b) => {
                        if tx.send(b).await.is_err() {
                            return Err("the target stopped taking the data".to_string());
                        }
                    }
                    Piece::End(end) => return end,
                }
            }
            Err("the source's stream ended early".to_string())
        };
        let (received, sent) = tokio::join!(target.receive_volume(project, name, false, rx), pump);
        let sent =
            sent.map_err(|e| ApiError::internal(format!("volume {key}: reading it failed: {e}")))?;
        let received = received.map_err(|e| agent_error(&key, e))?;
        if sent != received.sha256 {
            return Err(ApiError::internal(format!(
                "volume {key}: the copy's SHA-256 {} differs from the source's {sent}",
                received.sha256
            )));
        }
        target
            .commit_volume(project, name)
            .await
            .map_err(|e| agent_error(&key, e))?;
        Ok((received.bytes, sent, "server"))
    }
}

impl ControlPlane {
    /// `orca drain --move-volumes`: moves each volume on `node` to a node
    /// its services may run on, one after the other, in the background.
    pub(crate) async fn move_volumes_off(&self, node: &str) -> Result<serde_json::Value, ApiError> {
        use crate::volumes::targets::{target, NodeView};
        let st = self.inner().state();
        let table = self.inner().nodes.snapshot();
        let mut held: std::collections::BTreeMap<String, usize> = Default::default();
        for v in st.volumes.values() {
            *held.entry(v.node.clone()).or_default() += 1;
        }
        let mut views: Vec<NodeView> = table
            .nodes
            .values()
            .map(|n| NodeView {
                id: n.id().to_string(),
                labels: n.record.labels.clone(),
                usable: n.schedulable() && !n.record.drained,
                volumes: held.get(n.id()).copied().unwrap_or(0),
            })
            .collect();
        let mut moves = Vec::new();
        let mut unmovable = Vec::new();
        for v in st.volumes.values().filter(|v| v.node == node) {
            let users: Vec<&api::spec::ServiceSpec> =
                crate::volumes::used_by(st.records.values(), &v.project, &v.name)
                    .iter()
                    .filter_map(|s| st.records.get(s).map(|r| &r.spec))
                    .collect();
            match target(node, &users, &views) {
                Ok(to) => {
                    if let Some(n) = views.iter_mut().find(|n| n.id == to) {
                        n.volumes += 1;
                    }
                    moves.push((v.project.clone(), v.name.clone(), to));
                }
                Err(why) => unmovable.push(serde_json::json!({ "volume": v.key(), "why": why })),
            }
        }
        let planned: Vec<serde_json::Value> = moves
            .iter()
            .map(|(p, n, to)| serde_json::json!({ "volume": format!("{p}/{n}"), "to": to }))
            .collect();
        let cp = self.clone();
        self.inner().spawn(async move {
            for (p, n, to) in moves {
                if let Err(e) = cp.move_volume(&p, &n, &to).await {
                    tracing::warn!(volume = %format!("{p}/{n}"), to = %to, error = %e.message, "moving a drained node's volume failed");
                }
            }
        });
        Ok(serde_json::json!({
            "moving_volumes": planned,
            "unmovable_volumes": unmovable,
        }))
    }
}
