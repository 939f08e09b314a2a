//! Deploy, scale and stop: validate everything first, pull images before
//! anything changes, then write the new desired state (durably, under the
//! service's lock) and wake the service's worker.

use std::collections::HashSet;
use std::time::Instant;

use api::spec::{
    DeployRequest, DeployResponse, ServiceSpec, MAX_REPLICAS, MAX_SERVICES_PER_DEPLOY,
};
use api::{ApiError, ApiResponse, Caller};

use crate::control::access::authorize;

use crate::agent::PullMode;
use crate::control::worker::wake;
use crate::control::ControlPlane;
use crate::store::{spec_changed, Canary, ServiceRecord, VersionRecord, MAX_HISTORY};

pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The number of the next version: past every version ever recorded.
fn next_version(record: &ServiceRecord) -> u64 {
    record
        .history
        .iter()
        .map(|v| v.version)
        .chain(std::iter::once(record.version))
        .max()
        .unwrap_or(0)
        + 1
}

pub(crate) use super::store_error;

/// What storing one deployed service did.
struct Written {
    name: String,
    changed: bool,
    generation: u64,
    /// The version it rolls out to (a canary's, for a canary).
    version: u64,
}

impl ControlPlane {
    /// Checks that need no containerd: the spec, quantities, image
    /// reference, secrets, and the name not taken by another project.
    fn check_spec(&self, spec: &ServiceSpec) -> Result<(), ApiError> {
        spec.validate()?;
        let fail = |m: String| ApiError::bad_request(format!("{}: {m}", spec.name));
        api::names::check_project_not_reserved(
            &spec.project,
            &self.inner().settings.reserved_names,
        )
        .map_err(|e| fail(e.message))?;
        cri::ImageRef::parse(&spec.image).map_err(|e| fail(e.to_string()))?;
        if let Some(r) = &spec.resources {
            if let Some(m) = &r.memory {
                cri::MemoryLimit::parse(m).map_err(|e| fail(e.to_string()))?;
            }
            if let Some(c) = r.cpu {
                cri::CpuLimit::new(c).map_err(|e| fail(e.to_string()))?;
            }
            if let Some(m) = r.reserve.as_ref().and_then(|x| x.memory.as_deref()) {
                let reserve = cri::memory_reservation(m).map_err(|e| fail(e.to_string()))?;
                let limit = r
                    .memory
                    .as_deref()
                    .and_then(|l| cri::MemoryLimit::parse(l).ok());
                if limit.is_some_and(|l| reserve > l.bytes()) {
                    return Err(fail(format!(
                        "invalid resources.reserve.memory {m:?}: more than the limit resources.memory {:?}",
                        r.memory.as_deref().unwrap_or_default()
                    )));
                }
            }
        }
        if let Some(sec) = &spec.security {
            cri::spec::capabilities(&sec.cap_add, &sec.cap_drop)
                .map_err(|e| fail(e.to_string()))?;
        }
        self.sealed_refs(spec)?;
        let settings = &self.inner().settings;
        let nodes = self.inner().nodes.snapshot();
        super::volumes::check_mounts(spec, &settings.host_paths, &settings.devices, |s| {
            nodes
                .nodes
                .values()
                .any(|n| !n.local && n.record.access.allows(s).is_ok())
        })?;
        if let Some(api::spec::TlsSpec::Files(files)) = &spec.tls {
            let cert_dir = &self.inner().settings.cert_dir;
            for (field, path) in [("cert", &files.cert), ("key", &files.key)] {
                crate::control::serve::cert_file::check(cert_dir, field, path).map_err(fail)?;
            }
        }
        if spec.domain.is_some() && spec.port.is_none() {
            return Err(fail("a service with a domain needs a port".into()));
        }
        let st = self.inner().state();
        super::claims::domain(
            spec,
            st.records.values().filter(|r| !r.stopped).map(|r| &r.spec),
        )?;
        crate::control::ports::claims::check(
            spec,
            st.records.values().filter(|r| !r.stopped).map(|r| &r.spec),
            &self.inner().settings.own_ports,
        )?;
        let my_names: Vec<&str> = std::iter::once(spec.name.as_str())
            .chain(spec.aliases.iter().map(String::as_str))
            .collect();
        for other in st
            .records
            .values()
            .filter(|r| r.spec.project == spec.project && r.spec.name != spec.name && !r.stopped)
        {
            let theirs: Vec<&str> = std::iter::once(other.spec.name.as_str())
                .chain(other.spec.aliases.iter().map(String::as_str))
                .collect();
            if let Some(clash) = my_names.iter().find(|n| theirs.contains(n)) {
                return Err(ApiError::conflict(format!(
                    "{}: the name {clash} is already used by {} in project {}",
                    spec.name, other.spec.name, spec.project
                )));
            }
        }
        if let Some(existing) = st.records.get(&spec.name) {
            if existing.spec.project != spec.project {
                return Err(ApiError::conflict(format!(
                    "{}: the name is taken by project {:?}",
                    spec.name, existing.spec.project
                )));
            }
        }
        Ok(())
    }

