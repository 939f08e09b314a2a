//! Compose files from the CLI: `orca deploy compose.yaml` deploys one as
//! a project, `orca compose convert FILE` prints its service.toml. Notes
//! go to stderr; refused keys stop both unless `--ignore-unsupported`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use api::spec::ServiceSpec;

use super::out::{self, outln};

/// `orca compose ...`.
#[derive(clap::Subcommand)]
pub enum ComposeCommand {
    /// Print the service.toml of a compose file, deploying nothing.
    Convert {
        file: PathBuf,
        #[command(flatten)]
        args: ComposeArgs,
    },
}

/// How a compose file is read.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ComposeArgs {
    /// The project (default: the file's `name`, else its directory's).
    #[arg(long)]
    pub project: Option<String>,
    /// Variables from this file instead of the `.env` beside the compose file.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Convert anyway when keys are refused, warning about each.
    #[arg(long)]
    pub ignore_unsupported: bool,
}

/// The services of compose file `path`, the notes and refusals shown.
pub fn services(path: &Path, args: &ComposeArgs) -> anyhow::Result<Vec<ServiceSpec>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
    if !is_yaml || !compose::is_compose(&text) {
        anyhow::bail!(
            "{}: not a compose file (a .yaml or .yml with services at its top); a directory with services/*/service.toml deploys too",
            path.display()
        );
    }
    let dir = std::fs::canonicalize(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    let env_file = args.env_file.clone().unwrap_or_else(|| dir.join(".env"));
    let mut env: BTreeMap<String, String> = match std::fs::read_to_string(&env_file) {
        Ok(t) => compose::dotenv::parse(&t)
            .map_err(|e| anyhow::anyhow!("{}: {e}", env_file.display()))?
            .into_iter()
            .collect(),
        Err(_) if args.env_file.is_none() => BTreeMap::new(),
        Err(e) => anyhow::bail!("{}: {e}", env_file.display()),
    };
    // The process's environment wins over the file's, as in compose.
    env.extend(std::env::vars());
    let read = |p: &Path| std::fs::read_to_string(p);
    let ctx = compose::Context {
        dir,
        env,
        project: args.project.clone(),
        read: &read,
    };
    let converted =
        compose::convert(&text, &ctx).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    for note in &converted.notes {
        out::warn(&format!("note: {note}"));
    }
    if !converted.refused.is_empty() {
        if !args.ignore_unsupported {
            anyhow::bail!(
                "{}: orca cannot take these keys (nothing deployed; --ignore-unsupported converts the rest):\n  {}",
                path.display(),
                converted.refused.join("\n  ")
            );
        }
        for r in &converted.refused {
            out::warn(&format!("warning: {r}"));
        }
    }
    Ok(converted
        .services
        .into_iter()
        .filter(|s| {
            let keep = !s.image.is_empty();
            if !keep {
                out::warn(&format!("warning: {} left out: it has no image", s.name));
            }
            keep
        })
        .collect())
}

/// `orca compose convert FILE`: the service.toml of a compose file.
pub fn convert(path: &Path, args: &ComposeArgs) -> anyhow::Result<()> {
    let services = services(path, args)?;
    outln!("{}", to_toml(&services)?)
}

/// `[[service]]` tables of `services`.
pub fn to_toml(services: &[ServiceSpec]) -> anyhow::Result<String> {
    #[derive(serde::Serialize)]
    struct File<'a> {
        service: &'a [ServiceSpec],
    }
    Ok(toml::to_string(&File { service: services })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_toml_reads_back_as_the_same_specs() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(
            &file,
            "name: shop\nservices:\n  db:\n    image: postgres:16\n    environment: {POSTGRES_PASSWORD: x}\n    volumes: [\"data:/var/lib/postgresql/data\"]\n    healthcheck: {test: [\"CMD\", \"pg_isready\"], interval: 2s}\n  web:\n    image: nginx\n    ports: [\"8080:80\", \"5353:53/udp\"]\n    depends_on: {db: {condition: service_healthy}}\nvolumes:\n  data:\n",
        )
        .unwrap();
        let specs = services(&file, &ComposeArgs::default()).unwrap();
        let text = to_toml(&specs).unwrap();
        let back =
            super::super::deploy::parse_file(&dir.path().join("shop/service.toml"), &text).unwrap();
        assert_eq!(back, specs, "{text}");
        assert!(specs.iter().all(|s| s.project == "shop"));
    }
}
