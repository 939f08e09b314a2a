//! Volume archives over a node's stream, both sides: the node streams an
//! export up as [`Up::Piece`]s and takes a received archive as
//! [`Down::Piece`]s; the server's [`RemoteAgent`] turns them back into the
//! channels of the [`NodeAgent`] calls. A reader too slow for a few
//! seconds loses the transfer rather than hold up the node's stream (and
//! its heartbeats).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::remote::RemoteAgent;
use super::wire::{Answer, Call, Down, Up, WireError};
use crate::agent::archive::Piece;
use crate::agent::backup::{Export, Received};
use crate::agent::direct::{DirectTarget, Listening, Sent};
use crate::agent::{AgentError, NodeAgent};

/// Pieces buffered per transfer.
const BUFFER: usize = 16;
/// How long a piece may wait for its reader.
const STALL: Duration = Duration::from_secs(10);
/// How long an archive may take to arrive and unpack.
const LONG: Duration = Duration::from_secs(6 * 3600);
/// How long opening a port may take.
const QUICK: Duration = Duration::from_secs(10);

/// Node side: streams volume `project/name` up under call `id`.
pub async fn export(
    local: Arc<dyn NodeAgent>,
    up: mpsc::Sender<Up>,
    id: u64,
    call: (String, String, bool, bool),
) {
    let (project, name, pause, gzip) = call;
    let mut export = match local.export_volume(&project, &name, pause, gzip).await {
        Ok(e) => e,
        Err(e) => {
            let _ = up
                .send(Up::Reply {
                    id,
                    result: Err(WireError::from(&e)),
                })
                .await;
            return;
        }
    };
    let paused_ms = export.paused.map(|d| d.as_millis() as u64);
    let result = Ok(Answer::Export { paused_ms });
    if up.send(Up::Reply { id, result }).await.is_err() {
        return;
    }
    while let Some(piece) = export.data.recv().await {
        let last = matches!(piece, Piece::End(_));
        if up.send(Up::Piece { id, piece }).await.is_err() || last {
            return;
        }
    }
}

/// Node side: receives into volume `project/name` what comes down under
/// call `id`, then answers.
pub async fn receive(
    local: Arc<dyn NodeAgent>,
    up: mpsc::Sender<Up>,
    id: u64,
    call: (String, String, bool),
    data: mpsc::Receiver<bytes::Bytes>,
) {
    let (project, name, gzip) = call;
    let result = local
        .receive_volume(&project, &name, gzip, data)
        .await
        .map(Answer::Received)
        .map_err(|e| WireError::from(&e));
    let _ = up.send(Up::Reply { id, result }).await;
}

/// Node side: the volume calls answered once each.
pub async fn answer(local: &dyn NodeAgent, call: Call) -> Result<Answer, WireError> {
    let wire = |e: AgentError| WireError::from(&e);
    Ok(match call {
        Call::CommitVolume { project, name } => {
            local.commit_volume(&project, &name).await.map_err(wire)?;
            Answer::Done
        }
        Call::DiscardVolume { project, name } => {
            local.discard_volume(&project, &name).await.map_err(wire)?;
            Answer::Done
        }
        Call::VolumeUsers { project, name } => {
            Answer::Ids(local.volume_users(&project, &name).await.map_err(wire)?)
        }
        Call::RemoveVolume { project, name } => {
            Answer::Removed(local.remove_volume(&project, &name).await.map_err(wire)?)
        }
        Call::ListenVolume { project, name } => {
            Answer::Listening(local.listen_volume(&project, &name).await.map_err(wire)?)
        }
        Call::SendVolume { project, name, to } => Answer::Sent(
            local
                .send_volume(&project, &name, &to)
                .await
                .map_err(wire)?,
        ),
        Call::AwaitVolume { token, cancel } => {
            match local.await_volume(&token, cancel).await.map_err(wire)? {
                Some(r) => Answer::Received(r),
                None => Answer::Done,
            }
        }
        other => {
            return Err(WireError::from(&AgentError::Other(format!(
                "not a volume call: {other:?}"
            ))))
        }
    })
}

