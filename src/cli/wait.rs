//! Waiting for a rollout: after a deploy, scale, promote or rollback, the
//! CLI follows each service's `rollout` in status until it reaches the
//! version the server named. It fails when that version is reverted, fails,
//! is replaced by a later one, or when the time is up. Progress is a line
//! per change, which reads the same on a terminal and in a CI log.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use api::client::ApiClient;
use api::status::{RolloutPhase, ServiceStatus, StatusResponse};

use super::out::outln;

/// Added to a rollout's own deadline before the CLI gives up: the server
/// reverts at the deadline, and the CLI should see that, not time out.
pub const MARGIN: Duration = Duration::from_secs(30);
/// How often status is read.
const POLL: Duration = Duration::from_millis(250);

/// A service and the version to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: String,
    pub version: u64,
}

/// What one look at status says about a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not there yet; the line shows how far.
    Waiting(String),
    /// There; the line says so.
    Done(String),
    /// It will not get there; why.
    Failed(String),
}

fn phase_name(phase: RolloutPhase) -> &'static str {
    match phase {
        RolloutPhase::Progressing => "progressing",
        RolloutPhase::Complete => "complete",
        RolloutPhase::Reverted => "reverted",
        RolloutPhase::Failed => "failed",
        RolloutPhase::Canary => "canary",
    }
}

/// Decides, from one status entry, where `target` stands.
pub fn verdict(target: &Target, status: Option<&ServiceStatus>) -> Verdict {
    let name = &target.service;
    let want = target.version;
    let Some(s) = status else {
        return Verdict::Failed(format!("{name}: the service is gone"));
    };
    let Some(r) = &s.rollout else {
        return Verdict::Failed(format!("{name}: the service was stopped"));
    };
    if r.version > want {
        return Verdict::Failed(format!(
            "{name}: version {want} was replaced by version {}",
            r.version
        ));
    }
    if r.version < want {
        return Verdict::Waiting(format!("{name}: waiting for version {want}"));
    }
    let line = match (r.phase, r.weight) {
        (RolloutPhase::Canary, Some(w)) => format!(
            "{name}: canary version {want} at {w}%, {}/{} ready",
            r.updated, r.total
        ),
        (phase, _) => format!(
            "{name}: version {want} {}, {}/{} ready, {} old",
            phase_name(phase),
            r.updated,
            r.total,
            r.old
        ),
    };
    match r.phase {
        RolloutPhase::Complete => Verdict::Done(line),
        RolloutPhase::Canary if r.updated >= r.total => Verdict::Done(line),
        RolloutPhase::Canary | RolloutPhase::Progressing => Verdict::Waiting(line),
        RolloutPhase::Reverted | RolloutPhase::Failed => {
            Verdict::Failed(format!("{name}: {}", r.message))
        }
    }
}

