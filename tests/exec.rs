//! `POST /api/v1/services/{name}/exec` and `orca exec` on a real server:
//! the command runs in a real replica (its hostname is the replica's id),
//! output and exit code come back, a missing program answers 127 with the
//! runtime's message, a timeout kills it, output past 1 MiB is cut and
//! said so, and unknown services, instances and other projects' tokens are
//! refused. The same path upgraded to a WebSocket: a shell on a real
//! terminal (its size, a resize), stdin to its end, stderr apart, a
//! closed socket killing the command, and `orca exec -it` on a terminal of
//! its own (`script`), which it leaves as it found it. Replicas on other
//! nodes: `tests/cluster.rs`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use api::attach::{AttachRequest, Input, Output, Session};
use api::client::ClientError;
use api::status::ExecResponse;
use common::server::{OrcaServer, ADMIN, DEPLOYER, VIEWER};
use serde_json::{json, Value};

async fn exec(server: &OrcaServer, body: Value) -> Result<ExecResponse, ClientError> {
    server
        .client(Some(DEPLOYER))
        .post("/api/v1/services/web/exec", &body)
        .await
}

/// A replica's hostname: `web.1.3fa2c0` runs as `web-1`.
fn hostname_of(id: &str) -> String {
    let mut parts = id.split('.');
    format!("{}-{}", parts.next().unwrap(), parts.next().unwrap())
}

