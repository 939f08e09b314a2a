//! Running a command in a container's namespaces and capturing its output
//! (non-interactive): the process inherits the container's environment,
//! user, working directory and capabilities; stdout and stderr come back
//! through FIFOs this module creates and reads. Output past [`MAX_OUTPUT`]
//! per stream is read and dropped (the command is not cut off), and the
//! answer says so; a command the runtime cannot start answers like a shell
//! would (127 not found, 126 otherwise) with the runtime's message.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use containerd_client::services::v1::{
    DeleteProcessRequest, ExecProcessRequest, KillRequest, StartRequest, WaitRequest,
};
use nix::sys::stat::Mode;

use crate::client::Cri;
use crate::error::{CriError, Result};

const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Output kept per stream.
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Exit code of a command killed at its timeout (128 + SIGKILL).
pub const KILLED: u32 = 137;

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ExecOutput {
    pub code: u32,
    pub stdout: String,
    pub stderr: String,
    /// Some output was past [`MAX_OUTPUT`] and is not here.
    pub truncated: bool,
    /// Killed at the timeout (`code` is then [`KILLED`]).
    pub timed_out: bool,
}

/// One stream as read: what was kept, and whether more was dropped.
type Read = (String, bool);

/// Removes the FIFO directory however the exec ends.
pub(super) struct FifoDir(pub PathBuf);
impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cri {
    /// Runs `args` in container `id` and returns its output; kills it after `timeout`.
    pub async fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<ExecOutput> {
        let process = self.exec_process(id, args).await?;

        let exec_id = new_exec_id();
        let (dir, [stdout_path, stderr_path]) = fifos(id, &exec_id, ["stdout", "stderr"])?;
        let _cleanup = FifoDir(dir);
        let out_reader = spawn_reader(stdout_path.clone());
        let err_reader = spawn_reader(stderr_path.clone());

        let io = ExecIo {
            stdin: None,
            stdout: &stdout_path,
            stderr: Some(&stderr_path),
            terminal: false,
        };
        let started = self.exec_start(id, &exec_id, &process, io).await;
        if let Err(e) = started {
            release_reader(&stdout_path);
            release_reader(&stderr_path);
            let _ = out_reader.await;
            let _ = err_reader.await;
            return match e {
                Started::Refused(message) => Ok(not_started(message)),
                Started::Failed(e) => Err(e),
            };
        }

        let (code, timed_out) = self.wait_or_kill(id, &exec_id, timeout).await?;
        // A child the command left behind may hold the pipes open: what
        // came by then is the output.
        let collect = async { (out_reader.await, err_reader.await) };
        let (stdout, stderr) = match tokio::time::timeout(Duration::from_secs(2), collect).await {
            Ok((o, e)) => (o.unwrap_or_default(), e.unwrap_or_default()),
            Err(_) => Default::default(),
        };
        self.delete_process(id, &exec_id).await?;
        Ok(ExecOutput {
            code,
            truncated: stdout.1 || stderr.1,
            stdout: stdout.0,
            stderr: stderr.0,
            timed_out,
        })
    }

    /// The exec's exit code, or after `timeout` a SIGKILL and [`KILLED`]
    /// (then a short wait for it to be gone); and whether it timed out.
    async fn wait_or_kill(
        &self,
        id: &str,
        exec_id: &str,
        timeout: Duration,
    ) -> Result<(u32, bool)> {
        let wait_request = || {
            self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            })
        };
        let mut tasks = self.tasks();
        match tokio::time::timeout(timeout, tasks.wait(wait_request())).await {
            Ok(Ok(r)) => Ok((r.into_inner().exit_status, false)),
            Ok(Err(s)) => Err(self.unavailable_or("Tasks.Wait", id, s)),
            Err(_) => {
                let _ = self
                    .tasks()
                    .kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                        signal: 9,
                        all: false,
                    }))
                    .await;
                let mut tasks = self.tasks();
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), tasks.wait(wait_request())).await;
                Ok((KILLED, true))
            }
        }
    }

    /// The process spec of container `id` with `args` as its command.
    pub(super) async fn exec_process(
        &self,
        id: &str,
        args: &[String],
    ) -> Result<serde_json::Value> {
        if args.is_empty() {
            return Err(CriError::InvalidConfig {
                field: "exec",
                reason: "empty command".into(),
            });
        }
        let container = self.container_record(id).await?;
        let spec: serde_json::Value = container
            .spec
            .as_ref()
            .and_then(|a| serde_json::from_slice(&a.value).ok())
            .ok_or_else(|| CriError::content(id, "container has no readable spec"))?;
        let mut process = spec.get("process").cloned().unwrap_or_default();
        process["args"] = serde_json::json!(args);
        process["terminal"] = serde_json::json!(false);
        Ok(process)
    }

    pub(super) async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        io: ExecIo<'_>,
    ) -> std::result::Result<(), Started> {
        let spec = prost_types::Any {
            type_url: PROCESS_TYPE_URL.to_string(),
            value: serde_json::to_vec(process)
                .map_err(|e| Started::Failed(CriError::content("exec process", e)))?,
        };
        self.tasks()
            .exec(
                self.req(ExecProcessRequest {
                    container_id: id.to_string(),
                    stdin: io
                        .stdin
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    stdout: io.stdout.display().to_string(),
                    stderr: io
                        .stderr
                        .map(|p| p.display().to_string())
                        .unwrap_or_default(),
                    terminal: io.terminal,
                    spec: Some(spec),
                    exec_id: exec_id.to_string(),
                }),
            )
            .await
            .map_err(|s| Started::Failed(self.unavailable_or("Tasks.Exec", id, s)))?;
        if let Err(s) = self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            let _ = self.delete_process(id, exec_id).await;
            // The runtime's refusal (no such binary, not executable) is
            // the command's outcome; containerd gone is a failure.
            return Err(match s.code() {
                tonic::Code::Unknown | tonic::Code::FailedPrecondition => {
                    Started::Refused(s.message().to_string())
                }
                _ => Started::Failed(self.unavailable_or("Tasks.Start", id, s)),
            });
        }
        Ok(())
    }

    pub(super) async fn delete_process(&self, id: &str, exec_id: &str) -> Result<()> {
        match self
            .tasks()
            .delete_process(self.req(DeleteProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
            Err(s) => Err(self.unavailable_or("Tasks.DeleteProcess", id, s)),
        }
    }
}

