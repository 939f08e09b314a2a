//! Interactive exec: a command in a container's namespaces with its stdin,
//! stdout and stderr (or one terminal for all three) carried by channels
//! while it runs. FIFOs this module makes connect the channels to the shim;
//! blocking threads read and write them. The session ends when the command
//! exits (its exit code is the last message), or when the caller drops its
//! input, which kills the command.

use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::time::Duration;

use containerd_client::services::v1::{CloseIoRequest, KillRequest, ResizePtyRequest, WaitRequest};
use tokio::sync::mpsc;

use super::exec::{
    fifos, new_exec_id, not_started, release_reader, ExecIo, FifoDir, Started, KILLED,
};
use crate::client::Cri;
use crate::error::Result;

/// Largest chunk of output in one message.
const CHUNK: usize = 32 * 1024;
/// How long output may trail the command's exit.
const DRAIN: Duration = Duration::from_secs(2);

/// What the caller sends while the command runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachInput {
    Stdin(#[serde(with = "b64")] Vec<u8>),
    /// End of input: the command reads EOF.
    CloseStdin,
    /// The terminal's new size.
    Resize {
        cols: u16,
        rows: u16,
    },
}

/// What the command gives back; `Exit` comes last.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AttachOutput {
    Stdout(#[serde(with = "b64")] Vec<u8>),
    Stderr(#[serde(with = "b64")] Vec<u8>),
    Exit(u32),
}

/// How to run it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AttachOptions {
    /// One terminal for stdin, stdout and stderr.
    pub tty: bool,
    /// The terminal's size at the start.
    pub cols: u16,
    pub rows: u16,
}

/// The two ends of a running session.
pub struct Attached {
    pub input: mpsc::Sender<AttachInput>,
    pub output: mpsc::Receiver<AttachOutput>,
}

impl Attached {
    /// A session that is already over: `output`, then nothing.
    pub fn finished(output: Vec<AttachOutput>) -> Attached {
        let (input, _) = mpsc::channel(1);
        let (tx, rx) = mpsc::channel(output.len().max(1));
        for o in output {
            let _ = tx.try_send(o);
        }
        Attached { input, output: rx }
    }
}

/// Bytes as base64 in text encodings (the cluster's wire is JSON).
mod b64 {
    use base64::Engine as _;

    pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text: String = serde::Deserialize::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(serde::de::Error::custom)
    }
}

/// The process spec for a terminal: its size, and `TERM` unless set.
fn with_terminal(mut process: serde_json::Value, opts: AttachOptions) -> serde_json::Value {
    process["terminal"] = serde_json::json!(true);
    process["consoleSize"] = serde_json::json!({
        "height": opts.rows.max(1),
        "width": opts.cols.max(1),
    });
    let env = process["env"].as_array().cloned().unwrap_or_default();
    if !env
        .iter()
        .any(|e| e.as_str().is_some_and(|e| e.starts_with("TERM=")))
    {
        let mut env = env;
        env.push(serde_json::json!("TERM=xterm"));
        process["env"] = serde_json::Value::Array(env);
    }
    process
}

