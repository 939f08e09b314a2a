//! Container logs: the log shim the orca binary serves as (containerd's
//! `binary://` logger) and reading what it wrote.
//!
//! The shim gets the task's stdout on fd 3 and stderr on fd 4, and tells the
//! containerd shim it is ready by closing fd 5. It writes one line per output
//! line in the CRI log format, `<RFC 3339 time> <stdout|stderr> <F|P> <text>`
//! (`P` marks a piece of an overlong line), and rotates the file at
//! [`MAX_FILE_BYTES`], keeping [`KEEP_FILES`] files. It runs as the shim's
//! child, so logs keep landing while orca itself is down.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// Size at which a log file is rotated.
pub const MAX_FILE_BYTES: u64 = 10 * 1024 * 1024;
/// Files kept per container: the live one and its rotated predecessors.
pub const KEEP_FILES: usize = 3;
/// Longest line written whole; longer ones are split into `P` pieces.
const MAX_LINE: usize = 16 * 1024;

/// Which output a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLine {
    /// RFC 3339 time, empty for lines the shim did not write (`file://` logs).
    pub time: String,
    pub stream: Stream,
    /// True for a piece of a longer line.
    pub partial: bool,
    pub text: String,
}

impl LogLine {
    /// Parses a line of the CRI format; anything else is kept as stdout text.
    pub fn parse(line: &str) -> LogLine {
        let mut parts = line.splitn(4, ' ');
        if let (Some(time), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) {
            let stream = match stream {
                "stdout" => Some(Stream::Stdout),
                "stderr" => Some(Stream::Stderr),
                _ => None,
            };
            if let (Some(stream), true, true) =
                (stream, tag == "F" || tag == "P", time.ends_with('Z'))
            {
                return LogLine {
                    time: time.to_string(),
                    stream,
                    partial: tag == "P",
                    text: parts.next().unwrap_or("").to_string(),
                };
            }
        }
        LogLine {
            time: String::new(),
            stream: Stream::Stdout,
            partial: false,
            text: line.to_string(),
        }
    }
}

/// The rotated files of `file`, oldest first, then `file` itself.
pub fn log_files(file: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = (1..KEEP_FILES)
        .rev()
        .map(|i| rotated(file, i))
        .filter(|p| p.exists())
        .collect();
    out.push(file.to_path_buf());
    out
}

fn rotated(file: &Path, i: usize) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// Removes a log file and its rotated predecessors.
pub fn remove_logs(file: &Path) {
    for p in log_files(file) {
        let _ = std::fs::remove_file(p);
    }
}

/// The last `n` lines across the rotated files.
pub fn tail(file: &Path, n: usize) -> std::io::Result<Vec<LogLine>> {
    let mut lines: Vec<String> = Vec::new();
    for path in log_files(file).iter().rev() {
        if lines.len() >= n {
            break;
        }
        match last_lines(path, n - lines.len()) {
            Ok(mut older) => {
                older.append(&mut lines);
                lines = older;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(lines.iter().map(|l| LogLine::parse(l)).collect())
}

/// The last `n` complete lines of one file, reading backwards in blocks.
fn last_lines(path: &Path, n: usize) -> std::io::Result<Vec<String>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut pos = len;
    let mut buf: Vec<u8> = Vec::new();
    const BLOCK: u64 = 64 * 1024;
    while pos > 0 {
        let start = pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (pos - start) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut block)?;
        block.extend_from_slice(&buf);
        buf = block;
        pos = start;
        // n lines need n+1 newlines unless the file start is reached.
        if buf.iter().filter(|b| **b == b'\n').count() > n {
            break;
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.split_terminator('\n').collect();
    let skip_first = pos > 0; // the first piece is a cut line
    let usable = if skip_first && !all.is_empty() {
        &all[1..]
    } else {
        &all[..]
    };
    let from = usable.len().saturating_sub(n);
    Ok(usable[from..].iter().map(|s| s.to_string()).collect())
}

/// Follows a log file across rotations, yielding lines as they are written.
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Starts at the end of the file (what exists now is for [`tail`]).
    pub fn from_end(path: &Path) -> Self {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            pending: Vec::new(),
        };
        if let Ok(mut file) = File::open(path) {
            if file.seek(SeekFrom::End(0)).is_ok() {
                f.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                f.file = Some(file);
            }
        }
        f
    }

    /// Lines written since the last call (possibly none).
    pub fn poll(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        self.drain(&mut out);
        // Rotated (or created): finish the old file, continue with the new.
        let current_inode = std::fs::metadata(&self.path).map(|m| m.ino()).ok();
        if current_inode.is_some() && current_inode != Some(self.inode) {
            if let Ok(file) = File::open(&self.path) {
                self.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
                self.file = Some(file);
                self.pending.clear();
                self.drain(&mut out);
            }
        }
        out
    }

    fn drain(&mut self, out: &mut Vec<LogLine>) {
        let Some(file) = self.file.as_mut() else {
            return;
        };
        let mut chunk = Vec::new();
        if file.read_to_end(&mut chunk).is_err() {
            return;
        }
        self.pending.extend_from_slice(&chunk);
        while let Some(i) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=i).collect();
            out.push(LogLine::parse(
                String::from_utf8_lossy(&line[..line.len() - 1]).as_ref(),
            ));
        }
    }
}

