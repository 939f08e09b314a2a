//! The CLI's standard output. A reader that goes away (`orca status | head`)
//! ends the command quietly: a write to a closed pipe is [`PipeClosed`],
//! which `main` turns into exit code 141 with nothing on stderr, as a tool
//! ended by SIGPIPE would have. Nothing in the CLI prints with `println!`,
//! which panics instead.

use std::io::Write;

/// Standard output's reader is gone.
#[derive(Debug, thiserror::Error)]
#[error("standard output was closed")]
pub struct PipeClosed;

/// The exit code of a command whose output pipe closed: 128 + SIGPIPE.
pub const PIPE_CLOSED_EXIT: u8 = 141;

/// Writes `text` to standard output and flushes it.
pub fn write(text: &str) -> anyhow::Result<()> {
    write_bytes(text.as_bytes())
}

/// Writes raw bytes (log streams) to standard output and flushes them.
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    write_raw(bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::BrokenPipe => PipeClosed.into(),
        _ => anyhow::Error::new(e).context("write to standard output"),
    })
}

fn write_raw(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// A line on standard error; a closed stderr is ignored (there is nowhere
/// left to say anything).
pub fn warn(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// The command ran and wants this exit code, having said all it had to
/// (an exec'd command's own code).
#[derive(Debug, thiserror::Error)]
#[error("exit code {0}")]
pub struct ExitWith(pub u8);

/// The code `e` asks to exit with, if it is [`ExitWith`].
pub fn exit_code(e: &anyhow::Error) -> Option<u8> {
    e.downcast_ref::<ExitWith>().map(|c| c.0)
}

/// True when `e` (or what caused it) is [`PipeClosed`].
pub fn is_pipe_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.is::<PipeClosed>())
}

/// `println!` for the CLI: `outln!("{x}")?`.
macro_rules! outln {
    () => {
        $crate::cli::out::write("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::out::write(&format!("{}\n", format_args!($($arg)*)))
    };
}
pub(crate) use outln;
