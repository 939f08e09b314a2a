//! Interactive exec over a WebSocket: `GET /api/v1/services/{name}/exec`
//! with an upgrade. The query names the command (`command`, repeated, one
//! per argument), the replica (`instance`), a terminal (`tty=true`) and its
//! size (`cols`, `rows`). Then each binary message starts with its channel:
//!
//! - client to server: `0` stdin (an empty one closes stdin), `4` a resize
//!   (`{"cols":N,"rows":N}`);
//! - server to client: `1` stdout, `2` stderr, `3` the end, last of all
//!   (`{"exit_code":N}`, or `{"error":"..."}` when the session broke).
//!
//! The numbers are Kubernetes' exec channels. Closing the socket kills the
//! command. Both ends of the socket live here: the server's and the CLI's.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::request::query_pairs;
use crate::status::ExecRequest;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const END: u8 = 3;
const RESIZE: u8 = 4;

/// Terminal size when the query gives none.
pub const DEFAULT_COLS: u16 = 80;
pub const DEFAULT_ROWS: u16 = 24;

/// What an interactive exec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachRequest {
    pub command: Vec<String>,
    pub instance: Option<String>,
    pub tty: bool,
    pub cols: u16,
    pub rows: u16,
}

impl AttachRequest {
    /// From the upgrade request's query, checked as a plain exec's body is.
    pub fn from_query(query: Option<&str>) -> Result<AttachRequest, ApiError> {
        let mut out = AttachRequest {
            command: Vec::new(),
            instance: None,
            tty: false,
            cols: DEFAULT_COLS,
            rows: DEFAULT_ROWS,
        };
        let size = |k: &str, v: &str| {
            v.parse::<u16>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ApiError::bad_request(format!("invalid {k} {v:?}: 1 to 65535")))
        };
        for (k, v) in query_pairs(query) {
            match k.as_str() {
                "command" => out.command.push(v),
                "instance" => out.instance = Some(v),
                "tty" => {
                    out.tty = match v.as_str() {
                        "true" | "1" | "" => true,
                        "false" | "0" => false,
                        _ => return Err(ApiError::bad_request(format!("invalid tty {v:?}"))),
                    }
                }
                "cols" => out.cols = size("cols", &v)?,
                "rows" => out.rows = size("rows", &v)?,
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown parameter {k:?} (command, instance, tty, cols, rows)"
                    )))
                }
            }
        }
        ExecRequest {
            command: out.command.clone(),
            instance: out.instance.clone(),
            timeout_secs: None,
        }
        .check()?;
        Ok(out)
    }

    /// The query that asks for this (the inverse of [`Self::from_query`]).
    pub fn to_query(&self) -> String {
        let mut pairs: Vec<(&str, String)> = self
            .command
            .iter()
            .map(|c| ("command", c.clone()))
            .collect();
        if let Some(i) = &self.instance {
            pairs.push(("instance", i.clone()));
        }
        pairs.push(("tty", self.tty.to_string()));
        pairs.push(("cols", self.cols.to_string()));
        pairs.push(("rows", self.rows.to_string()));
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", percent_encode(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What the client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Stdin(Bytes),
    CloseStdin,
    Resize { cols: u16, rows: u16 },
}

/// What the server sends; `Exit` or `Error` is the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit(u32),
    Error(String),
}

#[derive(Serialize, Deserialize)]
struct Size {
    cols: u16,
    rows: u16,
}

#[derive(Serialize, Deserialize)]
struct End {
    #[serde(skip_serializing_if = "Option::is_none", default)]
    exit_code: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    error: Option<String>,
}

fn framed(channel: u8, body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + 1);
    out.push(channel);
    out.extend_from_slice(body);
    Bytes::from(out)
}

