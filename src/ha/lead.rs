//! What a server does as its standing changes. Taking a term: the
//! cluster's admin token if none exists yet, then a control plane made
//! afresh from the store (as after a restart, it adopts what runs),
//! started and handed to the API and the cluster port. Losing it: the
//! API and the cluster port are taken from it first, then its node
//! streams end and its tasks stop. Its store writes were refused from the
//! moment the election dropped the fence.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::switch::{Leading, Role};
use super::Standing;
use crate::control::{ControlPlane, Settings};
use crate::metrics::Metrics;
use crate::store::Repo;

/// What each term's control plane is made of.
pub struct Parts {
    pub repo: Repo,
    pub local: Option<Arc<dyn crate::agent::NodeAgent>>,
    pub settings: Settings,
    pub metrics: Metrics,
    pub routes: Option<Arc<network::proxy::Routes>>,
    pub dns: Option<Arc<network::dns::DnsTable>>,
    pub data_dir: std::path::PathBuf,
}

/// Starts a term: see the module doc.
pub async fn take_term(parts: &Parts, term: u64) -> anyhow::Result<Arc<Leading>> {
    let made = {
        let (tokens, repo, data) = (
            parts.settings.tokens.clone(),
            parts.repo.clone(),
            parts.data_dir.clone(),
        );
        tokio::task::spawn_blocking(move || crate::admin_token::ensure(&tokens, &repo, &data))
            .await
            .context("make the admin token")??
    };
    if let Some(path) = made {
        tracing::info!(
            file = %path.display(),
            "no admin token was configured or stored: made one, readable by root only in this file (the orca CLI on this host reads it)"
        );
    }
    let control = ControlPlane::new(
        parts.repo.clone(),
        parts.local.clone(),
        parts.settings.clone(),
        parts.metrics.clone(),
        parts.routes.clone(),
        parts.dns.clone(),
    )?;
    control.start().await.context("start reconciling")?;
    parts.metrics.leader.set(1);
    parts.metrics.leader_changes.inc();
    Ok(Arc::new(Leading {
        term,
        control,
        ended: CancellationToken::new(),
    }))
}

/// Ends a term: see the module doc.
async fn end_term(leading: Arc<Leading>, parts: &Parts) {
    leading.ended.cancel();
    leading.control.shutdown().await;
    parts.metrics.leader.set(0);
    parts.metrics.leader_changes.inc();
    tracing::info!(term = leading.term, "term ended: this server follows");
}

/// Follows the election until `stop`: takes and ends terms, and keeps
/// `view` (the follower's control plane) current from the store.
pub async fn follow(
    mut standing: watch::Receiver<Standing>,
    mut changes: watch::Receiver<u64>,
    role: watch::Sender<Role>,
    view: ControlPlane,
    parts: Parts,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut current: Option<Arc<Leading>> = None;
    let mut watching = true;
    loop {
        let now = standing.borrow_and_update().clone();
        match now {
            Standing::Leading { term } if current.as_ref().is_none_or(|l| l.term != term) => {
                if let Some(old) = current.take() {
                    role.send_replace(Role::Following(None));
                    end_term(old, &parts).await;
                }
                match take_term(&parts, term).await {
                    Ok(leading) => {
                        tracing::info!(term, "this server leads: control plane started");
                        role.send_replace(Role::Leading(leading.clone()));
                        current = Some(leading);
                    }
                    Err(e) => {
                        // The fence still holds its writes to this term:
                        // trying again is safe.
                        tracing::error!(term, error = %format!("{e:#}"), "could not start leading; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                }
            }
            Standing::Leading { .. } => {}
            Standing::Following(leader) => {
                role.send_replace(Role::Following(leader));
                if let Some(old) = current.take() {
                    end_term(old, &parts).await;
                }
                refresh(&view).await;
            }
        }
        tokio::select! {
            changed = standing.changed() => if changed.is_err() { break },
            changed = changes.changed(), if watching => {
                watching = changed.is_ok();
                if watching && current.is_none() {
                    // A burst of writes is read once.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    changes.borrow_and_update();
                    refresh(&view).await;
                }
            }
            _ = &mut stop => break,
        }
    }
    role.send_replace(Role::Following(None));
    if let Some(old) = current.take() {
        end_term(old, &parts).await;
    }
}

async fn refresh(view: &ControlPlane) {
    if let Err(e) = view.refresh_from_store().await {
        tracing::warn!(error = %format!("{e:#}"), "could not read the store for this server's view");
    }
}
