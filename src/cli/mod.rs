//! Command-line parsing and dispatch. Commands that talk to a server go
//! through the API client; `image` talks to containerd directly.

mod cluster;
mod commands;
mod compose;
mod deploy;
mod events;
mod exec;
mod out;
mod run;
mod store;
mod table;
mod token;
mod volume;
mod wait;

pub use cluster::{ClusterCommand, NodeCommand};
use compose::ComposeCommand;
pub use wait::WaitArgs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "orca",
    version,
    about = "A single-binary container orchestrator on containerd"
)]
pub struct Cli {
    /// The orca API.
    #[arg(
        long,
        global = true,
        env = "ORCA_API",
        default_value = "http://127.0.0.1:6880"
    )]
    pub api: String,
    /// Bearer token for the API; without it and ORCA_TOKEN, the admin token
    /// the server wrote at its first start ($ORCA_DATA_DIR or /var/lib/orca,
    /// admin.token), if readable.
    #[arg(long, global = true, env = "ORCA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Output of read commands.
    #[arg(long, global = true, value_enum, default_value = "table")]
    pub output: Output,
    /// containerd's socket (image commands).
    #[arg(
        long,
        global = true,
        env = "ORCA_CONTAINERD",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd: PathBuf,
    /// containerd namespace (image commands).
    #[arg(long, global = true, env = "ORCA_NAMESPACE", default_value = "orca")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the control plane and this node's agent.
    Server {
        /// cluster.toml (every key has a default; a missing file means all defaults).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Join the control plane of these servers' cluster ports
        /// (HOST:6881,...) with --token from `orca cluster join-token --server`.
        #[arg(long = "join-server")]
        join_server: Option<String>,
    },
    /// Deploy DIR/services/*/service.toml and wait until every replica runs
    /// the new version, ready, with no old one left (exit 1 if it is reverted).
    Deploy {
        /// A directory with services/*/service.toml, or a compose file.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        compose: compose::ComposeArgs,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Compose files: `orca compose convert FILE` prints the service.toml.
    Compose {
        #[command(subcommand)]
        command: ComposeCommand,
    },
    /// Services and their replicas.
    Status {
        #[arg(long)]
        project: Option<String>,
    },
    /// A service's logs.
    Logs {
        name: String,
        #[arg(long)]
        tail: Option<usize>,
        /// Keep streaming new lines.
        #[arg(short, long)]
        follow: bool,
    },
    /// Set a service's replica count and wait until that many are ready.
    Scale {
        name: String,
        replicas: i64,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Stop a service (or a project, or everything).
    Stop {
        name: Option<String>,
        #[arg(long, conflicts_with = "name")]
        project: Option<String>,
        #[arg(long, conflicts_with_all = ["name", "project"])]
        all: bool,
    },
    /// Promote a canary and wait until it replaced the stable replicas.
    Promote {
        name: String,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// Roll a service back (to VERSION, or the previous one; during a
    /// canary, remove the canary) and wait until that is done.
    Rollback {
        name: String,
        #[arg(long)]
        version: Option<u64>,
        #[command(flatten)]
        wait: WaitArgs,
    },
    /// A service's versions.
    Versions { name: String },
    /// Start a run of a job (restart = "on-failure" or "never") now.
    Run {
        name: String,
        /// Follow the run to its end; fail if it failed.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds.
        #[arg(long, default_value_t = 3600)]
        timeout: u64,
    },
    /// Follow what happens: deploys, scaling, rollouts, replicas starting,
    /// exiting and getting ready, nodes joining, leaving and draining.
    Events {
        /// Only this service's events.
        #[arg(long)]
        service: Option<String>,
        /// Only this project's events.
        #[arg(long)]
        project: Option<String>,
        /// Resume after this event id (the last 1,000 events are kept).
        #[arg(long)]
        since: Option<u64>,
    },
    /// Run a command in a replica of a service (its first ready one unless
    /// --instance names one), on whichever node runs it:
    /// `orca exec web -- ls /`, or `orca exec -it web -- sh` for a shell.
    /// Exits with the command's exit code.
    Exec(exec::ExecArgs),
    /// Run a worker node: its containerd, driven by the server it joins
    /// (it dials the server, so it works from behind NAT). --token is the
    /// join token from `orca cluster join-token`, needed once, to join.
    Agent {
        /// The server's cluster port, HOST:6881 (default: agent.toml's
        /// [agent] join, or the server joined before).
        #[arg(long)]
        join: Option<String>,
        // The join token (from `orca cluster join-token`, needed once, to
        // join) is the global --token.
        /// agent.toml ([agent], [node], [containerd], [network], [cluster] data_dir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// The cluster: join tokens for new nodes.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Nodes of the cluster.
    Nodes,
    /// A node: remove it from the cluster.
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Move replicas off a node, one service at a time, each new replica
    /// ready before an old one stops; no new replicas go there.
    Drain {
        id: String,
        /// Stop what has not moved by then (default 1h).
        #[arg(long, value_parser = parse_duration)]
        deadline: Option<std::time::Duration>,
        /// Also move the node's volumes to nodes their services may run on.
        #[arg(long)]
        move_volumes: bool,
    },
    /// Place replicas on a node again (nothing moves back by itself).
    Undrain { id: String },
    /// API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Git push webhooks: list them, or add / rm one.
    Webhooks {
        #[command(subcommand)]
        command: Option<WebhookCommand>,
    },
    /// Secrets of a project, for `${secrets.KEY}` in its services' env (admin).
    Secrets {
        /// The project the secrets belong to.
        #[arg(long, global = true, default_value = "default")]
        project: String,
        #[command(subcommand)]
        command: SecretsCommand,
    },
    /// The server's store: backup (a snapshot), restore (offline).
    Store {
        #[command(subcommand)]
        command: store::StoreCommand,
    },
    /// Named volumes: ls, rm, mv, backup, restore.
    Volume {
        #[command(subcommand)]
        command: volume::VolumeCommand,
    },
    /// Images in containerd.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token; its value is shown once.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        role: String,
        /// Scope the token to one project: it changes only that project's
        /// services, and a deployer's may reference its secrets.
        #[arg(long)]
        project: Option<String>,
    },
    /// List tokens (names and roles).
    List,
    /// Delete a token.
    Rm { name: String },
}

#[derive(Subcommand)]
pub enum WebhookCommand {
    /// Redeploy SERVICE when REPO's BRANCH is pushed (deliveries signed with SECRET).
    Add {
        #[arg(long)]
        repo: String,
        #[arg(long)]
        service: String,
        #[arg(long, default_value = "main")]
        branch: String,
        #[arg(long)]
        secret: String,
    },
    /// Delete a webhook.
    Rm { id: String },
}

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Store a secret; without VALUE it is read from stdin.
    Set { name: String, value: Option<String> },
    /// List secret names (never values).
    List,
    /// Delete a secret.
    Rm { name: String },
    /// Store every KEY=VALUE of a .env file.
    Import {
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum ImageCommand {
    /// Pull an image from its registry (or a mirror) and unpack it.
    Pull {
        reference: String,
        /// Registry host reached over plain HTTP (loopback always is).
        #[arg(long)]
        insecure: Vec<String>,
    },
    /// Load an OCI-layout or `docker save` archive (for air-gapped hosts).
    Import {
        file: PathBuf,
        /// Name for an image the archive leaves unnamed.
        #[arg(long)]
        name: Option<String>,
    },
}

pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{text:?}: {e} (like 30s, 10m or 1h)"))
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Server { .. } | Command::Agent { .. }
    ));
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            out::warn(&format!("orca: cannot start the async runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if out::is_pipe_closed(&e) => ExitCode::from(out::PIPE_CLOSED_EXIT),
        Err(e) if out::exit_code(&e).is_some() => ExitCode::from(out::exit_code(&e).unwrap_or(1)),
        Err(e) => {
            out::warn(&format!("orca: {e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// orca's own log on stderr: `ORCA_LOG` filters it (default `info` for
/// the daemons, `warn` for commands); colour only on a terminal;
/// `ORCA_LOG_FORMAT=json` gives one JSON object per line.
fn init_tracing(server: bool) {
    use std::io::IsTerminal;
    let default = if server { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match std::env::var("ORCA_LOG_FORMAT").as_deref() {
        Ok("json") => builder.json().with_ansi(false).try_init(),
        _ => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // The daemons take no API token (an agent's --token is its join token).
    let daemon = matches!(cli.command, Command::Server { .. } | Command::Agent { .. });
    let (token, file) = if daemon {
        (cli.token.clone(), None)
    } else {
        token::resolve(cli.token.clone())
    };
    let looked_in = file.filter(|_| token.is_none());
    run_with(cli, token)
        .await
        .map_err(|e| token::explain_unauthorized(e, looked_in.as_deref()))
}

async fn run_with(cli: Cli, token: Option<String>) -> anyhow::Result<()> {
    let client = api::client::ApiClient::new(&cli.api, token);
    let json = cli.output == Output::Json;
    match cli.command {
        Command::Server {
            config,
            join_server,
        } => {
            let join = join_server.as_deref().map(|j| (j, cli.token.as_deref()));
            crate::server::run(config.as_deref(), join).await
        }
        Command::Deploy { dir, compose, wait } => {
            deploy::run(&client, &dir, &compose, wait, json).await
        }
        Command::Compose {
            command: ComposeCommand::Convert { file, args },
        } => compose::convert(&file, &args),
        Command::Status { project } => commands::status(&client, project.as_deref(), json).await,
        Command::Logs { name, tail, follow } => commands::logs(&client, &name, tail, follow).await,
        Command::Scale {
            name,
            replicas,
            wait,
        } => commands::scale(&client, &name, replicas, wait, json).await,
        Command::Stop { name, project, all } => {
            commands::stop(&client, name, project, all, json).await
        }
        Command::Promote { name, wait } => commands::promote(&client, &name, wait, json).await,
        Command::Rollback {
            name,
            version,
            wait,
        } => commands::rollback(&client, &name, version, wait, json).await,
        Command::Versions { name } => commands::versions(&client, &name, json).await,
        Command::Run {
            name,
            wait,
            timeout,
        } => run::run(&client, &name, wait, Duration::from_secs(timeout), json).await,
        Command::Events {
            service,
            project,
            since,
        } => {
            let follow = events::Follow {
                service,
                project,
                since,
            };
            events::run(&client, follow, json).await
        }
        Command::Exec(args) => exec::run(&client, args, json).await,
        Command::Nodes => cluster::nodes(&client, json).await,
        Command::Agent { join, config } => {
            crate::node::run_agent(config.as_deref(), join, cli.token.clone()).await
        }
        Command::Cluster { command } => cluster::cluster(&client, command, json).await,
        Command::Node {
            command: NodeCommand::Rm { id },
        } => cluster::remove_node(&client, &id, json).await,
        Command::Drain {
            id,
            deadline,
            move_volumes,
        } => cluster::drain(&client, &id, Some(deadline), move_volumes, json).await,
        Command::Undrain { id } => cluster::drain(&client, &id, None, false, json).await,
        Command::Token { command } => commands::token(&client, command, json).await,
        Command::Webhooks { command } => commands::webhooks(&client, command, json).await,
        Command::Secrets { project, command } => {
            commands::secrets(&client, &project, command, json).await
        }
        Command::Volume { command } => volume::run(&client, command, json).await,
        Command::Store { command } => store::run(&client, command).await,
        Command::Image { command } => image(&cli.containerd, &cli.namespace, command).await,
    }
}

async fn image(
    socket: &std::path::Path,
    namespace: &str,
    command: ImageCommand,
) -> anyhow::Result<()> {
    let mut options = cri::ConnectOptions::new(socket, namespace);
    if let ImageCommand::Pull { insecure, .. } = &command {
        options.registry.insecure = insecure.clone();
    }
    let cri = cri::Cri::connect(options).await?;
    match command {
        ImageCommand::Pull { reference, .. } => {
            let image = cri
                .pull(&reference)
                .await
                .with_context(|| format!("pull {reference}"))?;
            out::outln!("{} {}", image.name, image.digest)?;
        }
        ImageCommand::Import { file, name } => {
            let images = cri
                .import_archive(&file, name.as_deref())
                .await
                .with_context(|| format!("import {}", file.display()))?;
            for image in images {
                out::outln!("{} {}", image.name, image.digest)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