    /// Deploys `request` for `by` (recorded in versions). `caller` is
    /// checked: a scoped token deploys only into its project, and only
    /// admins and deployers scoped to a service's project may reference
    /// that project's secrets. `None` is orca itself (a webhook's redeploy
    /// of a stored spec).
    pub(crate) async fn deploy(
        &self,
        request: DeployRequest,
        by: &str,
        caller: Option<&Caller>,
    ) -> Result<ApiResponse, ApiError> {
        self.deploy_pulling(request, by, caller, None).await
    }

    /// [`ControlPlane::deploy`], with every image got as `pull` says when
    /// given (a webhook's push re-resolves its tag, whatever the spec says).
    pub(crate) async fn deploy_pulling(
        &self,
        request: DeployRequest,
        by: &str,
        caller: Option<&Caller>,
        pull: Option<PullMode>,
    ) -> Result<ApiResponse, ApiError> {
        let started = Instant::now();
        if request.services.is_empty() {
            return Err(ApiError::bad_request("no services to deploy"));
        }
        if request.services.len() > MAX_SERVICES_PER_DEPLOY {
            return Err(ApiError::bad_request(format!(
                "at most {MAX_SERVICES_PER_DEPLOY} services per deploy"
            )));
        }
        let mut response = DeployResponse::default();
        let mut worst = 400;
        let mut seen = HashSet::new();
        let mut valid = Vec::new();
        for spec in request.services {
            if !seen.insert(spec.name.clone()) {
                response
                    .errors
                    .push(format!("{}: listed twice in one deploy", spec.name));
                continue;
            }
            let checked = authorize(caller, &spec)
                .and_then(|()| self.check_spec(&spec))
                .and_then(|()| super::claims::domain(&spec, valid.iter()))
                .and_then(|()| crate::control::ports::claims::check(&spec, valid.iter(), &[]));
            match checked {
                Ok(()) => valid.push(spec),
                Err(e) => {
                    worst = super::worse(worst, e.status);
                    response.errors.push(e.message);
                }
            }
        }

        let records = self.inner().state().records.clone();
        response
            .errors
            .extend(super::depends::check(&mut valid, &records));

        // Pull first, on every ready node: a missing image fails the
        // deploy before anything changes.
        let table = self.inner().nodes.snapshot();
        let pulls = futures::future::join_all(valid.into_iter().map(|spec| {
            let table = table.clone();
            let metrics = self.inner().metrics.clone();
            async move {
                let t = Instant::now();
                let mode = pull.unwrap_or_else(|| spec.pull_policy().into());
                let result = crate::control::pull::on_nodes(&table, &spec.image, mode).await;
                metrics.pull_seconds.observe(t.elapsed().as_secs_f64());
                (spec, result)
            }
        }))
        .await;

        for (spec, pulled) in pulls {
            let digest = match pulled {
                Ok(p) => {
                    if let Some(note) = &p.note {
                        tracing::warn!(service = %spec.name, note, "deploying the local image");
                    }
                    self.inner().state.pull_note(&spec.name, p.note).await;
                    p.digest
                }
                Err(e) => {
                    response.errors.push(format!("{}: {e}", spec.name));
                    continue;
                }
            };
            let fingerprint = match self.sealed_refs(&spec) {
                Ok(sealed) if sealed.is_empty() => None,
                Ok(sealed) => Some(crate::secrets::fingerprint(&sealed)),
                Err(e) => {
                    response.errors.push(e.message);
                    continue;
                }
            };
            match self.write_deploy(spec, digest, fingerprint, by).await {
                Ok(written) => {
                    let name = written.name;
                    response
                        .generations
                        .insert(name.clone(), written.generation);
                    if written.changed {
                        response.versions.insert(name.clone(), written.version);
                        response.deployed.push(name);
                    } else {
                        response.unchanged.push(name);
                    }
                }
                Err(e) => {
                    worst = super::worse(worst, e.status);
                    response.errors.push(e.message);
                }
            }
        }
        self.inner()
            .metrics
            .deploy_seconds
            .observe(started.elapsed().as_secs_f64());
        let nothing_done = response.deployed.is_empty() && response.unchanged.is_empty();
        if nothing_done && !response.errors.is_empty() {
            let mut body =
                serde_json::to_value(&response).map_err(|e| ApiError::internal(e.to_string()))?;
            body["error"] = serde_json::Value::String(response.errors.join("; "));
            return ApiResponse::json(worst, &body);
        }
        ApiResponse::ok(&response)
    }

