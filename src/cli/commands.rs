//! The API commands for people (tables) and scripts (`--output json`).

use api::client::ApiClient;
use api::status::{ClusterInfo, StatusResponse};
use serde_json::Value;

use super::table;
use super::{SecretsCommand, TokenCommand, WebhookCommand};

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
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
    print!(
        "{}",
        table::render(
            &["NAME", "PROJECT", "STATUS", "REPLICAS", "VERSION", "RESTARTS", "IMAGE", "MESSAGE"],
            &rows
        )
    );
    Ok(())
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
    use std::io::Write;
    let mut out = std::io::stdout();
    client
        .stream(&path, |chunk| {
            let _ = out.write_all(chunk);
            let _ = out.flush();
        })
        .await?;
    Ok(())
}

pub async fn scale(
    client: &ApiClient,
    name: &str,
    replicas: i64,
    json: bool,
) -> anyhow::Result<()> {
    let v: Value = client
        .post(
            &format!("/api/v1/services/{name}/scale"),
            &serde_json::json!({ "replicas": replicas }),
        )
        .await?;
    if json {
        return print_json(&v);
    }
    println!("{name} scaled to {replicas}");
    Ok(())
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
    println!(
        "stopped: {}",
        if names.is_empty() {
            "nothing".to_string()
        } else {
            names.join(", ")
        }
    );
    Ok(())
}

pub async fn post_empty(client: &ApiClient, path: &str, json: bool) -> anyhow::Result<()> {
    let v: Value = client.post(path, &serde_json::json!({})).await?;
    if json {
        return print_json(&v);
    }
    println!("{v}");
    Ok(())
}

pub async fn rollback(
    client: &ApiClient,
    name: &str,
    version: Option<u64>,
    json: bool,
) -> anyhow::Result<()> {
    let body = match version {
        Some(v) => serde_json::json!({ "version": v }),
        None => serde_json::json!({}),
    };
    let v: Value = client
        .post(&format!("/api/v1/services/{name}/rollback"), &body)
        .await?;
    if json {
        return print_json(&v);
    }
    println!("{v}");
    Ok(())
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
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    print!(
        "{}",
        table::render(&["VERSION", "IMAGE", "DEPLOYED", "BY"], &rows)
    );
    Ok(())
}

pub async fn nodes(client: &ApiClient, json: bool) -> anyhow::Result<()> {
    let info: ClusterInfo = client.get("/api/v1/cluster/info").await?;
    if json {
        return print_json(&info);
    }
    let rows: Vec<Vec<String>> = info
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.state.clone(),
                if n.drained { "yes" } else { "no" }.to_string(),
                n.instances.to_string(),
                format!("{:.1}/{:.0}", n.allocated.cpu, n.resources.cpu),
                format!(
                    "{}/{}",
                    table::bytes(n.allocated.memory_bytes),
                    table::bytes(n.resources.memory_bytes)
                ),
                n.address.clone(),
            ]
        })
        .collect();
    print!(
        "{}",
        table::render(
            &["ID", "STATE", "DRAINED", "REPLICAS", "CPU", "MEMORY", "ADDRESS"],
            &rows
        )
    );
    Ok(())
}

pub async fn token(client: &ApiClient, command: TokenCommand, json: bool) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role } => {
            let role: api::Role = role.parse().map_err(|e: String| anyhow::anyhow!(e))?;
            let v: Value = client
                .post(
                    "/api/v1/tokens",
                    &serde_json::json!({ "name": name, "role": role }),
                )
                .await?;
            if json {
                return print_json(&v);
            }
            println!("{}", v["token"].as_str().unwrap_or(""));
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
                            ["name", "role", "source"]
                                .iter()
                                .map(|k| t[*k].as_str().unwrap_or("").to_string())
                                .collect()
                        })
                        .collect()
                })
                .unwrap_or_default();
            print!("{}", table::render(&["NAME", "ROLE", "SOURCE"], &rows));
        }
        TokenCommand::Rm { name } => {
            let v: Value = client.delete(&format!("/api/v1/tokens/{name}")).await?;
            if json {
                return print_json(&v);
            }
            println!("deleted {name}");
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
            println!(
                "webhook {} added: POST /api/v1/webhooks/github",
                v["id"].as_str().unwrap_or("")
            );
            return Ok(());
        }
        Some(WebhookCommand::Rm { id }) => {
            let _: Value = client.delete(&format!("/api/v1/webhooks/{id}")).await?;
            println!("deleted {id}");
            return Ok(());
        }
        None => {}
    }
    let v: Value = client.get("/api/v1/webhooks").await?;
    if json {
        return print_json(&v);
    }
    let hooks = v["webhooks"].as_array().cloned().unwrap_or_default();
    if hooks.is_empty() {
        println!("no webhooks");
    }
    for h in hooks {
        println!("{h}");
    }
    Ok(())
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
    command: SecretsCommand,
    json: bool,
) -> anyhow::Result<()> {
    let put = |name: String, value: String| async move {
        let _: Value = client
            .put(
                &format!("/api/v1/secrets/{name}"),
                &serde_json::json!({ "value": value }),
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
            println!("stored {name}");
        }
        SecretsCommand::List => {
            let v: Value = client.get("/api/v1/secrets").await?;
            if json {
                return print_json(&v);
            }
            for name in v["secrets"].as_array().cloned().unwrap_or_default() {
                println!("{}", name.as_str().unwrap_or(""));
            }
        }
        SecretsCommand::Rm { name } => {
            let _: Value = client.delete(&format!("/api/v1/secrets/{name}")).await?;
            println!("deleted {name}");
        }
        SecretsCommand::Import { file } => {
            let text = std::fs::read_to_string(&file)?;
            let pairs = parse_env_file(&text)?;
            let count = pairs.len();
            for (k, v) in pairs {
                put(k, v).await?;
            }
            println!("stored {count} secrets from {}", file.display());
        }
    }
    Ok(())
}

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
