//! One compose service into an orca [`ServiceSpec`]: each key mapped,
//! ignored with a note, or refused.

use std::collections::BTreeMap;

use api::spec::{
    Condition, DependsOn, FileSpec, PullPolicy, ResourcesSpec, RestartPolicy, SecuritySpec,
    ServiceSpec, VolumeObject, VolumeSpec, VolumeType,
};
use serde_yaml_ng::{Mapping, Value};

use crate::keys::{file_mode, IGNORED, REFUSED};
use crate::mapping::{self, text, Volumes};
use crate::{orca_name, Context, TopLevel};

/// One service being converted.
pub struct Service<'a> {
    name: &'a str,
    ctx: &'a Context<'a>,
    top: &'a TopLevel,
    pub spec: ServiceSpec,
    pub notes: Vec<String>,
    /// The refused keys, each with why.
    pub refused: Vec<(String, String)>,
}

impl<'a> Service<'a> {
    pub fn new(
        name: &'a str,
        orca: &str,
        project: &str,
        ctx: &'a Context<'a>,
        top: &'a TopLevel,
    ) -> Self {
        let spec = ServiceSpec::new(orca, project, "");
        Service {
            name,
            ctx,
            top,
            spec,
            notes: Vec::new(),
            refused: Vec::new(),
        }
    }

    fn refuse(&mut self, key: &str, why: impl std::fmt::Display) {
        self.refused.push((key.to_string(), why.to_string()));
    }

    fn note(&mut self, key: &str, why: impl std::fmt::Display) {
        self.notes
            .push(format!("{}: {key} ignored: {why}", self.name));
    }

    /// Maps every key of `body`.
    pub fn map(&mut self, body: &Mapping) {
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        for (key, value) in body {
            let key = key.as_str().unwrap_or_default();
            if let Err(e) = self.key(key, value, body, &mut env) {
                self.refuse(key, e);
            }
        }
        self.spec.env = env;
        if let Some(ext) = body.get("x-orca") {
            if let Err(e) = self.extension(ext) {
                self.refuse("x-orca", e);
            }
        }
        if self.spec.image.is_empty() && !body.contains_key("build") {
            self.refuse("image", "no image");
        }
    }