    /// Stores a deployed spec; says whether it changed anything.
    async fn write_deploy(
        &self,
        spec: ServiceSpec,
        digest: String,
        fingerprint: Option<String>,
        caller: &str,
    ) -> Result<Written, ApiError> {
        let name = spec.name.clone();
        let lock = self.inner().service_lock(&name);
        let _held = lock.lock().await;
        let current = self.inner().repo.service(&name).map_err(store_error)?;
        let now = now_rfc3339();
        let record = match current {
            Some(mut r)
                if !spec_changed(&r.spec, &spec)
                    && r.image_digest.as_deref() == Some(&digest)
                    && r.secrets_fingerprint == fingerprint =>
            {
                if r.spec.replicas == spec.replicas && !r.stopped {
                    return Ok(Written {
                        name,
                        changed: false,
                        generation: r.generation,
                        version: r.version,
                    });
                }
                // Only the count (or the stop) differs: not a new version.
                if r.stopped {
                    r.job = crate::control::jobs::deployed(&r.job, &spec, &now);
                }
                r.spec.replicas = spec.replicas;
                r.stopped = false;
                r.reverted = None;
                r.changed_at(now);
                r
            }
            Some(mut r)
                if !r.stopped
                    && spec
                        .deploy
                        .as_ref()
                        .is_some_and(|d| d.strategy == Some(api::spec::Strategy::Canary)) =>
            {
                // A canary beside the stable version, which stays as it is.
                let version = next_version(&r);
                r.history.push(VersionRecord {
                    version,
                    spec: spec.clone(),
                    image_digest: Some(digest.clone()),
                    deployed_at: now.clone(),
                    deployed_by: caller.to_string(),
                    note: Some("canary".into()),
                });
                if r.history.len() > MAX_HISTORY {
                    let excess = r.history.len() - MAX_HISTORY;
                    r.history.drain(..excess);
                }
                let weight = spec
                    .deploy
                    .as_ref()
                    .and_then(|d| d.canary_weight)
                    .unwrap_or(10)
                    .clamp(0, 100) as u32;
                r.canary = Some(Canary {
                    version,
                    spec,
                    image_digest: Some(digest),
                    weight,
                    failed: None,
                });
                r.reverted = None;
                r.changed_at(now);
                r
            }
            current => {
                let (version, mut history, generation, job) = match current {
                    Some(r) => (next_version(&r), r.history, r.generation + 1, r.job),
                    None => (1, Vec::new(), 1, Default::default()),
                };
                let job = crate::control::jobs::deployed(&job, &spec, &now);
                history.push(VersionRecord {
                    version,
                    spec: spec.clone(),
                    image_digest: Some(digest.clone()),
                    deployed_at: now.clone(),
                    deployed_by: caller.to_string(),
                    note: None,
                });
                if history.len() > MAX_HISTORY {
                    let excess = history.len() - MAX_HISTORY;
                    history.drain(..excess);
                }
                ServiceRecord {
                    spec,
                    version,
                    image_digest: Some(digest),
                    stopped: false,
                    generation,
                    history,
                    updated_at: now,
                    reverted: None,
                    canary: None,
                    secrets_fingerprint: fingerprint,
                    job,
                }
            }
        };
        let written = Written {
            name,
            changed: true,
            generation: record.generation,
            version: record.canary.as_ref().map_or(record.version, |c| c.version),
        };
        self.save(record).await?;
        Ok(written)
    }