impl Cri {
    /// Starts `args` in container `id` and attaches to it. A command the
    /// runtime cannot start gives its message on stderr and exit code 127
    /// or 126, as a shell would.
    pub async fn attach(&self, id: &str, args: &[String], opts: AttachOptions) -> Result<Attached> {
        let mut process = self.exec_process(id, args).await?;
        if opts.tty {
            process = with_terminal(process, opts);
        }
        let exec_id = new_exec_id();
        let (dir, [stdin_path, stdout_path, stderr_path]) =
            fifos(id, &exec_id, ["stdin", "stdout", "stderr"])?;
        let cleanup = FifoDir(dir);
        let (out_tx, out_rx) = mpsc::channel(64);
        let mut readers = vec![spawn_reader(
            stdout_path.clone(),
            out_tx.clone(),
            AttachOutput::Stdout,
        )];
        if !opts.tty {
            readers.push(spawn_reader(
                stderr_path.clone(),
                out_tx.clone(),
                AttachOutput::Stderr,
            ));
        }
        let (stdin_tx, stdin_rx) = mpsc::channel::<Vec<u8>>(64);
        let writer = spawn_writer(stdin_path.clone(), stdin_rx);
        let io = ExecIo {
            stdin: Some(&stdin_path),
            stdout: &stdout_path,
            stderr: (!opts.tty).then_some(stderr_path.as_path()),
            terminal: opts.tty,
        };
        if let Err(e) = self.exec_start(id, &exec_id, &process, io).await {
            release_reader(&stdout_path);
            if !opts.tty {
                release_reader(&stderr_path);
            }
            release_writer(&stdin_path);
            drop(stdin_tx);
            for r in readers {
                let _ = r.await;
            }
            let _ = writer.await;
            return match e {
                Started::Refused(message) => {
                    let out = not_started(message);
                    Ok(Attached::finished(vec![
                        AttachOutput::Stderr(out.stderr.into_bytes()),
                        AttachOutput::Exit(out.code),
                    ]))
                }
                Started::Failed(e) => Err(e),
            };
        }
        let (in_tx, in_rx) = mpsc::channel(64);
        let session = Session {
            cri: self.clone(),
            id: id.to_string(),
            exec_id,
            stdin: Some(stdin_tx),
            writer: Some(writer),
            readers,
            out: out_tx,
            _cleanup: cleanup,
        };
        tokio::spawn(session.run(in_rx));
        Ok(Attached {
            input: in_tx,
            output: out_rx,
        })
    }
}

/// One running session, driven by its task until the command exits.
struct Session {
    cri: Cri,
    id: String,
    exec_id: String,
    /// To the stdin writer; dropped at end of input.
    stdin: Option<mpsc::Sender<Vec<u8>>>,
    writer: Option<tokio::task::JoinHandle<()>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    out: mpsc::Sender<AttachOutput>,
    _cleanup: FifoDir,
}

impl Session {
    async fn run(mut self, mut input: mpsc::Receiver<AttachInput>) {
        let mut tasks = self.cri.tasks();
        let wait = tasks.wait(self.cri.req(WaitRequest {
            container_id: self.id.clone(),
            exec_id: self.exec_id.clone(),
        }));
        tokio::pin!(wait);
        let mut open = true;
        let waited = loop {
            tokio::select! {
                waited = &mut wait => break waited,
                msg = input.recv(), if open => match msg {
                    Some(msg) => self.take(msg).await,
                    None => {
                        // The caller is gone: so is the command.
                        open = false;
                        self.kill().await;
                    }
                },
            }
        };
        self.stdin = None;
        let readers = futures::future::join_all(std::mem::take(&mut self.readers));
        // A child the command left behind may hold the output open.
        let _ = tokio::time::timeout(DRAIN, readers).await;
        let code = match waited {
            Ok(r) => r.into_inner().exit_status,
            Err(s) => {
                let message = format!("lost the command: {}", s.message());
                let _ = self
                    .out
                    .send(AttachOutput::Stderr(message.into_bytes()))
                    .await;
                KILLED
            }
        };
        let _ = self.out.send(AttachOutput::Exit(code)).await;
        if let Err(e) = self.cri.delete_process(&self.id, &self.exec_id).await {
            tracing::debug!(id = %self.id, error = %e, "exec process not deleted");
        }
    }