    /// `x-orca`: orca's own fields of the service (`domain`, `routes`,
    /// `schedule`, `placement` ...), over what the compose keys gave.
    fn extension(&mut self, ext: &Value) -> Result<(), String> {
        let ext = serde_json::to_value(ext).map_err(|e| e.to_string())?;
        let serde_json::Value::Object(fields) = ext else {
            return Err("a mapping of service fields is needed".into());
        };
        let mut spec = serde_json::to_value(&self.spec).map_err(|e| e.to_string())?;
        for (k, v) in fields {
            if k == "name" || k == "project" {
                return Err(format!("{k} comes from the compose file"));
            }
            spec[k] = v;
        }
        self.spec = serde_json::from_value(spec).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn key(
        &mut self,
        key: &str,
        value: &Value,
        body: &Mapping,
        env: &mut BTreeMap<String, String>,
    ) -> Result<(), String> {
        if let Some((_, why)) = REFUSED.iter().find(|(k, _)| *k == key) {
            return Err(why.to_string());
        }
        if let Some((_, why)) = IGNORED.iter().find(|(k, _)| *k == key) {
            self.note(key, why);
            return Ok(());
        }
        match key {
            "image" => self.spec.image = text(value).ok_or("a string is needed")?,
            "build" if body.contains_key("image") => {
                self.note("build", "the image is used as it is in its registry")
            }
            "build" => return Err(
                "build without image: orca runs images; build and push it, then name it in image"
                    .into(),
            ),
            "command" => self.spec.args = Some(mapping::argv(value)?),
            "entrypoint" => self.spec.entrypoint = Some(mapping::argv(value)?),
            "environment" => self.environment(value, env)?,
            "env_file" => self.env_file(value, env)?,
            "ports" => {
                let (ports, notes) = mapping::ports(value)?;
                self.spec.ports = ports;
                self.notes
                    .extend(notes.into_iter().map(|n| format!("{}: {n}", self.name)));
            }
            "volumes" => self.volumes(value)?,
            "tmpfs" => {
                let list = match value {
                    Value::Sequence(s) => s.iter().filter_map(text).collect(),
                    other => vec![text(other).ok_or("a path or a list")?],
                };
                for t in list {
                    let target = t.split(':').next().unwrap_or_default().to_string();
                    self.spec.volumes.push(VolumeSpec::Long(VolumeObject {
                        kind: Some(VolumeType::Tmpfs),
                        target,
                        ..VolumeObject::default()
                    }));
                }
            }
            "depends_on" => self.depends_on(value)?,
            "healthcheck" => self.spec.readiness = mapping::healthcheck(value)?,
            "restart" => self.restart(value)?,
            "user" => self.spec.user = Some(text(value).ok_or("a string is needed")?),
            "working_dir" => self.spec.working_dir = Some(text(value).ok_or("a path is needed")?),
            "cap_add" | "cap_drop" => {
                let caps: Vec<String> = value
                    .as_sequence()
                    .ok_or("a list is needed")?
                    .iter()
                    .filter_map(text)
                    .map(|c| c.trim_start_matches("CAP_").to_string())
                    .collect();
                let sec = self.spec.security.get_or_insert_with(SecuritySpec::default);
                if key == "cap_add" {
                    sec.cap_add = caps
                } else {
                    sec.cap_drop = caps
                }
            }
            "read_only" => {
                let ro = value.as_bool().ok_or("true or false")?;
                self.spec
                    .security
                    .get_or_insert_with(SecuritySpec::default)
                    .read_only_rootfs = ro;
            }
            "stop_grace_period" => self.spec.stop_grace_secs = Some(mapping::seconds(value)?),
            "pull_policy" => {
                self.spec.pull = Some(match value.as_str() {
                    Some("always") => PullPolicy::Always,
                    Some("missing" | "if_not_present") => PullPolicy::Missing,
                    Some("never") => PullPolicy::Never,
                    other => return Err(format!("{other:?}: always, missing or never")),
                })
            }
            "scale" => self.spec.replicas = value.as_i64().ok_or("a number is needed")?,
            "deploy" => self.deploy(value)?,
            "devices" => {
                self.spec.devices = value
                    .as_sequence()
                    .ok_or("a list is needed")?
                    .iter()
                    .map(|d| text(d).ok_or("a string is needed"))
                    .map(|d| d.map(|d| d.split(':').take(2).collect::<Vec<_>>().join(":")))
                    .collect::<Result<_, _>>()?;
            }
            "labels" => {
                let (labels, notes) = mapping::labels(value)?;
                self.spec.labels = labels;
                self.notes
                    .extend(notes.into_iter().map(|n| format!("{}: {n}", self.name)));
            }
            "networks" => self.networks(value)?,
            "secrets" => self.files(value, true)?,
            "configs" => self.files(value, false)?,
            // x-orca is applied last, over the rest (see `extension`).
            k if k.starts_with("x-") => {}
            other => return Err(format!("unknown key {other}")),
        }
        Ok(())
    }

    fn environment(&mut self, v: &Value, env: &mut BTreeMap<String, String>) -> Result<(), String> {
        let from_process = |k: &str| self.ctx.env.get(k).cloned();
        match v {
            Value::Sequence(items) => {
                for item in items {
                    let s = text(item).ok_or("a list of KEY=VALUE")?;
                    match s.split_once('=') {
                        Some((k, v)) => {
                            env.insert(k.to_string(), v.to_string());
                        }
                        None => {
                            if let Some(v) = from_process(&s) {
                                env.insert(s, v);
                            }
                        }
                    }
                }
            }
            Value::Mapping(m) => {
                for (k, v) in m {
                    let k = text(k).ok_or("a string key")?;
                    match v {
                        Value::Null => {
                            if let Some(v) = from_process(&k) {
                                env.insert(k, v);
                            }
                        }
                        other => {
                            env.insert(k, text(other).ok_or("a scalar value")?);
                        }
                    }
                }
            }
            _ => return Err("a list or a mapping".into()),
        }
        Ok(())
    }

    fn env_file(&mut self, v: &Value, env: &mut BTreeMap<String, String>) -> Result<(), String> {
        let files: Vec<(String, bool)> = match v {
            Value::Sequence(items) => items
                .iter()
                .map(|i| match i {
                    Value::Mapping(m) => (
                        m.get("path").and_then(text).unwrap_or_default(),
                        m.get("required").and_then(Value::as_bool).unwrap_or(true),
                    ),
                    other => (text(other).unwrap_or_default(), true),
                })
                .collect(),
            other => vec![(text(other).ok_or("a path or a list")?, true)],
        };
        for (path, required) in files {
            let full = self.ctx.dir.join(&path);
            match (self.ctx.read)(&full) {
                Ok(text) => {
                    for (k, v) in crate::dotenv::parse(&text).map_err(|e| format!("{path}: {e}"))? {
                        // environment wins over env_file: only fill what is missing.
                        env.entry(k).or_insert(v);
                    }
                }
                Err(e) if required => return Err(format!("{path}: {e}")),
                Err(_) => {}
            }
        }
        Ok(())
    }

    fn volumes(&mut self, v: &Value) -> Result<(), String> {
        let names = self.volume_names();
        let vols = Volumes {
            dir: &self.ctx.dir,
            service: &self.spec.name,
            names: &names,
        };
        let mut notes = Vec::new();
        for item in v.as_sequence().ok_or("a list is needed")? {
            self.spec.volumes.push(vols.entry(item, &mut notes)?);
        }
        self.notes.extend(notes);
        Ok(())
    }

    /// Top-level volume keys to orca volume names (`name:` when given).
    fn volume_names(&self) -> BTreeMap<String, String> {
        self.top
            .volumes
            .iter()
            .filter_map(|(k, v)| {
                let key = k.as_str()?.to_string();
                let name = v.get("name").and_then(Value::as_str).unwrap_or(&key);
                Some((key.clone(), orca_name(name)))
            })
            .collect()
    }

    fn depends_on(&mut self, v: &Value) -> Result<(), String> {
        let deps = match v {
            Value::Sequence(items) => DependsOn::Names(
                items
                    .iter()
                    .filter_map(text)
                    .map(|n| orca_name(&n))
                    .collect(),
            ),
            Value::Mapping(m) => {
                let mut out = BTreeMap::new();
                for (k, body) in m {
                    let name = orca_name(k.as_str().unwrap_or_default());
                    let cond = match body.get("condition").and_then(Value::as_str) {
                        None | Some("service_started") => Condition::Started,
                        Some("service_healthy") => Condition::Healthy,
                        Some("service_completed_successfully") => Condition::Completed,
                        Some(other) => return Err(format!("condition {other}")),
                    };
                    out.insert(name, cond);
                }
                DependsOn::Conditions(out)
            }
            _ => return Err("a list or a mapping".into()),
        };
        self.spec.depends_on = Some(deps);
        Ok(())
    }

    fn restart(&mut self, v: &Value) -> Result<(), String> {
        let s = text(v).ok_or("a string is needed")?;
        self.spec.restart = Some(match s.split(':').next().unwrap_or_default() {
            "no" | "never" => RestartPolicy::Never,
            "always" => RestartPolicy::Always,
            "on-failure" => {
                if s.contains(':') {
                    self.note(
                        "restart's retry count",
                        "on-failure retries with the backoff, without a limit",
                    );
                }
                RestartPolicy::OnFailure
            }
            "unless-stopped" => {
                self.notes.push(format!(
                    "{}: restart unless-stopped is always in orca (a stopped service stays stopped)",
                    self.name
                ));
                RestartPolicy::Always
            }
            other => return Err(format!("{other}: no, always, on-failure or unless-stopped")),
        });
        Ok(())
    }

    fn deploy(&mut self, v: &Value) -> Result<(), String> {
        let m = v.as_mapping().ok_or("a mapping is needed")?;
        for (k, value) in m {
            match k.as_str().unwrap_or_default() {
                "replicas" => {
                    self.spec.replicas = value.as_i64().ok_or("deploy.replicas: a number")?
                }
                "resources" => {
                    let r = self
                        .spec
                        .resources
                        .get_or_insert_with(ResourcesSpec::default);
                    if let Some(l) = value.get("limits") {
                        if let Some(c) = l.get("cpus").and_then(text) {
                            r.cpu = Some(
                                c.parse()
                                    .map_err(|_| format!("deploy.resources.limits.cpus {c:?}"))?,
                            );
                        }
                        if let Some(m) = l.get("memory") {
                            r.memory = Some(mapping::memory(m)?);
                        }
                        if let Some(p) = l.get("pids").and_then(Value::as_i64) {
                            r.pids = Some(p);
                        }
                    }
                    if let Some(res) = value.get("reservations") {
                        let reserve = r.reserve.get_or_insert_with(Default::default);
                        if let Some(c) = res.get("cpus").and_then(text) {
                            reserve.cpu =
                                Some(c.parse().map_err(|_| format!("reservations.cpus {c:?}"))?);
                        }
                        if let Some(m) = res.get("memory") {
                            reserve.memory = Some(mapping::memory(m)?);
                        }
                    }
                }
                "restart_policy" => {
                    let cond = value
                        .get("condition")
                        .and_then(Value::as_str)
                        .unwrap_or("any");
                    self.spec.restart = Some(match cond {
                        "none" => RestartPolicy::Never,
                        "on-failure" => RestartPolicy::OnFailure,
                        _ => RestartPolicy::Always,
                    });
                }
                "mode" if value.as_str() == Some("global") => {
                    return Err("deploy.mode global: orca places replicas by count".into())
                }
                other => self.note(
                    &format!("deploy.{other}"),
                    "orca's own rollout and placement apply",
                ),
            }
        }
        Ok(())
    }

    fn networks(&mut self, v: &Value) -> Result<(), String> {
        if let Value::Mapping(m) = v {
            for (_, body) in m {
                for key in ["ipv4_address", "ipv6_address"] {
                    if body.get(key).is_some() {
                        return Err(format!("{key}: orca gives replicas their addresses"));
                    }
                }
            }
        }
        self.note(
            "networks",
            "a project is one network in orca, where every service reaches every other",
        );
        Ok(())
    }

    /// `secrets` (under /run/secrets) or `configs` (under /): files.
    fn files(&mut self, v: &Value, secret: bool) -> Result<(), String> {
        let defs = if secret {
            &self.top.secrets
        } else {
            &self.top.configs
        };
        for item in v.as_sequence().ok_or("a list is needed")? {
            let (source, target, mode) = match item {
                Value::Mapping(m) => (
                    m.get("source").and_then(text).ok_or("source is needed")?,
                    m.get("target").and_then(text),
                    m.get("mode").map(file_mode),
                ),
                other => (text(other).ok_or("a name or a mapping")?, None, None),
            };
            let target = match target {
                Some(t) if t.starts_with('/') => t,
                Some(t) if secret => format!("/run/secrets/{t}"),
                Some(t) => format!("/{t}"),
                None if secret => format!("/run/secrets/{source}"),
                None => format!("/{source}"),
            };
            let def = defs
                .get(source.as_str())
                .ok_or_else(|| format!("{source} is not defined at the top level"))?;
            let mut file = FileSpec {
                target,
                content: None,
                secret: None,
                mode,
            };
            if def.get("external").and_then(Value::as_bool) == Some(true) {
                let name = def.get("name").and_then(Value::as_str).unwrap_or(&source);
                file.secret = Some(name.to_uppercase().replace('-', "_"));
            } else if let Some(path) = def.get("file").and_then(text) {
                let full = self.ctx.dir.join(&path);
                file.content =
                    Some((self.ctx.read)(&full).map_err(|e| format!("{source}: {path}: {e}"))?);
            } else if let Some(var) = def.get("environment").and_then(text) {
                file.content = Some(
                    self.ctx
                        .env
                        .get(&var)
                        .cloned()
                        .ok_or_else(|| format!("{source}: variable {var} is not set"))?,
                );
            } else if let Some(content) = def.get("content").and_then(text) {
                file.content = Some(content);
            } else {
                return Err(format!(
                    "{source}: file, environment, content or external is needed"
                ));
            }
            self.spec.files.push(file);
        }
        Ok(())
    }
}
