//! Command-line parsing and the commands that need no server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "orca",
    version,
    about = "A single-binary container orchestrator on containerd"
)]
struct Cli {
    /// containerd's socket.
    #[arg(
        long,
        global = true,
        env = "ORCA_CONTAINERD",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd: PathBuf,
    /// containerd namespace for everything orca creates.
    #[arg(long, global = true, env = "ORCA_NAMESPACE", default_value = "orca")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Images in containerd.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Pull an image from its registry (or a mirror) and unpack it.
    Pull {
        /// Image reference, e.g. nginx:alpine.
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

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("orca: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("orca: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ORCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Image { command } => {
            let mut options = cri::ConnectOptions::new(&cli.containerd, &cli.namespace);
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
                    println!("{} {}", image.name, image.digest);
                }
                ImageCommand::Import { file, name } => {
                    let images = cri
                        .import_archive(&file, name.as_deref())
                        .await
                        .with_context(|| format!("import {}", file.display()))?;
                    for image in images {
                        println!("{} {}", image.name, image.digest);
                    }
                }
            }
        }
    }
    Ok(())
}
