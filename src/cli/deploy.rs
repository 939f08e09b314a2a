//! `orca deploy`: finds `DIR/services/<project>/service.toml`, posts the
//! services, then waits for the version each changed service rolls out to
//! (see `wait`).

use std::path::{Path, PathBuf};

use anyhow::Context;
use api::client::{ApiClient, ClientError};
use api::spec::{DeployRequest, DeployResponse, ServiceSpec};

use super::out::{self, outln};
use super::wait::Target;
use super::WaitArgs;

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

/// Posts the services under `dir` (or of the compose file `dir` names),
/// then waits for the version each changed service rolls out to.
pub async fn run(
    client: &ApiClient,
    dir: &Path,
    from: &super::compose::ComposeArgs,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let services = if dir.is_file() {
        super::compose::services(dir, from)?
    } else {
        let mut services = Vec::new();
        for file in discover(dir)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("read {}", file.display()))?;
            services.extend(parse_file(&file, &text)?);
        }
        services
    };
    post_and_wait(client, services, wait, json).await
}

/// Posts `services`, then waits for the version each changed one rolls
/// out to.
pub async fn post_and_wait(
    client: &ApiClient,
    services: Vec<ServiceSpec>,
    wait: WaitArgs,
    json: bool,
) -> anyhow::Result<()> {
    let count = services.len();
    let response: DeployResponse = match client
        .post("/api/v1/deploy", &DeployRequest { services })
        .await
    {
        Ok(r) => r,
        Err(ClientError::Api { message, .. }) => anyhow::bail!("{message}"),
        Err(e) => return Err(e.into()),
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&response)?)?;
    } else {
        for n in &response.deployed {
            match response.versions.get(n) {
                Some(v) => outln!("{n}: deploying version {v}")?,
                None => outln!("{n}: deploying")?,
            }
        }
        for n in &response.unchanged {
            outln!("{n}: unchanged")?;
        }
        for e in &response.errors {
            out::warn(&format!("error: {e}"));
        }
    }
    if !response.errors.is_empty() {
        anyhow::bail!(
            "{} of {count} services failed to deploy",
            response.errors.len()
        );
    }
    if wait.detach {
        return Ok(());
    }
    let targets: Vec<Target> = response
        .deployed
        .iter()
        .filter_map(|name| {
            Some(Target {
                service: name.clone(),
                version: *response.versions.get(name)?,
            })
        })
        .collect();
    if targets.is_empty() {
        return Ok(());
    }
    super::wait::wait(client, &targets, wait.timeout(), json).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_example_deploys_as_written() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        let files = discover(&root).unwrap();
        assert_eq!(files.len(), 1);
        let text = std::fs::read_to_string(&files[0]).unwrap();
        let specs = parse_file(&files[0], &text).unwrap();
        assert_eq!(
            (specs[0].name.as_str(), specs[0].project.as_str()),
            ("web", "demo")
        );
        specs[0].validate().unwrap();
    }

    #[test]
    fn tls_in_service_toml() {
        let text = r#"
[[service]]
name = "shop"
image = "web:v1"
domain = "shop.example.com"
tls = { cert = "/etc/orca/certs/shop.pem", key = "/etc/orca/certs/shop.key" }
"#;
        let specs = parse_file(Path::new("/x/services/p/service.toml"), text).unwrap();
        assert_eq!(
            specs[0].tls,
            Some(api::spec::TlsSpec::Files(api::spec::TlsFiles {
                cert: "/etc/orca/certs/shop.pem".into(),
                key: "/etc/orca/certs/shop.key".into(),
            }))
        );
        let acme = text.replace(
            r#"{ cert = "/etc/orca/certs/shop.pem", key = "/etc/orca/certs/shop.key" }"#,
            r#""acme""#,
        );
        let specs = parse_file(Path::new("/x/services/p/service.toml"), &acme).unwrap();
        assert_eq!(
            specs[0].tls,
            Some(api::spec::TlsSpec::Mode(api::spec::TlsMode::Acme))
        );
    }

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