impl Input {
    pub fn encode(&self) -> Bytes {
        match self {
            Input::Stdin(b) => framed(STDIN, b),
            Input::CloseStdin => framed(STDIN, &[]),
            Input::Resize { cols, rows } => {
                let size = serde_json::to_vec(&Size {
                    cols: *cols,
                    rows: *rows,
                })
                .unwrap_or_default();
                framed(RESIZE, &size)
            }
        }
    }

    pub fn decode(message: &[u8]) -> Result<Input, String> {
        match message.split_first() {
            Some((&STDIN, [])) => Ok(Input::CloseStdin),
            Some((&STDIN, rest)) => Ok(Input::Stdin(Bytes::copy_from_slice(rest))),
            Some((&RESIZE, rest)) => serde_json::from_slice::<Size>(rest)
                .map(|s| Input::Resize {
                    cols: s.cols.max(1),
                    rows: s.rows.max(1),
                })
                .map_err(|e| format!("bad resize message: {e}")),
            Some((c, _)) => Err(format!("unknown channel {c} (0 stdin, 4 resize)")),
            None => Err("empty message".into()),
        }
    }
}

impl Output {
    pub fn encode(&self) -> Bytes {
        let end = |exit_code, error| {
            let end = End { exit_code, error };
            framed(END, &serde_json::to_vec(&end).unwrap_or_default())
        };
        match self {
            Output::Stdout(b) => framed(STDOUT, b),
            Output::Stderr(b) => framed(STDERR, b),
            Output::Exit(code) => end(Some(*code), None),
            Output::Error(e) => end(None, Some(e.clone())),
        }
    }

    pub fn decode(message: &[u8]) -> Result<Output, String> {
        match message.split_first() {
            Some((&STDOUT, rest)) => Ok(Output::Stdout(Bytes::copy_from_slice(rest))),
            Some((&STDERR, rest)) => Ok(Output::Stderr(Bytes::copy_from_slice(rest))),
            Some((&END, rest)) => {
                let end: End =
                    serde_json::from_slice(rest).map_err(|e| format!("bad end message: {e}"))?;
                match (end.exit_code, end.error) {
                    (Some(code), _) => Ok(Output::Exit(code)),
                    (None, Some(e)) => Ok(Output::Error(e)),
                    (None, None) => Err("end message without exit_code or error".into()),
                }
            }
            Some((c, _)) => Err(format!("unknown channel {c} (1 stdout, 2 stderr, 3 end)")),
            None => Err("empty message".into()),
        }
    }

    fn last(&self) -> bool {
        matches!(self, Output::Exit(_) | Output::Error(_))
    }
}

/// A running session as either end holds it: the command's input goes
/// in, its output comes out (on the server, from the node; on the client,
/// from the socket).
pub struct Session {
    pub input: mpsc::Sender<Input>,
    pub output: mpsc::Receiver<Output>,
}

/// Relays between a socket and a running session until it ends: the
/// client's messages go to `session.input`, the session's output to the
/// client. A socket that closes drops `session.input` (the command is
/// killed); a session that ends closes the socket.
pub async fn serve<S>(ws: WebSocketStream<S>, session: Session)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut stream) = ws.split();
    let Session { input, mut output } = session;
    loop {
        tokio::select! {
            out = output.recv() => {
                let out = out.unwrap_or_else(|| Output::Error("the session ended".into()));
                let last = out.last();
                if sink.send(Message::Binary(out.encode())).await.is_err() {
                    return;
                }
                if last {
                    let _ = sink.send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "".into(),
                    }))).await;
                    return;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Binary(b))) => match Input::decode(&b) {
                    Ok(i) => {
                        if input.send(i).await.is_err() {
                            // The command is gone; its end is on the way.
                            continue;
                        }
                    }
                    Err(e) => {
                        let out = Output::Error(e);
                        let _ = sink.send(Message::Binary(out.encode())).await;
                        let _ = sink.send(Message::Close(Some(CloseFrame {
                            code: CloseCode::Protocol,
                            reason: "".into(),
                        }))).await;
                        return;
                    }
                },
                // Text is stdin as typed (a browser console's).
                Some(Ok(Message::Text(t))) => {
                    let i = Input::Stdin(Bytes::copy_from_slice(t.as_bytes()));
                    let _ = input.send(i).await;
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                // Pings are answered by the socket itself.
                Some(Ok(_)) => {}
            },
        }
    }
}

