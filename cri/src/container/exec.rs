//! Running a command in a container's namespaces and capturing its output
//! (non-interactive): the process inherits the container's environment,
//! user, working directory and capabilities; stdout and stderr come back
//! through FIFOs this module creates and reads.

use std::io::Read;
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
const MAX_OUTPUT: u64 = 4 * 1024 * 1024;

/// What an exec printed and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub code: u32,
    pub stdout: String,
    pub stderr: String,
}

/// Removes the FIFO directory however the exec ends.
struct FifoDir(PathBuf);
impl Drop for FifoDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Cri {
    /// Runs `args` in container `id` and returns its output; kills it after `timeout`.
    pub async fn exec(&self, id: &str, args: &[String], timeout: Duration) -> Result<ExecOutput> {
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

        let exec_id = format!("exec-{:08x}", rand::random::<u32>());
        let dir = std::env::temp_dir().join(format!("orca-{}-{}", id, exec_id));
        std::fs::create_dir_all(&dir).map_err(|e| CriError::io("create", &dir, e))?;
        let _cleanup = FifoDir(dir.clone());
        let stdout_path = dir.join("stdout");
        let stderr_path = dir.join("stderr");
        for p in [&stdout_path, &stderr_path] {
            nix::unistd::mkfifo(p.as_path(), Mode::S_IRUSR | Mode::S_IWUSR).map_err(|source| {
                CriError::Sys {
                    op: "mkfifo",
                    source,
                }
            })?;
        }
        let out_reader = spawn_reader(stdout_path.clone());
        let err_reader = spawn_reader(stderr_path.clone());

        let started = self
            .exec_start(id, &exec_id, &process, &stdout_path, &stderr_path)
            .await;
        if let Err(e) = started {
            release_reader(&stdout_path);
            release_reader(&stderr_path);
            let _ = out_reader.await;
            let _ = err_reader.await;
            return Err(e);
        }

        let mut tasks = self.tasks();
        let wait = tasks.wait(self.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: exec_id.clone(),
        }));
        let code = match tokio::time::timeout(timeout, wait).await {
            Ok(Ok(r)) => r.into_inner().exit_status,
            Ok(Err(s)) => return Err(self.unavailable_or("Tasks.Wait", id, s)),
            Err(_) => {
                let _ = self
                    .tasks()
                    .kill(self.req(KillRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.clone(),
                        signal: 9,
                        all: false,
                    }))
                    .await;
                let _ = self.delete_process(id, &exec_id).await;
                return Err(CriError::Timeout {
                    what: format!("exec in {id}"),
                    secs: timeout.as_secs(),
                });
            }
        };
        let stdout = out_reader.await.unwrap_or_default();
        let stderr = err_reader.await.unwrap_or_default();
        self.delete_process(id, &exec_id).await?;
        Ok(ExecOutput {
            code,
            stdout,
            stderr,
        })
    }

    async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: &serde_json::Value,
        stdout: &Path,
        stderr: &Path,
    ) -> Result<()> {
        let spec = prost_types::Any {
            type_url: PROCESS_TYPE_URL.to_string(),
            value: serde_json::to_vec(process).map_err(|e| CriError::content("exec process", e))?,
        };
        self.tasks()
            .exec(self.req(ExecProcessRequest {
                container_id: id.to_string(),
                stdin: String::new(),
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                terminal: false,
                spec: Some(spec),
                exec_id: exec_id.to_string(),
            }))
            .await
            .map_err(|s| self.unavailable_or("Tasks.Exec", id, s))?;
        if let Err(s) = self
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
            }))
            .await
        {
            let _ = self.delete_process(id, exec_id).await;
            return Err(self.unavailable_or("Tasks.Start", id, s));
        }
        Ok(())
    }

    async fn delete_process(&self, id: &str, exec_id: &str) -> Result<()> {
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

/// Reads a FIFO to its end on a blocking thread (opening blocks until the
/// shim opens the write side).
fn spawn_reader(path: PathBuf) -> tokio::task::JoinHandle<String> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        if let Ok(file) = std::fs::File::open(&path) {
            let _ = file.take(MAX_OUTPUT).read_to_end(&mut out);
        }
        String::from_utf8_lossy(&out).into_owned()
    })
}

/// Unblocks a reader stuck opening a FIFO nobody will write to.
fn release_reader(path: &Path) {
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
