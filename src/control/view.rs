//! A control plane that is never started, as the read-only view of a
//! server that does not lead: [`ControlPlane::refresh_from_store`] reads
//! the records, volumes and tokens again when the store says they changed.

use std::collections::HashSet;

use anyhow::Context;

use super::ControlPlane;

impl ControlPlane {
    /// Makes the in-memory records, volumes and tokens those of the store.
    pub async fn refresh_from_store(&self) -> anyhow::Result<()> {
        let repo = self.inner.repo.clone();
        let (records, volumes, tokens) = tokio::task::spawn_blocking(move || {
            Ok::<_, crate::store::StoreError>((repo.services()?, repo.volumes()?, repo.tokens()?))
        })
        .await
        .context("read the store")??;
        let st = self.inner.state();
        let names: HashSet<String> = records.iter().map(|r| r.spec.name.clone()).collect();
        for record in records {
            if st.records.get(&record.spec.name) != Some(&record) {
                self.inner.state.put_record(record).await;
            }
        }
        for name in st.records.keys().filter(|n| !names.contains(*n)) {
            self.inner.state.forget_service(name).await;
        }
        let keys: HashSet<String> = volumes.iter().map(|v| v.key()).collect();
        for v in volumes {
            if st.volumes.get(&v.key()) != Some(&v) {
                self.inner.state.set_volume(&v.key(), Some(v.clone())).await;
            }
        }
        for key in st.volumes.keys().filter(|k| !keys.contains(*k)) {
            self.inner.state.set_volume(key, None).await;
        }
        *self
            .inner
            .stored_tokens
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = tokens;
        Ok(())
    }
}
