//! The calls an agent answers at once on its local node: each command
//! of the server to the [`NodeAgent`], and its answer.

use std::time::Duration;

use super::agent::Served;
use super::wire::{Answer, Call, WireError};
use crate::agent::{NodeAgent, PullMode};

/// Runs one call on the local node.
pub(super) async fn answer(
    local: &dyn NodeAgent,
    served: &Served,
    call: Call,
) -> Result<Answer, WireError> {
    let wire = |e: crate::agent::AgentError| WireError::from(&e);
    Ok(match call {
        Call::Pull { image, mode } => Answer::Pulled(local.pull(&image, mode).await.map_err(wire)?),
        Call::Start(spec) => {
            // Made present before the start, as the deploy did on the server.
            local
                .pull(&spec.image, PullMode::Missing)
                .await
                .map_err(wire)?;
            Answer::Started(local.start(&spec).await.map_err(wire)?)
        }
        Call::Restart { id } => Answer::Pid(local.restart(&id).await.map_err(wire)?),
        Call::Kill { id } => {
            local.kill(&id).await.map_err(wire)?;
            Answer::Done
        }
        Call::Remove { id, grace_ms } => {
            local
                .remove(&id, Duration::from_millis(grace_ms))
                .await
                .map_err(wire)?;
            Answer::Done
        }
        Call::List => Answer::Instances(local.list().await.map_err(wire)?),
        Call::ListService { service } => {
            Answer::Instances(local.list_service(&service).await.map_err(wire)?)
        }
        Call::Isolation {
            projects,
            internal,
            ports,
        } => {
            local
                .set_network(&projects, &internal, &ports)
                .await
                .map_err(wire)?;
            Answer::Done
        }
        Call::LogsTail { id, n } => Answer::Logs(local.logs_tail(&id, n).await.map_err(wire)?),
        Call::Serve(tables) => {
            let super::wire::Tables {
                names,
                routes,
                certs,
                challenges,
            } = *tables;
            served.dns.replace(names);
            served.routes.replace(routes);
            served.routes.replace_challenges(challenges);
            for (domain, e) in served.routes.certs().replace(&certs) {
                tracing::warn!(domain, error = %e, "certificate not served");
            }
            Answer::Done
        }
        Call::Peers(peers) => {
            local.set_peers(&peers).await.map_err(wire)?;
            Answer::Done
        }
        Call::Usage { id } => Answer::Usage(local.usage(&id).await.map_err(wire)?),
        Call::Volumes => Answer::Volumes(local.volumes().await.map_err(wire)?),
        call @ (Call::CommitVolume { .. }
        | Call::DiscardVolume { .. }
        | Call::VolumeUsers { .. }
        | Call::RemoveVolume { .. }
        | Call::ListenVolume { .. }
        | Call::SendVolume { .. }
        | Call::AwaitVolume { .. }) => super::transfer::answer(local, call).await?,
        Call::Exec {
            id,
            command,
            timeout_ms,
        } => Answer::Exec(
            local
                .exec(&id, &command, Duration::from_millis(timeout_ms))
                .await
                .map_err(wire)?,
        ),
        Call::LogsFollow { .. }
        | Call::Check { .. }
        | Call::Attach { .. }
        | Call::ExportVolume { .. }
        | Call::ReceiveVolume { .. } => {
            return Err(WireError {
                kind: super::wire::ErrorKind::Other,
                message: "log follows, checks and interactive execs run on, they are not answered"
                    .into(),
            })
        }
    })
}