    async fn take(&mut self, msg: AttachInput) {
        match msg {
            AttachInput::Stdin(bytes) => {
                if let Some(tx) = &self.stdin {
                    let _ = tx.send(bytes).await;
                }
            }
            AttachInput::CloseStdin => {
                // The writer closes its end once what was sent is written;
                // the shim holds the FIFO open until told stdin is over.
                // Apart from the session's loop: a command that does not
                // read must not hold up its own exit or a kill.
                self.stdin = None;
                let writer = self.writer.take();
                let (cri, id, exec_id) = (self.cri.clone(), self.id.clone(), self.exec_id.clone());
                tokio::spawn(async move {
                    if let Some(writer) = writer {
                        let _ = writer.await;
                    }
                    close_stdin(&cri, &id, &exec_id).await;
                });
            }
            AttachInput::Resize { cols, rows } => {
                let resized = self
                    .cri
                    .tasks()
                    .resize_pty(self.cri.req(ResizePtyRequest {
                        container_id: self.id.clone(),
                        exec_id: self.exec_id.clone(),
                        width: u32::from(cols.max(1)),
                        height: u32::from(rows.max(1)),
                    }))
                    .await;
                if let Err(s) = resized {
                    tracing::debug!(id = %self.id, error = %s.message(), "resize failed");
                }
            }
        }
    }

    async fn kill(&self) {
        let _ = self
            .cri
            .tasks()
            .kill(self.cri.req(KillRequest {
                container_id: self.id.clone(),
                exec_id: self.exec_id.clone(),
                signal: 9,
                all: false,
            }))
            .await;
        close_stdin(&self.cri, &self.id, &self.exec_id).await;
    }
}

/// Tells the shim that the exec's stdin is over (it holds the FIFO open
/// until then), so the command reads EOF.
async fn close_stdin(cri: &Cri, id: &str, exec_id: &str) {
    let closed = cri
        .tasks()
        .close_io(cri.req(CloseIoRequest {
            container_id: id.to_string(),
            exec_id: exec_id.to_string(),
            stdin: true,
        }))
        .await;
    if let Err(s) = closed {
        tracing::debug!(id, error = %s.message(), "stdin not closed");
    }
}

/// Reads a FIFO to its end on a blocking thread (opening blocks until the
/// shim opens the write side), sending each chunk as `kind`.
fn spawn_reader(
    path: PathBuf,
    out: mpsc::Sender<AttachOutput>,
    kind: fn(Vec<u8>) -> AttachOutput,
) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let Ok(mut file) = std::fs::File::open(&path) else {
            return;
        };
        let mut buf = vec![0u8; CHUNK];
        loop {
            match file.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out.blocking_send(kind(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Writes what comes on `input` into a FIFO on a blocking thread (opening
/// blocks until the shim opens the read side); closes it when `input` ends.
fn spawn_writer(path: PathBuf, mut input: mpsc::Receiver<Vec<u8>>) -> tokio::task::JoinHandle<()> {
    tokio::task::spawn_blocking(move || {
        let Ok(mut file) = std::fs::OpenOptions::new().write(true).open(&path) else {
            return;
        };
        while let Some(bytes) = input.blocking_recv() {
            if file.write_all(&bytes).is_err() {
                return;
            }
        }
    })
}

/// Unblocks a writer stuck opening a FIFO nobody will read.
fn release_writer(path: &std::path::Path) {
    use std::os::unix::fs::OpenOptionsExt;
    // A non-blocking open for reading always succeeds, and lets a blocked
    // open for writing through; the writer then finds no reader.
    let _ = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_terminal_gets_its_size_and_a_term() {
        let opts = AttachOptions {
            tty: true,
            cols: 100,
            rows: 40,
        };
        let p = with_terminal(serde_json::json!({"env": ["PATH=/bin"]}), opts);
        assert_eq!(p["terminal"], true);
        assert_eq!(
            p["consoleSize"],
            serde_json::json!({"height": 40, "width": 100})
        );
        assert_eq!(p["env"], serde_json::json!(["PATH=/bin", "TERM=xterm"]));
        let p = with_terminal(serde_json::json!({"env": ["TERM=vt100"]}), opts);
        assert_eq!(p["env"], serde_json::json!(["TERM=vt100"]));
    }

    #[test]
    fn bytes_cross_a_text_encoding_as_base64() {
        let input = AttachInput::Stdin(vec![0, 255, b'\n']);
        let text = serde_json::to_string(&input).unwrap();
        assert_eq!(text, r#"{"Stdin":"AP8K"}"#);
        assert_eq!(serde_json::from_str::<AttachInput>(&text).unwrap(), input);
    }
}