/// Polls a follower every `interval`, sending lines until the receiver goes.
pub fn follow(path: &Path, interval: Duration) -> tokio::sync::mpsc::Receiver<LogLine> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let mut follower = Follower::from_end(path);
    tokio::spawn(async move {
        loop {
            for line in follower.poll() {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    });
    rx
}

/// The log file writer shared by the stdout and stderr threads.
struct Writer {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
}

impl Writer {
    fn open(path: &Path, max: u64) -> std::io::Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let file = open_private(path)?;
        let size = file.metadata()?.len();
        Ok(Writer {
            path: path.to_path_buf(),
            file,
            size,
            max,
        })
    }

    fn write_line(&mut self, stream: Stream, partial: bool, text: &[u8]) -> std::io::Result<()> {
        let time = humantime::format_rfc3339_nanos(SystemTime::now());
        let mut line = Vec::with_capacity(text.len() + 48);
        line.extend_from_slice(
            format!(
                "{time} {} {} ",
                stream.as_str(),
                if partial { "P" } else { "F" }
            )
            .as_bytes(),
        );
        line.extend_from_slice(text);
        line.push(b'\n');
        if self.size > 0 && self.size + line.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(&line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        for i in (1..KEEP_FILES).rev() {
            let from = if i == 1 {
                self.path.clone()
            } else {
                rotated(&self.path, i - 1)
            };
            let _ = std::fs::rename(&from, rotated(&self.path, i));
        }
        self.file = open_private(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// A log file for appending, readable by its owner alone (a replica's
/// output may hold what only its operators should see).
fn open_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    // One made before files were private keeps its old mode otherwise.
    if file.metadata()?.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(file)
}

/// Copies one stream into the writer line by line until EOF.
fn pump(mut input: File, stream: Stream, writer: Arc<Mutex<Writer>>) {
    let mut buf = vec![0u8; 32 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let emit = |text: &[u8], partial: bool| {
        if let Ok(mut w) = writer.lock() {
            // A full disk must not kill the container: drop the line.
            let _ = w.write_line(stream, partial, text);
        }
    };
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &b in &buf[..n] {
            if b == b'\n' {
                emit(&line, false);
                line.clear();
            } else {
                line.push(b);
                if line.len() >= MAX_LINE {
                    emit(&line, true);
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        emit(&line, false);
    }
}

/// Runs the log shim: fd 3 = stdout, fd 4 = stderr, fd 5 = readiness.
/// Returns when both streams are closed (the task's processes are gone).
pub fn run_shim(file: &Path) -> std::io::Result<()> {
    run_shim_with(
        file,
        Path::new("/proc/self/fd/3"),
        Path::new("/proc/self/fd/4"),
        MAX_FILE_BYTES,
        true,
    )
}

/// [`run_shim`] with the inputs and rotation size given (for tests).
pub fn run_shim_with(
    file: &Path,
    stdout: &Path,
    stderr: &Path,
    max_bytes: u64,
    signal_ready: bool,
) -> std::io::Result<()> {
    let writer = Arc::new(Mutex::new(Writer::open(file, max_bytes)?));
    let out = File::open(stdout)?;
    let err = File::open(stderr)?;
    if signal_ready {
        close_ready_fd();
    }
    let w = writer.clone();
    let t_out = std::thread::spawn(move || pump(out, Stream::Stdout, w));
    let t_err = std::thread::spawn(move || pump(err, Stream::Stderr, writer));
    let _ = t_out.join();
    let _ = t_err.join();
    Ok(())
}

/// Closes fd 5, which tells containerd's shim the logger is ready.
#[allow(unsafe_code)]
fn close_ready_fd() {
    use std::os::fd::{FromRawFd, OwnedFd};
    if Path::new("/proc/self/fd/5").exists() {
        // SAFETY: fd 5 is the readiness pipe the containerd shim handed to
        // this process; nothing else here opened or owns it, and it is
        // closed exactly once, by this drop.
        drop(unsafe { OwnedFd::from_raw_fd(5) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_lines_and_raw_text() {
        let l = LogLine::parse("2026-01-01T00:00:00.000000001Z stderr F oops: a b");
        assert_eq!(l.stream, Stream::Stderr);
        assert_eq!(l.text, "oops: a b");
        assert!(!l.partial);
        let raw = LogLine::parse("just text");
        assert_eq!(
            (raw.stream, raw.text.as_str(), raw.time.as_str()),
            (Stream::Stdout, "just text", "")
        );
    }

    #[test]
    fn shim_keeps_streams_apart_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let err = dir.path().join("err");
        let mut o = String::new();
        for i in 0..200 {
            o.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&out, o).unwrap();
        std::fs::write(&err, "bad\nworse").unwrap();
        let log = dir.path().join("logs/c.log");
        run_shim_with(&log, &out, &err, 2048, false).unwrap();
        let files = log_files(&log);
        assert_eq!(files.len(), KEEP_FILES, "rotated files: {files:?}");
        for f in &files {
            assert!(std::fs::metadata(f).unwrap().len() <= 2048);
        }
        let last = tail(&log, 3).unwrap();
        assert_eq!(last.len(), 3);
        let all = tail(&log, 10_000).unwrap();
        let stdout: Vec<_> = all.iter().filter(|l| l.stream == Stream::Stdout).collect();
        assert_eq!(stdout.last().unwrap().text, "line 199");
        // Older lines went with the third rotation; what is kept is in order.
        let nums: Vec<u32> = stdout
            .iter()
            .map(|l| l.text[5..].parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1));
        let stderr: Vec<_> = all
            .iter()
            .filter(|l| l.stream == Stream::Stderr)
            .map(|l| l.text.as_str())
            .collect();
        assert!(stderr.is_empty() || stderr.contains(&"worse"), "{stderr:?}");
    }

    #[test]
    fn tail_reads_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        let mut s = String::new();
        for i in 0..20_000 {
            s.push_str(&format!(
                "2026-01-01T00:00:00Z stdout F {i:05} {}\n",
                "x".repeat(20)
            ));
        }
        std::fs::write(&log, s).unwrap();
        let t = tail(&log, 5000).unwrap();
        assert_eq!(t.len(), 5000);
        assert!(t[0].text.starts_with("15000 "));
        assert!(t[4999].text.starts_with("19999 "));
    }

    #[test]
    fn follower_sees_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("c.log");
        std::fs::write(&log, "old\n").unwrap();
        let mut f = Follower::from_end(&log);
        assert!(f.poll().is_empty());
        let mut file = OpenOptions::new().append(true).open(&log).unwrap();
        file.write_all(b"new 1\nnew").unwrap();
        let got: Vec<String> = f.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["new 1"]);
        file.write_all(b" 2\n").unwrap();
        std::fs::rename(&log, rotated(&log, 1)).unwrap();
        std::fs::write(&log, "after rotation\n").unwrap();
        let got: Vec<String> = f.poll().into_iter().map(|l| l.text).collect();
        assert_eq!(got, ["new 2", "after rotation"]);
    }
}