/// The client's side of a socket: send input, receive output, as channels.
pub fn client<S>(ws: WebSocketStream<S>) -> Session
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (input, mut from_user) = mpsc::channel::<Input>(64);
    let (to_user, output) = mpsc::channel::<Output>(64);
    tokio::spawn(async move {
        let (mut sink, mut stream) = ws.split();
        let mut sending = true;
        loop {
            tokio::select! {
                i = from_user.recv(), if sending => match i {
                    Some(i) => {
                        if sink.send(Message::Binary(i.encode())).await.is_err() {
                            sending = false;
                        }
                    }
                    None => {
                        // The user is done: closing the socket kills the
                        // command.
                        let _ = sink.close().await;
                        return;
                    }
                },
                msg = stream.next() => {
                    let out = match msg {
                        Some(Ok(Message::Binary(b))) => {
                            Output::decode(&b).unwrap_or_else(Output::Error)
                        }
                        Some(Ok(Message::Close(_))) | None => {
                            Output::Error("the server closed the session".into())
                        }
                        Some(Err(e)) => Output::Error(format!("the session broke: {e}")),
                        Some(Ok(_)) => continue,
                    };
                    let last = out.last();
                    if to_user.send(out).await.is_err() || last {
                        return;
                    }
                }
            }
        }
    });
    Session { input, output }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_on_their_channels() {
        for i in [
            Input::Stdin(Bytes::from_static(b"ls\n")),
            Input::CloseStdin,
            Input::Resize {
                cols: 120,
                rows: 40,
            },
        ] {
            assert_eq!(Input::decode(&i.encode()).unwrap(), i);
        }
        assert_eq!(Input::encode(&Input::CloseStdin).as_ref(), &[0]);
        for o in [
            Output::Stdout(Bytes::from_static(b"\x1b[1mhi")),
            Output::Stderr(Bytes::from_static(b"oops")),
            Output::Exit(3),
            Output::Error("gone".into()),
        ] {
            assert_eq!(Output::decode(&o.encode()).unwrap(), o);
        }
        assert_eq!(Output::Exit(3).encode().as_ref(), b"\x03{\"exit_code\":3}");
        assert!(Input::decode(&[9, 1]).is_err());
        assert!(Input::decode(&[]).is_err());
        assert!(Input::decode(b"\x04{}").is_err());
        assert!(Output::decode(b"\x03{}").is_err());
    }

    #[test]
    fn the_query_names_command_instance_and_terminal() {
        let r = AttachRequest::from_query(Some(
            "command=sh&command=-c&command=echo%20hi&instance=web.0.ab&tty=true&cols=120&rows=40",
        ))
        .unwrap();
        assert_eq!(r.command, ["sh", "-c", "echo hi"]);
        assert_eq!(r.instance.as_deref(), Some("web.0.ab"));
        assert!(r.tty);
        assert_eq!((r.cols, r.rows), (120, 40));
        assert_eq!(AttachRequest::from_query(Some(&r.to_query())).unwrap(), r);

        let plain = AttachRequest::from_query(Some("command=cat")).unwrap();
        assert!(!plain.tty);
        assert_eq!((plain.cols, plain.rows), (DEFAULT_COLS, DEFAULT_ROWS));
        for bad in [
            None,
            Some("tty=true"),
            Some("command="),
            Some("command=sh&cols=0"),
            Some("command=sh&rows=x"),
            Some("command=sh&tty=maybe"),
            Some("command=sh&shell=bash"),
            Some("command=sh&instance=a/b"),
        ] {
            let e = AttachRequest::from_query(bad).unwrap_err();
            assert_eq!(e.status, 400, "{bad:?}");
        }
    }
}