/// Follows `targets` until each is done; prints progress lines unless
/// `quiet`. `timeout` of `None` means each rollout's deadline plus
/// [`MARGIN`]. Returns the final line of each target.
pub async fn wait(
    client: &ApiClient,
    targets: &[Target],
    timeout: Option<Duration>,
    quiet: bool,
) -> anyhow::Result<Vec<String>> {
    let started = Instant::now();
    let mut limit = timeout;
    let mut last: BTreeMap<&str, String> = BTreeMap::new();
    let mut done: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        let status: StatusResponse = client.get("/api/v1/status").await?;
        let find = |name: &str| status.services.iter().find(|s| s.name == name);
        if limit.is_none() {
            let longest = targets
                .iter()
                .filter_map(|t| find(&t.service)?.rollout.as_ref().map(|r| r.deadline_secs))
                .max()
                .unwrap_or(60);
            limit = Some(Duration::from_secs(longest) + MARGIN);
        }
        for t in targets {
            if done.contains_key(t.service.as_str()) {
                continue;
            }
            match verdict(t, find(&t.service)) {
                Verdict::Failed(why) => anyhow::bail!("{why}"),
                Verdict::Done(line) => {
                    if !quiet {
                        outln!("{line}")?;
                    }
                    done.insert(&t.service, line);
                }
                Verdict::Waiting(line) => {
                    if !quiet && last.get(t.service.as_str()) != Some(&line) {
                        outln!("{line}")?;
                    }
                    last.insert(&t.service, line);
                }
            }
        }
        if done.len() == targets.len() {
            return Ok(targets
                .iter()
                .filter_map(|t| done.remove(t.service.as_str()))
                .collect());
        }
        let limit = limit.unwrap_or(MARGIN);
        if started.elapsed() > limit {
            let pending: Vec<String> = targets
                .iter()
                .filter(|t| !done.contains_key(t.service.as_str()))
                .map(|t| {
                    last.get(t.service.as_str())
                        .cloned()
                        .unwrap_or_else(|| format!("{}: version {}", t.service, t.version))
                })
                .collect();
            anyhow::bail!(
                "not done after {}s: {}",
                limit.as_secs(),
                pending.join("; ")
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// How commands that change what runs wait for it.
#[derive(clap::Args, Clone, Copy)]
pub struct WaitArgs {
    /// Return once the server accepted the change, without waiting.
    #[arg(long, alias = "no-wait")]
    pub detach: bool,
    /// Give up waiting after this many seconds (default: the rollout's
    /// progress deadline plus 30 s).
    #[arg(long)]
    pub timeout: Option<u64>,
}

impl WaitArgs {
    pub(super) fn timeout(&self) -> Option<std::time::Duration> {
        self.timeout.map(std::time::Duration::from_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::status::{Rollout, ServiceState};

    fn status(version: u64, phase: RolloutPhase, updated: u32, old: u32) -> ServiceStatus {
        ServiceStatus {
            name: "web".into(),
            project: "shop".into(),
            status: ServiceState::Running,
            replicas: 2,
            running_replicas: updated,
            image: "web:v2".into(),
            domain: None,
            version,
            message: None,
            instances: vec![],
            rollout: Some(Rollout {
                version,
                phase,
                message: "deploy of version 3 failed: x; reverted to version 2".into(),
                updated,
                total: 2,
                old,
                deadline_secs: 60,
                weight: (phase == RolloutPhase::Canary).then_some(20),
            }),
            job: None,
            ports: vec![],
        }
    }

    fn target(version: u64) -> Target {
        Target {
            service: "web".into(),
            version,
        }
    }

    #[test]
    fn waits_for_exactly_its_version() {
        let t = target(3);
        assert_eq!(
            verdict(&t, Some(&status(3, RolloutPhase::Progressing, 1, 2))),
            Verdict::Waiting("web: version 3 progressing, 1/2 ready, 2 old".into())
        );
        // An older version complete is not this one.
        assert!(matches!(
            verdict(&t, Some(&status(2, RolloutPhase::Complete, 2, 0))),
            Verdict::Waiting(_)
        ));
        assert_eq!(
            verdict(&t, Some(&status(3, RolloutPhase::Complete, 2, 0))),
            Verdict::Done("web: version 3 complete, 2/2 ready, 0 old".into())
        );
    }

    #[test]
    fn fails_on_revert_failure_replacement_and_stop() {
        let t = target(3);
        let Verdict::Failed(why) = verdict(&t, Some(&status(3, RolloutPhase::Reverted, 0, 0)))
        else {
            panic!("a revert is a failure")
        };
        assert!(why.contains("reverted to version 2"), "{why}");
        assert!(matches!(
            verdict(&t, Some(&status(3, RolloutPhase::Failed, 0, 0))),
            Verdict::Failed(_)
        ));
        assert!(matches!(
            verdict(&t, Some(&status(4, RolloutPhase::Progressing, 0, 0))),
            Verdict::Failed(_)
        ));
        let mut stopped = status(3, RolloutPhase::Complete, 2, 0);
        stopped.rollout = None;
        assert!(matches!(verdict(&t, Some(&stopped)), Verdict::Failed(_)));
        assert!(matches!(verdict(&t, None), Verdict::Failed(_)));
    }

    #[test]
    fn a_canary_is_done_when_its_replicas_are_ready() {
        let t = target(3);
        assert!(matches!(
            verdict(&t, Some(&status(3, RolloutPhase::Canary, 1, 0))),
            Verdict::Waiting(_)
        ));
        assert_eq!(
            verdict(&t, Some(&status(3, RolloutPhase::Canary, 2, 0))),
            Verdict::Done("web: canary version 3 at 20%, 2/2 ready".into())
        );
    }
}