/// Node side: a piece of the archive that receive `id` takes; the end
/// closes its input.
pub async fn take_piece(
    receiving: &mut std::collections::HashMap<u64, mpsc::Sender<bytes::Bytes>>,
    id: u64,
    piece: Piece,
) {
    match piece {
        Piece::Data(bytes) => {
            if let Some(tx) = receiving.get(&id) {
                if tx.send(bytes).await.is_err() {
                    receiving.remove(&id);
                }
            }
        }
        Piece::End(_) => {
            receiving.remove(&id);
        }
    }
}

impl RemoteAgent {
    pub(super) async fn remove(
        &self,
        project: &str,
        name: &str,
        limit: Duration,
    ) -> Result<bool, AgentError> {
        let call = Call::RemoveVolume {
            project: project.into(),
            name: name.into(),
        };
        match self.call(call, limit).await? {
            Answer::Removed(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }

    pub(super) async fn listen(&self, project: &str, name: &str) -> Result<Listening, AgentError> {
        let call = Call::ListenVolume {
            project: project.into(),
            name: name.into(),
        };
        match self.call(call, QUICK).await? {
            Answer::Listening(l) => Ok(l),
            other => Err(self.unexpected(other)),
        }
    }

    pub(super) async fn send(
        &self,
        project: &str,
        name: &str,
        to: &DirectTarget,
    ) -> Result<Sent, AgentError> {
        let call = Call::SendVolume {
            project: project.into(),
            name: name.into(),
            to: to.clone(),
        };
        match self.call(call, LONG).await? {
            Answer::Sent(s) => Ok(s),
            other => Err(self.unexpected(other)),
        }
    }

    pub(super) async fn await_transfer(
        &self,
        token: &str,
        cancel: bool,
    ) -> Result<Option<Received>, AgentError> {
        let call = Call::AwaitVolume {
            token: token.into(),
            cancel,
        };
        match self.call(call, LONG).await? {
            Answer::Received(r) => Ok(Some(r)),
            Answer::Done => Ok(None),
            other => Err(self.unexpected(other)),
        }
    }

    /// A piece of an export came up.
    pub async fn piece(&self, id: u64, piece: Piece) {
        let Some(tx) = self.transfer(id) else { return };
        let last = matches!(piece, Piece::End(_));
        let sent = tokio::time::timeout(STALL, tx.send(piece)).await;
        if last || !matches!(sent, Ok(Ok(()))) {
            self.end_transfer(id);
            if !last {
                tracing::warn!(node = %NodeAgent::node_id(self), call = id, "volume transfer dropped: its reader is too slow");
                let _ = self.send_down(Down::Cancel { id }).await;
            }
        }
    }

    pub(super) async fn export(
        &self,
        project: &str,
        name: &str,
        pause: bool,
        gzip: bool,
    ) -> Result<Export, AgentError> {
        let id = self.next_id();
        let (tx, rx) = mpsc::channel(BUFFER);
        self.start_transfer(id, tx);
        let call = Call::ExportVolume {
            project: project.into(),
            name: name.into(),
            pause,
            gzip,
        };
        match self.call_with_id(id, call, LONG).await {
            Ok(Answer::Export { paused_ms }) => Ok(Export {
                paused: paused_ms.map(Duration::from_millis),
                data: rx,
            }),
            Ok(other) => {
                self.end_transfer(id);
                Err(AgentError::Other(format!("unexpected answer {other:?}")))
            }
            Err(e) => {
                self.end_transfer(id);
                Err(e)
            }
        }
    }

    pub(super) async fn receive(
        &self,
        project: &str,
        name: &str,
        gzip: bool,
        mut data: mpsc::Receiver<bytes::Bytes>,
    ) -> Result<Received, AgentError> {
        let id = self.next_id();
        let call = Call::ReceiveVolume {
            project: project.into(),
            name: name.into(),
            gzip,
        };
        let answer = self.call_with_id(id, call, LONG);
        let feed = async {
            while let Some(bytes) = data.recv().await {
                self.send_down(Down::Piece {
                    id,
                    piece: Piece::Data(bytes),
                })
                .await?;
            }
            self.send_down(Down::Piece {
                id,
                piece: Piece::End(Ok(String::new())),
            })
            .await
        };
        let (answer, fed) = tokio::join!(answer, feed);
        fed?;
        match answer? {
            Answer::Received(r) => Ok(r),
            other => Err(self.unexpected(other)),
        }
    }
}
