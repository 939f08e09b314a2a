//! The API commands for people (tables) and scripts (`--output json`).

use api::client::ApiClient;
use api::status::StatusResponse;
use serde_json::Value;

use super::out::{self, outln};
use super::table;
use super::wait::{self, Target};
use super::{SecretsCommand, TokenCommand, WaitArgs, WebhookCommand};

pub(super) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)
}

/// Posts a change to service `name` at `path`, then waits (unless
/// detached) for the version its answer names. The answer and whether it
/// was waited for, or `None` under `--output json`, where the answer was
/// printed as it came.
async fn change(
    client: &ApiClient,
    name: &str,
    path: &str,
    body: Value,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<Option<(Value, bool)>> {
    let answer: Value = client.post(path, &body).await?;
    if json {
        print_json(&answer)?;
    }
    let waited = match answer["version"].as_u64().filter(|_| !wait.detach) {
        Some(version) => {
            let target = Target {
                service: name.to_string(),
                version,
            };
            wait::wait(client, &[target], wait.timeout(), json).await?;
            true
        }
        None => false,
    };
    Ok((!json).then_some((answer, waited)))
}

pub async fn status(client: &ApiClient, project: Option<&str>, json: bool) -> anyhow::Result<()> {
    let path = match project {
        Some(p) => format!("/api/v1/status?project={p}"),
        None => "/api/v1/status".to_string(),
    };
    let status: StatusResponse = client.get(&path).await?;
    if json {
        return print_json(&status);
    }
    let rows: Vec<Vec<String>> = status
        .services
        .iter()
        .map(|s| {
            let restarts: u32 = s.instances.iter().map(|i| i.restarts).sum();
            vec![
                s.name.clone(),
                s.project.clone(),
                serde_json::to_value(s.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                format!("{}/{}", s.running_replicas, s.replicas),
                s.version.to_string(),
                restarts.to_string(),
                s.image.clone(),
                s.message.clone().unwrap_or_default(),
            ]
        })
        .collect();
    out::write(&table::render(
        &[
            "NAME", "PROJECT", "STATUS", "REPLICAS", "VERSION", "RESTARTS", "IMAGE", "MESSAGE",
        ],
        &rows,
    ))
}

pub async fn logs(
    client: &ApiClient,
    name: &str,
    tail: Option<usize>,
    follow: bool,
) -> anyhow::Result<()> {
    let mut path = format!("/api/v1/services/{name}/logs?follow={follow}");
    if let Some(n) = tail {
        path.push_str(&format!("&tail={n}"));
    }
    let mut failed = None;
    client
        .stream(&path, |chunk| match out::write_bytes(chunk) {
            Ok(()) => std::ops::ControlFlow::Continue(()),
            Err(e) => {
                failed = Some(e);
                std::ops::ControlFlow::Break(())
            }
        })
        .await?;
    failed.map_or(Ok(()), Err)
}

pub async fn scale(
    client: &ApiClient,
    name: &str,
    replicas: i64,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/services/{name}/scale");
    let body = serde_json::json!({ "replicas": replicas });
    match change(client, name, &path, body, wait, json).await? {
        None => Ok(()),
        Some((_, true)) => outln!("{name} scaled to {replicas}: all ready"),
        Some((_, false)) => outln!("{name} scaling to {replicas}"),
    }
}

pub async fn stop(
    client: &ApiClient,
    name: Option<String>,
    project: Option<String>,
    all: bool,
    json: bool,
) -> anyhow::Result<()> {
    let v: Value = match (name, project, all) {
        (Some(n), _, _) => client.delete(&format!("/api/v1/services/{n}")).await?,
        (None, Some(p), _) => client.delete(&format!("/api/v1/projects/{p}")).await?,
        (None, None, true) => client.post("/api/v1/stop", &serde_json::json!({})).await?,
        (None, None, false) => anyhow::bail!("name a service, or use --project P or --all"),
    };
    if json {
        return print_json(&v);
    }
    let names: Vec<&str> = v["stopped"]
        .as_array()
        .map(|a| a.iter().filter_map(|s| s.as_str()).collect())
        .unwrap_or_default();
    outln!(
        "stopped: {}",
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    )
}

/// `orca drain ID` / `orca undrain ID`.
pub async fn promote(
    client: &ApiClient,
    name: &str,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/services/{name}/promote");
    let Some((v, waited)) = change(client, name, &path, serde_json::json!({}), wait, json).await?
    else {
        return Ok(());
    };
    let version = &v["version"];
    match waited {
        true => outln!("{name}: version {version} promoted; every replica runs it, ready"),
        false => outln!("{name}: promoting version {version}"),
    }
}

pub async fn rollback(
    client: &ApiClient,
    name: &str,
    version: Option<u64>,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let body = match version {
        Some(v) => serde_json::json!({ "version": v }),
        None => serde_json::json!({}),
    };
    let path = format!("/api/v1/services/{name}/rollback");
    let Some((v, waited)) = change(client, name, &path, body, wait, json).await? else {
        return Ok(());
    };
    let now = &v["version"];
    let what = match (v["removed_canary"].as_u64(), v["rolled_back_to"].as_u64()) {
        (Some(canary), _) => {
            format!("{name}: canary version {canary} removed; version {now} serves")
        }
        (None, Some(to)) => format!("{name} rolled back to version {to} (as version {now})"),
        _ => format!("{name} rolled back (version {now})"),
    };
    match waited {
        true => outln!("{what}; every replica ready"),
        false => outln!("{what}; rolling out"),
    }
}

pub async fn versions(client: &ApiClient, name: &str, json: bool) -> anyhow::Result<()> {
    let v: Value = client
        .get(&format!("/api/v1/services/{name}/versions"))
        .await?;
    if json {
        return print_json(&v);
    }
    let current = v["current"].as_u64().unwrap_or(0);
    let rows: Vec<Vec<String>> = v["versions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let n = e["version"].as_u64().unwrap_or(0);
                    vec![
                        format!("{n}{}", if n == current { " *" } else { "" }),
                        e["image"].as_str().unwrap_or("").to_string(),
                        e["deployed_at"].as_str().unwrap_or("").to_string(),
                        e["deployed_by"].as_str().unwrap_or("").to_string(),
                        e["note"].as_str().unwrap_or("").to_string(),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    out::write(&table::render(
        &["VERSION", "IMAGE", "DEPLOYED", "BY", "NOTE"],
        &rows,
    ))
}

pub async fn token(client: &ApiClient, command: TokenCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create {
            name,
            role,
            project,
        } => {
            let role: api::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let v: Value = client
                .post(
                    "/api/v1/tokens",
                    &serde_json::json!({ "name": name, "role": role, "project": project }),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            outln!(
                "token {name} ({}): {}\nIt is shown only this once.",
                v["role"].as_str().unwrap_or(""),
                v["token"].as_str().unwrap_or("")
            )?;
        }
        TokenCommand::List => {
            let v: Value = client.get("/api/v1/tokens").await?;
            if json {
                return print_json(&v);
            }
            let rows: Vec<Vec<String>> = v["tokens"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|t| {
                            ["name", "role", "project", "source"]
                                .iter()
                                .map(|k| t[*k].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            out::write(&table::render(
                &["NAME", "ROLE", "PROJECT", "SOURCE"],
                &rows,
            ))?;
        }
        TokenCommand::Rm { name } => {
            let v: Value = client.delete(&format!("/api/v1/tokens/{name}")).await?;
            if json {
                return print_json(&v);
            }
            outln!("deleted {name}")?;
        }
    }
    Ok(())
}

pub async fn webhooks(
    client: &ApiClient,
    command: Option<WebhookCommand>,
    json: bool,
) -> anyhow::Result<()> {
    match command {
        Some(WebhookCommand::Add {
            repo,
            service,
            branch,
            secret,
        }) => {
            let v: Value = client
                .post("/api/v1/webhooks", &serde_json::json!({ "repo": repo, "service": service, "branch": branch, "secret": secret }))
                .await?;
            if json {
                return print_json(&v);
            }
            return outln!(
                "webhook {} added: POST /api/v1/webhooks/github",
                v["id"].as_str().unwrap_or("")
            );
        }
        Some(WebhookCommand::Rm { id }) => {
            let v: Value = client.delete(&format!("/api/v1/webhooks/{id}")).await?;
            if json {
                return print_json(&v);
            }
            return outln!("deleted webhook {id}");
        }
        None => {}
    }
    let v: Value = client.get("/api/v1/webhooks").await?;
    if json {
        return print_json(&v);
    }
    let hooks = v["webhooks"].as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        return outln!("no webhooks");
    }
    let rows: Vec<Vec<String>> = hooks
        .iter()
        .map(|h| {
            let mut row: Vec<String> = ["id", "repo", "branch", "service", "created_at"]
                .iter()
                .map(|k| h[*k].as_str().unwrap_or("").to_string())
                .collect();
            row.push(h["invocations"].as_array().map_or(0, Vec::len).to_string());
            row
        })
        .collect();
    out::write(&table::render(
        &["ID", "REPO", "BRANCH", "SERVICE", "CREATED", "PUSHES"],
        &rows,
    ))
}

/// `KEY=VALUE` lines of a .env file (comments, blank lines and `export `
/// skipped, surrounding quotes removed).
pub fn parse_env_file(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            anyhow::bail!("line {}: expected KEY=VALUE", n + 1);
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|x| x.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|x| x.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

pub async fn secrets(
    client: &ApiClient,
    project: &str,
    command: SecretsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let put = |name: String, value: String| async move {
        let _: Value = client
            .put(
                &format!("/api/v1/secrets/{name}"),
                &serde_json::json!({ "value": value, "project": project }),
            )
            .await?;
        Ok::<_, anyhow::Error>(())
    };
    match command {
        SecretsCommand::Set { name, value } => {
            let value = match value {
                Some(v) => v,
                None => {
                    let mut v = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut v)?;
                    v.trim_end_matches('\n').to_string()
                }
            };
            put(name.clone(), value).await?;
            outln!("stored {name} for project {project}")?;
        }
        SecretsCommand::List => {
            let v: Value = client
                .get(&format!("/api/v1/secrets?project={project}"))
                .await?;
            if json {
                return print_json(&v);
            }
            let names = v["secrets"].as_array().cloned().unwrap_or_default();
            if names.is_empty() {
                outln!("project {project} has no secrets")?;
            }
            for name in names {
                outln!("{}", name.as_str().unwrap_or(""))?;
            }
        }
        SecretsCommand::Rm { name } => {
            let _: Value = client
                .delete(&format!("/api/v1/secrets/{name}?project={project}"))
                .await?;
            outln!("deleted {name} from project {project}")?;
        }
        SecretsCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)?;
            let pairs = parse_env_file(&text)?;
            let count = pairs.len();
            for (k, v) in pairs {
                put(k, v).await?;
            }
            outln!(
                "stored {count} secrets from {} for project {project}",
                file.display()
            )?;
        }
    }
    Ok(())
}

/// `orca exec`: the command's output on stdout and stderr, and its exit
/// code as ours (JSON: the whole answer, and the same exit code).
#[cfg(test)]
mod tests {
    #[test]
    fn env_files() {
        let pairs = super::parse_env_file("# c\nA=1\nexport B=\"two words\"\n\nC='x=y'\n").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two words".into()),
                ("C".into(), "x=y".into())
            ]
        );
        assert!(super::parse_env_file("nonsense").is_err());
    }
}