    /// Saves a record durably, then updates the cache and wakes its worker.
    pub(crate) async fn save(&self, record: ServiceRecord) -> Result<(), ApiError> {
        self.inner()
            .repo
            .put_service(&record)
            .map_err(store_error)?;
        let name = record.spec.name.clone();
        let notes = self.inner().state.put_record(record).await;
        self.inner().tell(notes);
        self.inner().certs_wake.notify_one();
        self.inner().acme_wake.notify_one();
        wake(self.inner(), &name);
        Ok(())
    }

    /// Takes service `name`'s write lock and loads its record (404 when
    /// there is none). Every API write to one service goes through here.
    pub(crate) async fn lock_service(
        &self,
        name: &str,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, ServiceRecord), ApiError> {
        let held = self.inner().service_lock(name).lock_owned().await;
        let record = self
            .inner()
            .repo
            .service(name)
            .map_err(store_error)?
            .ok_or_else(|| ApiError::service_not_found(name))?;
        Ok((held, record))
    }

    pub(crate) async fn scale(&self, name: &str, replicas: i64) -> Result<ApiResponse, ApiError> {
        if !(0..=MAX_REPLICAS).contains(&replicas) {
            return Err(ApiError::bad_request(format!(
                "invalid replicas {replicas}: must be 0 to {MAX_REPLICAS}"
            )));
        }
        let (_held, mut record) = self.lock_service(name).await?;
        record.spec.replicas = replicas;
        record.stopped = false;
        record.reverted = None;
        record.changed_at(now_rfc3339());
        let generation = record.generation;
        let version = record.version;
        self.save(record).await?;
        ApiResponse::ok(&serde_json::json!({
            "name": name, "replicas": replicas, "version": version, "generation": generation
        }))
    }

    /// Marks services stopped; their workers remove the replicas.
    pub(crate) async fn stop(&self, names: Vec<String>) -> Result<ApiResponse, ApiError> {
        let mut stopped = Vec::new();
        let mut generation = 0;
        for name in names {
            let lock = self.inner().service_lock(&name);
            let _held = lock.lock().await;
            let Some(mut record) = self.inner().repo.service(&name).map_err(store_error)? else {
                continue;
            };
            if !record.stopped {
                record.stopped = true;
                record.changed_at(now_rfc3339());
            }
            generation = record.generation;
            self.save(record).await?;
            stopped.push(name);
        }
        ApiResponse::ok(&serde_json::json!({ "stopped": stopped, "generation": generation }))
    }

    pub(crate) async fn stop_service(&self, name: &str) -> Result<ApiResponse, ApiError> {
        if !self.inner().state().records.contains_key(name) {
            return Err(ApiError::service_not_found(name));
        }
        self.stop(vec![name.to_string()]).await
    }

    pub(crate) async fn stop_project(&self, project: &str) -> Result<ApiResponse, ApiError> {
        let names: Vec<String> = {
            let st = self.inner().state();
            let mut n: Vec<String> = st
                .records
                .values()
                .filter(|r| r.spec.project == project)
                .map(|r| r.spec.name.clone())
                .collect();
            n.sort();
            n
        };
        if names.is_empty() {
            return Err(ApiError::not_found(format!("project not found: {project}")));
        }
        self.stop(names).await
    }

    pub(crate) async fn stop_all(&self) -> Result<ApiResponse, ApiError> {
        let mut names: Vec<String> = self.inner().state().records.keys().cloned().collect();
        names.sort();
        self.stop(names).await
    }
}
