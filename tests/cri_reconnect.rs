//! containerd restarts under a live client: the test runs a containerd of
//! its own (root, state and socket in a temp dir), restarts it, and checks
//! that the task kept running, calls work again, and the event stream
//! resubscribes and still delivers exits.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use cri::container::LogTarget;
use cri::events::CriEvent;
use cri::{ContainerConfig, Cri};

struct Containerd {
    child: Child,
    socket: std::path::PathBuf,
    /// Waited for already: its PID may belong to another process now.
    reaped: bool,
}

impl Containerd {
    async fn start(dir: &Path) -> Containerd {
        let config = dir.join("config.toml");
        let socket = dir.join("containerd.sock");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{s}\"\n[ttrpc]\n  address = \"{s}.ttrpc\"\n[debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n",
                d = dir.display(),
                s = socket.display()
            ),
        )
        .unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("containerd.log"))
            .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("containerd binary (apt-get install containerd)");
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Containerd {
            child,
            socket,
            reaped: false,
        }
    }

    fn stop(&mut self) {
        if self.reaped {
            return;
        }
        // Only the containerd this test started, by its PID, which stays
        // its own until it is waited for.
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.reaped = true;
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn survives_a_containerd_restart() {
    let Some(env) = common::env() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut containerd = Containerd::start(dir.path()).await;
    let ns = common::namespace("restart");
    let mut options = cri::ConnectOptions::new(&containerd.socket, &ns);
    options.connect_timeout = Duration::from_secs(10);
    let cri = Cri::connect(options)
        .await
        .expect("connect to the private containerd");

    let image = cri.pull(&env.image("logger:latest")).await.unwrap();
    let config = ContainerConfig {
        id: "survivor".into(),
        ..Default::default()
    };
    cri.create_container(&image, &config).await.unwrap();
    let pid = cri
        .start_task("survivor", &LogTarget::Discard)
        .await
        .unwrap();
    let mut events = cri.subscribe().await.unwrap();

    containerd.stop();
    let err = cri.version().await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    assert!(
        err.to_string()
            .contains(&containerd.socket.display().to_string()),
        "{err}"
    );
    // The task does not depend on containerd running.
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "task died with containerd"
    );

    let restarted = Containerd::start(dir.path()).await;
    cri.wait_ready(Duration::from_secs(20))
        .await
        .expect("containerd back");
    let task = cri
        .task("survivor")
        .await
        .unwrap()
        .expect("task still known");
    assert_eq!(task.pid, pid);
    assert!(task.state.is_alive());

    // The stream says it resubscribed, then delivers the exit.
    let mut resubscribed = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !resubscribed && tokio::time::Instant::now() < deadline {
        if let Ok(Some(CriEvent::Resubscribed)) =
            tokio::time::timeout(Duration::from_secs(1), events.next()).await
        {
            resubscribed = true;
        }
    }
    assert!(resubscribed, "no Resubscribed event");
    cri.stop("survivor", Duration::from_secs(5)).await.unwrap();
    let mut exited = false;
    while !exited && tokio::time::Instant::now() < deadline {
        if let Ok(Some(CriEvent::TaskExit { container_id, .. })) =
            tokio::time::timeout(Duration::from_secs(1), events.next()).await
        {
            exited = container_id == "survivor";
        }
    }
    assert!(exited, "no TaskExit after the restart");
    cri.remove_container("survivor").await.unwrap();
    drop(restarted);
}
