//! `compose`: a compose file read into orca service specs, as one project.
//!
//! Variables are substituted first, as compose does ([`interpolate`], with
//! [`dotenv`] files); then every key is either mapped ([`service`],
//! [`mapping`]), ignored with a note that says why, or refused. Nothing is
//! dropped silently: the caller shows the notes, and deploys nothing while
//! anything is refused (unless told to convert anyway).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod dotenv;
pub mod interpolate;
pub mod keys;
pub mod lines;
pub mod mapping;
pub mod service;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use api::spec::ServiceSpec;
use serde_yaml_ng::{Mapping, Value};

/// What the conversion knows beside the file.
pub struct Context<'a> {
    /// The compose file's directory: relative paths start there.
    pub dir: PathBuf,
    /// Variables: the `.env` file's, with the process's over them.
    pub env: BTreeMap<String, String>,
    /// `--project`: the project, over the file's `name`.
    pub project: Option<String>,
    /// Reads a file the compose file names (env files, secrets, configs).
    pub read: &'a dyn Fn(&Path) -> std::io::Result<String>,
}

/// A converted compose file.
#[derive(Debug, Default)]
pub struct Converted {
    pub project: String,
    pub services: Vec<ServiceSpec>,
    /// What was ignored or changed, and why, a line each.
    pub notes: Vec<String>,
    /// What orca cannot take, a line each (naming the service and key).
    pub refused: Vec<String>,
}

/// True if `text` looks like a compose file: a YAML mapping with `services`.
pub fn is_compose(text: &str) -> bool {
    serde_yaml_ng::from_str::<Value>(text)
        .ok()
        .and_then(|v| v.as_mapping().map(|m| m.contains_key("services")))
        .unwrap_or(false)
}

/// A name as orca takes it (a DNS label): lowercase, `_` and `.` as `-`.
pub fn orca_name(name: &str) -> String {
    let mut out: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let out = out.trim_matches('-');
    out.chars()
        .take(63)
        .collect::<String>()
        .trim_end_matches('-')
        .to_string()
}

/// Converts compose `text`; an error only for a file that is not YAML or
/// has no `services`.
pub fn convert(text: &str, ctx: &Context<'_>) -> Result<Converted, String> {
    let doc: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let Value::Mapping(top) = doc else {
        return Err("not a compose file: the top level is not a mapping".into());
    };
    let mut out = Converted::default();
    let mut unset = Vec::new();
    let top = match substitute_all(Value::Mapping(top), &ctx.env, &mut unset) {
        Ok(Value::Mapping(m)) => m,
        Ok(_) => Mapping::new(),
        Err(e) => {
            out.refused.push(e);
            return Ok(out);
        }
    };
    for var in unset {
        out.notes
            .push(format!("variable {var} is not set: it is an empty string"));
    }
    let name = top.get("name").and_then(Value::as_str);
    let dir_name = ctx
        .dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    out.project = match (&ctx.project, name, dir_name) {
        (Some(p), _, _) => p.clone(),
        (None, Some(n), _) => orca_name(n),
        (None, None, Some(d)) if !orca_name(&d).is_empty() => orca_name(&d),
        _ => "default".into(),
    };
    let mut top_level = TopLevel::default();
    for (key, value) in &top {
        let key = key.as_str().unwrap_or_default();
        match key {
            "services" | "name" => {}
            "version" => out
                .notes
                .push("version is obsolete in compose and ignored".into()),
            "networks" => out.notes.push(
                "networks ignored: a project is one network in orca, where every service reaches every other (a file's network split is widened)"
                    .into(),
            ),
            "volumes" => top_level.volumes = value.as_mapping().cloned().unwrap_or_default(),
            "secrets" => top_level.secrets = value.as_mapping().cloned().unwrap_or_default(),
            "configs" => top_level.configs = value.as_mapping().cloned().unwrap_or_default(),
            k if k.starts_with("x-") => {}
            other => out.refused.push(format!(
                "{}top-level key {other}: not supported",
                at_line(text, &[other])
            )),
        }
    }
    let Some(services) = top.get("services").and_then(Value::as_mapping) else {
        return Err("not a compose file: no services mapping".into());
    };
    for (name, body) in services {
        let name = name.as_str().unwrap_or_default();
        let Some(body) = body.as_mapping() else {
            out.refused.push(format!("{name}: not a mapping"));
            continue;
        };
        let orca = orca_name(name);
        if orca != name {
            out.notes
                .push(format!("service {name} is named {orca} in orca"));
        }
        if orca.is_empty() {
            out.refused.push(format!("{name}: no usable service name"));
            continue;
        }
        let mut one = service::Service::new(name, &orca, &out.project, ctx, &top_level);
        one.map(body);
        out.notes.extend(one.notes);
        out.refused
            .extend(one.refused.into_iter().map(|(key, why)| {
                format!(
                    "{}{name}: {key}: {why}",
                    at_line(text, &["services", name, &key])
                )
            }));
        out.services.push(one.spec);
    }
    Ok(out)
}

/// `line N: ` where the text shows the key at `path`, else nothing.
fn at_line(text: &str, path: &[&str]) -> String {
    lines::line_of(text, path)
        .map(|n| format!("line {n}: "))
        .unwrap_or_default()
}

/// The file's top-level volumes, secrets and configs, which services name.
#[derive(Debug, Default)]
pub struct TopLevel {
    pub volumes: Mapping,
    pub secrets: Mapping,
    pub configs: Mapping,
}

/// Substitutes variables in every string value (not in keys).
fn substitute_all(
    v: Value,
    env: &BTreeMap<String, String>,
    unset: &mut Vec<String>,
) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(interpolate::substitute(&s, env, unset).map_err(
            |e| match e {
                interpolate::Problem::Required { var, message } => {
                    format!("variable {var} is required: {message}")
                }
                interpolate::Problem::Syntax(m) => format!("bad variable: {m}"),
            },
        )?),
        Value::Sequence(items) => Value::Sequence(
            items
                .into_iter()
                .map(|i| substitute_all(i, env, unset))
                .collect::<Result<_, _>>()?,
        ),
        Value::Mapping(m) => {
            let mut out = Mapping::new();
            for (k, v) in m {
                out.insert(k, substitute_all(v, env, unset)?);
            }
            Value::Mapping(out)
        }
        Value::Tagged(t) => substitute_all(t.value, env, unset)?,
        other => other,
    })
}