fn status_of(r: Result<ExecResponse, ClientError>) -> u16 {
    match r {
        Err(ClientError::Api { status, .. }) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_in_a_replica_and_answers_its_output_and_exit_code() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "exec").await;
    let status = common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "web", "project": "shop", "image": env.image("web:v1"), "replicas": 2, "port": 8080, "stop_grace_secs": 1 }]),
    )
    .await;
    let ids: Vec<String> = status.services[0]
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();

    // Each replica by id: its hostname (`<service>-<slot>`) proves where it ran.
    for id in &ids {
        let out = exec(&server, json!({ "command": ["hostname"], "instance": id }))
            .await
            .unwrap();
        assert_eq!(out.instance, *id);
        assert_eq!(
            (out.stdout.trim(), out.exit_code),
            (hostname_of(id).as_str(), 0)
        );
    }
    // No instance: a ready one.
    let out = exec(
        &server,
        json!({ "command": ["sh", "-c", "echo out; echo err >&2; exit 3"] }),
    )
    .await
    .unwrap();
    assert!(ids.contains(&out.instance), "{out:?}");
    assert_eq!(
        (out.exit_code, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );

    // A program that does not exist: 127 and the runtime's words, not a 500.
    let out = exec(&server, json!({ "command": ["no-such-program"] }))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 127, "{out:?}");
    assert!(out.stderr.contains("no-such-program"), "{out:?}");

    // The timeout kills it.
    let started = Instant::now();
    let out = exec(
        &server,
        json!({ "command": ["sleep", "30"], "timeout_secs": 1 }),
    )
    .await
    .unwrap();
    assert!(out.timed_out && out.exit_code == 137, "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );

    // Output past 1 MiB is cut, and the answer says so; the command still
    // ends on its own (it is not cut off by a closed pipe).
    let out = exec(
        &server,
        json!({ "command": ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2"] }),
    )
    .await
    .unwrap();
    assert!(
        out.truncated,
        "not marked cut: {} bytes, code {}, stderr {:?}",
        out.stdout.len(),
        out.exit_code,
        out.stderr
    );
    assert_eq!(out.stdout.len(), 1024 * 1024);
    assert_eq!((out.exit_code, out.stderr.as_str()), (0, "done\n"));

    // Refusals: unknown service and instance 404, bad input 400, a viewer
    // 403, a deployer of another project 403.
    let c = server.client(Some(DEPLOYER));
    let r = c
        .post::<Value, ExecResponse>("/api/v1/services/nope/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 404);
    let r = exec(
        &server,
        json!({ "command": ["ls"], "instance": "web.9.abcdef" }),
    )
    .await;
    assert_eq!(status_of(r), 404);
    for bad in [
        json!({ "command": [] }),
        json!({ "command": ["ls"], "timeout_secs": 0 }),
        json!({ "command": ["ls"], "instance": "../etc" }),
        json!({ "command": ["ls"], "shell": true }),
    ] {
        assert_eq!(status_of(exec(&server, bad.clone()).await), 400, "{bad}");
    }
    let r = server
        .client(Some(VIEWER))
        .post::<Value, ExecResponse>("/api/v1/services/web/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 403);
    let other: Value = server
        .admin()
        .post(
            "/api/v1/tokens",
            &json!({ "name": "blog-ci", "role": "deployer", "project": "blog" }),
        )
        .await
        .unwrap();
    let r = server
        .client(other["token"].as_str())
        .post::<Value, ExecResponse>("/api/v1/services/web/exec", &json!({ "command": ["ls"] }))
        .await;
    assert_eq!(status_of(r), 403);

    // The CLI: output on stdout and stderr, the command's exit code as its own.
    let (code, out, err) = server
        .cli(
            ADMIN,
            &[
                "exec",
                "web",
                "--",
                "sh",
                "-c",
                "echo to-out; echo to-err >&2; exit 4",
            ],
        )
        .await;
    assert_eq!((code, out.as_str()), (4, "to-out\n"), "{err}");
    assert!(err.contains("to-err"), "{err}");
    let (code, out, _) = server
        .cli(
            ADMIN,
            &["exec", "web", "--instance", &ids[1], "--", "hostname"],
        )
        .await;
    assert_eq!((code, out.trim()), (0, hostname_of(&ids[1]).as_str()));
    let (code, _, err) = server.cli(ADMIN, &["exec", "nope", "--", "ls"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("service not found"), "{err}");
}

fn attach_request(command: &[&str], tty: bool) -> AttachRequest {
    AttachRequest {
        command: command.iter().map(|c| c.to_string()).collect(),
        instance: None,
        tty,
        cols: 100,
        rows: 40,
    }
}

/// What came back on (stdout, stderr) until `until` holds of stdout, or
/// the end (its exit code); fails after 20 s.
async fn read_until(
    session: &mut Session,
    out: &mut String,
    err: &mut String,
    until: impl Fn(&str) -> bool,
) -> Option<u32> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !until(out) {
        let next = tokio::time::timeout_at(deadline, session.output.recv())
            .await
            .unwrap_or_else(|_| panic!("no more output; so far: {out:?} / {err:?}"));
        match next {
            Some(Output::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
            Some(Output::Stderr(b)) => err.push_str(&String::from_utf8_lossy(&b)),
            Some(Output::Exit(code)) => return Some(code),
            Some(Output::Error(e)) => panic!("session broke: {e}; output {out:?}"),
            None => panic!("session ended without an exit; output {out:?}"),
        }
    }
    None
}

async fn send(session: &Session, text: &str) {
    let bytes = bytes::Bytes::copy_from_slice(text.as_bytes());
    session.input.send(Input::Stdin(bytes)).await.unwrap();
}

/// The `ps` lines of the first replica that run `what`.
async fn running(server: &OrcaServer, id: &str, what: &str) -> Vec<String> {
    let out = exec(
        server,
        json!({ "command": ["ps", "-o", "pid,args"], "instance": id }),
    )
    .await
    .unwrap();
    out.stdout
        .lines()
        .filter(|l| l.contains(what) && !l.contains("ps -o"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_exec_gives_a_terminal_stdin_and_resize_and_dies_with_its_socket() {
    let Some(env) = common::env() else { return };
    let server = OrcaServer::start(&env, "exec-it").await;
    let status = common::deploy_all_ready(
        &server.admin(),
        json!([{ "name": "web", "project": "shop", "image": env.image("web:v1"), "replicas": 1, "port": 8080, "stop_grace_secs": 1 }]),
    )
    .await;
    let id = status.services[0].instances[0].id.clone();
    let c = server.client(Some(DEPLOYER));

    // A shell on a terminal of 100x40: its size, a resize, and its exit code.
    let mut s = c
        .attach("web", &attach_request(&["sh"], true))
        .await
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    send(&s, "stty size; tty; echo term=$TERM\n").await;
    read_until(&mut s, &mut out, &mut err, |o| o.contains("term=xterm")).await;
    assert!(out.contains("40 100"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "not a terminal: {out:?}");
    s.input
        .send(Input::Resize {
            cols: 132,
            rows: 50,
        })
        .await
        .unwrap();
    out.clear();
    // The resize reaches containerd apart from stdin: ask until it shows.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !out.contains("50 132") {
        assert!(Instant::now() < deadline, "resize never seen: {out:?}");
        send(&s, "stty size\n").await;
        while let Ok(next) = tokio::time::timeout(Duration::from_millis(500), s.output.recv()).await
        {
            match next {
                Some(Output::Stdout(b)) => out.push_str(&String::from_utf8_lossy(&b)),
                other => panic!("unexpected {other:?}; output {out:?}"),
            }
        }
    }
    send(&s, "exit 5\n").await;
    let code = read_until(&mut s, &mut out, &mut err, |_| false).await;
    assert_eq!(code, Some(5), "{out:?}");

    // No terminal: stdin to its end, stdout and stderr apart.
    let mut s = c
        .attach(
            "web",
            &attach_request(&["sh", "-c", "cat; echo done >&2; exit 2"], false),
        )
        .await
        .unwrap();
    send(&s, "hello\n").await;
    send(&s, "world").await;
    s.input.send(Input::CloseStdin).await.unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let code = read_until(&mut s, &mut out, &mut err, |_| false).await;
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (Some(2), "hello\nworld", "done\n")
    );

    // A program that does not exist: 127 and the runtime's words.
    let mut s = c
        .attach("web", &attach_request(&["no-such-program"], true))
        .await
        .unwrap();
    let (mut out, mut err) = (String::new(), String::new());
    let code = read_until(&mut s, &mut out, &mut err, |_| false).await;
    assert_eq!(code, Some(127));
    assert!(err.contains("no-such-program"), "{err:?}");

    // The socket closed: the command is killed. While it is open, `ps`
    // shows it (the same probe's positive control).
    let s = c
        .attach("web", &attach_request(&["sleep", "301"], false))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running(&server, &id, "sleep 301").await.is_empty() {
        assert!(Instant::now() < deadline, "the command never ran");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(s);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = running(&server, &id, "sleep 301").await;
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "still running: {left:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Refused before any upgrade, as a plain exec is.
    let refused = |r: Result<Session, ClientError>| match r {
        Err(ClientError::Api { status, .. }) => status,
        Err(e) => panic!("expected an API error, got {e}"),
        Ok(_) => panic!("expected an API error, got a session"),
    };
    assert_eq!(
        refused(c.attach("nope", &attach_request(&["sh"], true)).await),
        404
    );
    let mut bad = attach_request(&["sh"], true);
    bad.instance = Some("web.9.abcdef".into());
    assert_eq!(refused(c.attach("web", &bad).await), 404);
    assert_eq!(
        refused(c.attach("web", &attach_request(&[], true)).await),
        400
    );
    let viewer = server.client(Some(VIEWER));
    assert_eq!(
        refused(viewer.attach("web", &attach_request(&["sh"], true)).await),
        403
    );
    assert_eq!(
        refused(
            server
                .client(None)
                .attach("web", &attach_request(&["sh"], true))
                .await
        ),
        401
    );

    // `orca exec -it` on a terminal of its own: the command's terminal has
    // the local one's size, its exit code is the CLI's, and the local
    // terminal is back in its own mode afterwards (`icanon`, which raw
    // mode turns off).
    let orca = common::orca_bin();
    let inner = format!(
        "stty cols 90 rows 30; {} exec -it web -- sh -c 'stty size; exit 6'; echo code=$?; stty -a",
        orca.display()
    );
    let api = format!("http://{}", server.addr());
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("script")
            .args(["-qec", &inner, "/dev/null"])
            .env("ORCA_API", api)
            .env("ORCA_TOKEN", ADMIN)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("30 90"), "{text}");
    assert!(text.contains("code=6"), "{text}");
    let modes = text.split("code=6").nth(1).unwrap_or_default();
    assert!(
        modes.contains(" icanon") && !modes.contains("-icanon"),
        "terminal left in raw mode: {modes}"
    );
}