/// A new exec id, unique within its container.
pub(super) fn new_exec_id() -> String {
    format!("exec-{:08x}", rand::random::<u32>())
}

/// A fresh directory for exec `exec_id` of `id` with one FIFO per name.
pub(super) fn fifos<const N: usize>(
    id: &str,
    exec_id: &str,
    names: [&str; N],
) -> Result<(PathBuf, [PathBuf; N])> {
    let dir = std::env::temp_dir().join(format!("orca-{}-{}", id, exec_id));
    std::fs::create_dir_all(&dir).map_err(|e| CriError::io("create", &dir, e))?;
    let paths = names.map(|n| dir.join(n));
    for p in &paths {
        if let Err(source) = nix::unistd::mkfifo(p.as_path(), Mode::S_IRUSR | Mode::S_IWUSR) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(CriError::Sys {
                op: "mkfifo",
                source,
            });
        }
    }
    Ok((dir, paths))
}

/// Where an exec's streams go (FIFO paths), and whether it has a TTY.
pub(super) struct ExecIo<'a> {
    pub stdin: Option<&'a Path>,
    pub stdout: &'a Path,
    /// None with a TTY: the terminal carries both streams.
    pub stderr: Option<&'a Path>,
    pub terminal: bool,
}

/// Why an exec did not start.
pub(super) enum Started {
    /// The runtime could not start the command: its message.
    Refused(String),
    Failed(CriError),
}

/// The answer for a command the runtime could not start, as a shell gives it.
pub(super) fn not_started(message: String) -> ExecOutput {
    let missing = ["not found", "no such file"]
        .iter()
        .any(|m| message.to_lowercase().contains(m));
    ExecOutput {
        code: if missing { 127 } else { 126 },
        stderr: message,
        ..Default::default()
    }
}

/// Reads a FIFO to its end on a blocking thread (opening blocks until the
/// shim opens the write side), keeping the first [`MAX_OUTPUT`] bytes.
fn spawn_reader(path: PathBuf) -> tokio::task::JoinHandle<Read> {
    tokio::task::spawn_blocking(move || match std::fs::File::open(&path) {
        Ok(file) => read_capped(file, MAX_OUTPUT),
        Err(_) => Default::default(),
    })
}

/// The first `cap` bytes of `from` (lossy UTF-8), and whether there was more;
/// the rest is read to its end and dropped.
fn read_capped(from: impl std::io::Read, cap: usize) -> Read {
    let mut kept = Vec::new();
    let mut reader = from.take(cap as u64);
    let _ = reader.read_to_end(&mut kept);
    let dropped = std::io::copy(&mut reader.into_inner(), &mut std::io::sink()).unwrap_or(0);
    (String::from_utf8_lossy(&kept).into_owned(), dropped > 0)
}

/// Unblocks a reader stuck opening a FIFO nobody will write to.
pub(super) fn release_reader(path: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    for _ in 0..50 {
        // Non-blocking open for writing succeeds only once a reader waits.
        if std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .is_ok()
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_past_the_cap_is_dropped_and_said() {
        assert_eq!(read_capped(&b"hello"[..], 5), ("hello".into(), false));
        assert_eq!(read_capped(&b"hello!"[..], 5), ("hello".into(), true));
        assert_eq!(read_capped(&b""[..], 5), (String::new(), false));
    }

    #[test]
    fn a_command_that_cannot_start_answers_like_a_shell() {
        let missing = not_started("exec: \"nope\": executable file not found in $PATH".into());
        assert_eq!(missing.code, 127);
        assert!(missing.stderr.contains("nope"));
        assert_eq!(not_started("permission denied".into()).code, 126);
    }
}
