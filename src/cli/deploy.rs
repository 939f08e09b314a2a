//! `orca deploy`: finds `DIR/services/<project>/service.toml`, posts the
//! services, then follows their status until every replica runs or one
//! fails. Progress is printed as a line per change, which reads the same on
//! a terminal and in a CI log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use api::client::{ApiClient, ClientError};
use api::spec::{DeployRequest, DeployResponse, ServiceSpec};
use api::status::{ServiceState, StatusResponse};

/// The service.toml files under `dir`, sorted.
pub fn discover(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let services = dir.join("services");
    let mut files = Vec::new();
    let entries =
        std::fs::read_dir(&services).with_context(|| format!("read {}", services.display()))?;
    for entry in entries {
        let path = entry?.path().join("service.toml");
        if path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    if files.is_empty() {
        anyhow::bail!("no services/*/service.toml under {}", dir.display());
    }
    Ok(files)
}

/// The services of one service.toml; `project` defaults to its directory's name.
pub fn parse_file(path: &Path, text: &str) -> anyhow::Result<Vec<ServiceSpec>> {
    let project = path
        .parent()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "default".into());
    let mut doc: toml::Table =
        toml::from_str(text).with_context(|| format!("parse {}", path.display()))?;
    if let Some(unknown) = doc.keys().find(|k| *k != "service") {
        anyhow::bail!(
            "{}: unknown key {unknown:?} (expected [[service]] tables)",
            path.display()
        );
    }
    let list = match doc.remove("service") {
        Some(toml::Value::Array(a)) => a,
        Some(_) => anyhow::bail!("{}: `service` must be [[service]] tables", path.display()),
        None => anyhow::bail!("{}: no [[service]] in it", path.display()),
    };
    let mut out = Vec::new();
    for mut item in list {
        if let toml::Value::Table(t) = &mut item {
            t.entry("project")
                .or_insert_with(|| toml::Value::String(project.clone()));
        }
        let spec: ServiceSpec = item
            .try_into()
            .with_context(|| format!("in {}", path.display()))?;
        out.push(spec);
    }
    Ok(out)
}

pub async fn run(
    client: &ApiClient,
    dir: &Path,
    no_wait: bool,
    timeout: u64,
    json: bool,
) -> anyhow::Result<()> {
    let mut services = Vec::new();
    for file in discover(dir)? {
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("read {}", file.display()))?;
        services.extend(parse_file(&file, &text)?);
    }
    let names: Vec<(String, String)> = services
        .iter()
        .map(|s| (s.name.clone(), s.project.clone()))
        .collect();
    let response: DeployResponse = match client
        .post("/api/v1/deploy", &DeployRequest { services })
        .await
    {
        Ok(r) => r,
        Err(ClientError::Api { message, .. }) => anyhow::bail!("{message}"),
        Err(e) => return Err(e.into()),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&response)?);
    } else {
        for n in &response.deployed {
            println!("{n}: deploying");
        }
        for n in &response.unchanged {
            println!("{n}: unchanged");
        }
        for e in &response.errors {
            eprintln!("error: {e}");
        }
    }
    if !response.errors.is_empty() {
        anyhow::bail!(
            "{} of {} services failed to deploy",
            response.errors.len(),
            names.len()
        );
    }
    if no_wait || response.deployed.is_empty() {
        return Ok(());
    }
    follow(
        client,
        &response.deployed,
        Duration::from_secs(timeout),
        json,
    )
    .await
}

/// Polls status and prints each change until every service runs.
async fn follow(
    client: &ApiClient,
    names: &[String],
    timeout: Duration,
    json: bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let status: StatusResponse = client.get("/api/v1/status").await?;
        let mut done = 0;
        for name in names {
            let Some(s) = status.services.iter().find(|s| &s.name == name) else {
                continue;
            };
            let line = format!(
                "{}: {}/{} running ({}){}",
                s.name,
                s.running_replicas,
                s.replicas,
                serde_json::to_value(s.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                s.message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            if last.get(name) != Some(&line) {
                if !json {
                    println!("{line}");
                }
                last.insert(name.clone(), line);
            }
            match s.status {
                ServiceState::Running => done += 1,
                ServiceState::Failed => anyhow::bail!(
                    "{} failed: {}",
                    s.name,
                    s.message
                        .clone()
                        .unwrap_or_else(|| "replicas keep exiting".into())
                ),
                _ => {}
            }
        }
        if done == names.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!("not every replica is running after {}s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_toml_twin_of_the_json() {
        let text = r#"
[[service]]
name = "web"
image = "nginx:alpine"
replicas = 2
port = 80
health = "/healthz"
env = { KEY = "v" }
resources = { memory = "64Mi", cpu = 0.5 }

[[service]]
name = "worker"
project = "other"
image = "app:v1"
command = ["run", "--fast"]
"#;
        let specs = parse_file(Path::new("/x/services/shop/service.toml"), text).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].project, "shop");
        assert_eq!(specs[0].replicas, 2);
        assert_eq!(
            specs[0].resources.as_ref().unwrap().memory.as_deref(),
            Some("64Mi")
        );
        assert_eq!(specs[1].project, "other");
        let json: ServiceSpec =
            serde_json::from_value(serde_json::to_value(&specs[0]).unwrap()).unwrap();
        assert_eq!(json, specs[0]);
    }

    #[test]
    fn bad_files_say_where() {
        let p = Path::new("/x/services/shop/service.toml");
        let e = parse_file(
            p,
            "[[service]]\nname = \"web\"\nimage = \"x\"\nreplica = 2\n",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("replica"), "{e:#}");
        assert!(parse_file(p, "[[servce]]\nname = \"web\"\n").is_err());
        assert!(parse_file(p, "").is_err());
    }

    #[test]
    fn discovers_service_files() {
        let dir = tempfile::tempdir().unwrap();
        for p in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join("services").join(p)).unwrap();
            std::fs::write(dir.path().join("services").join(p).join("service.toml"), "").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("services/empty")).unwrap();
        assert_eq!(discover(dir.path()).unwrap().len(), 2);
        assert!(discover(&dir.path().join("none")).is_err());
    }
}
