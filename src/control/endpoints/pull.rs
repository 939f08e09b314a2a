//! Making an image present before a rollout: pulled on every ready node
//! at once, so that no node meets a rollout without it.

use crate::agent::{AgentError, PullMode, Pulled};
use crate::nodes::Table;

/// Pulls `image` on every ready node. The server's own node's answer
/// decides (else the first that succeeded); a node that fails while
/// another succeeded is left to pull at its first start, and logged.
pub(crate) async fn on_nodes(
    table: &Table,
    image: &str,
    mode: PullMode,
) -> Result<Pulled, AgentError> {
    let ready: Vec<_> = table
        .nodes
        .values()
        .filter_map(|n| {
            n.ready_agent()
                .map(|a| (n.id().to_string(), n.local, a.clone()))
        })
        .collect();
    if ready.is_empty() {
        return Err(AgentError::Unreachable {
            node: "any".into(),
            reason: "no node is ready to pull the image".into(),
        });
    }
    let results = futures::future::join_all(
        ready
            .into_iter()
            .map(|(id, local, agent)| async move { (id, local, agent.pull(image, mode).await) }),
    )
    .await;
    let mut chosen: Option<(bool, Pulled)> = None;
    let mut first_error = None;
    for (node, local, result) in results {
        match result {
            Ok(p) => {
                if chosen
                    .as_ref()
                    .is_none_or(|(was_local, _)| local && !was_local)
                {
                    chosen = Some((local, p));
                }
            }
            Err(e) => {
                tracing::warn!(node, image, error = %e, "pull failed on a node");
                first_error.get_or_insert(e);
            }
        }
    }
    match (chosen, first_error) {
        (Some((_, p)), _) => Ok(p),
        (None, Some(e)) => Err(e),
        (None, None) => unreachable_error(),
    }
}

fn unreachable_error() -> Result<Pulled, AgentError> {
    Err(AgentError::Other("no node answered the pull".into()))
}
