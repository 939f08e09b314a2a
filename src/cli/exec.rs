//! `orca exec`: a command in a replica, its output collected by the
//! server; or with `-i`/`-t`, interactive over the API's WebSocket. With
//! `-t` the local terminal is put in raw mode (restored on every way out,
//! a panic included) and its size follows the window; with `-i` stdin is
//! sent until it ends.

use std::io::Read as _;

use api::attach::{AttachRequest, Input, Output, DEFAULT_COLS, DEFAULT_ROWS};
use api::client::ApiClient;
use rustix::termios::{self, OptionalActions, Termios};

use super::out::{self, outln};

/// `orca exec [-i] [-t] NAME [--instance ID] [--timeout 30s] -- CMD...`
#[derive(clap::Args, Debug)]
pub struct ExecArgs {
    /// Keep stdin open and send it to the command.
    #[arg(short, long)]
    interactive: bool,
    /// Give the command a terminal (the local one in raw mode).
    #[arg(short, long)]
    tty: bool,
    name: String,
    /// The replica, by its id from `orca status --output json`.
    #[arg(long)]
    instance: Option<String>,
    /// Kill the command after this long (default 30s, at most 1h; not
    /// with -i or -t).
    #[arg(long, value_parser = super::parse_duration)]
    timeout: Option<std::time::Duration>,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

/// Runs `args`; exits with the command's exit code.
pub async fn run(client: &ApiClient, args: ExecArgs, json: bool) -> anyhow::Result<()> {
    if args.interactive || args.tty {
        return attach(
            client,
            &args.name,
            args.instance,
            args.command,
            args.interactive,
            args.tty,
        )
        .await;
    }
    let request = api::status::ExecRequest {
        command: args.command,
        instance: args.instance,
        timeout_secs: args.timeout.map(|t| t.as_secs().max(1)),
    };
    collected(client, &args.name, request, json).await
}

/// The local terminal in raw mode until dropped.
struct RawMode(Termios);

impl RawMode {
    fn enable() -> anyhow::Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(&stdin)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&stdin, OptionalActions::Flush, &raw)?;
        Ok(RawMode(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Flush, &self.0);
    }
}

/// The terminal's size, or the defaults when stdout is not one.
fn size() -> (u16, u16) {
    termios::tcgetwinsize(std::io::stdout())
        .ok()
        .filter(|w| w.ws_col > 0 && w.ws_row > 0)
        .map_or((DEFAULT_COLS, DEFAULT_ROWS), |w| (w.ws_col, w.ws_row))
}

/// Runs `command` in a replica of `name`, interactively; exits with its
/// exit code.
async fn attach(
    client: &ApiClient,
    name: &str,
    instance: Option<String>,
    command: Vec<String>,
    stdin: bool,
    tty: bool,
) -> anyhow::Result<()> {
    if tty && !termios::isatty(std::io::stdin()) {
        anyhow::bail!("-t needs a terminal on stdin (leave it out when piping input)");
    }
    let (cols, rows) = size();
    let request = AttachRequest {
        command,
        instance,
        tty,
        cols,
        rows,
    };
    let mut session = client.attach(name, &request).await?;
    let raw = if tty { Some(RawMode::enable()?) } else { None };
    if stdin {
        forward_stdin(session.input.clone());
    } else {
        let _ = session.input.send(Input::CloseStdin).await;
    }
    let mut winch = if tty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };
    let code = loop {
        tokio::select! {
            out = session.output.recv() => match out {
                Some(Output::Stdout(b)) => write_all(&mut std::io::stdout(), &b)?,
                Some(Output::Stderr(b)) => write_all(&mut std::io::stderr(), &b)?,
                Some(Output::Exit(code)) => break Ok(code),
                Some(Output::Error(e)) => break Err(e),
                None => break Err("the session ended".to_string()),
            },
            Some(()) = async { winch.as_mut()?.recv().await } => {
                let (cols, rows) = size();
                let _ = session.input.send(Input::Resize { cols, rows }).await;
            }
        }
    };
    drop(raw);
    match code {
        Ok(0) => Ok(()),
        Ok(code) => Err(out::ExitWith(u8::try_from(code).unwrap_or(255)).into()),
        Err(e) => anyhow::bail!("exec: {e}"),
    }
}

fn write_all(to: &mut impl std::io::Write, bytes: &[u8]) -> anyhow::Result<()> {
    to.write_all(bytes)?;
    to.flush()?;
    Ok(())
}

/// Sends stdin as it comes (read on a blocking thread), then its end.
fn forward_stdin(input: tokio::sync::mpsc::Sender<Input>) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        let mut stdin = std::io::stdin().lock();
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = Input::Stdin(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if input.blocking_send(chunk).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = input.blocking_send(Input::CloseStdin);
    });
}

/// Runs a command, its output collected by the server.
async fn collected(
    client: &ApiClient,
    name: &str,
    request: api::status::ExecRequest,
    json: bool,
) -> anyhow::Result<()> {
    let path = format!("/api/v1/services/{name}/exec");
    let answer: api::status::ExecResponse = client.post(&path, &request).await?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&answer)?)?;
    } else {
        out::write(&answer.stdout)?;
        if !answer.stderr.is_empty() {
            out::warn(answer.stderr.trim_end_matches('\n'));
        }
        if answer.truncated {
            out::warn("orca: output past 1 MiB per stream was cut");
        }
        if answer.timed_out {
            out::warn(&format!(
                "orca: {} was killed at the timeout",
                answer.instance
            ));
        }
    }
    match answer.exit_code {
        0 => Ok(()),
        code => Err(out::ExitWith(u8::try_from(code).unwrap_or(255)).into()),
    }
}
