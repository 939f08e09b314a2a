//! Whether a service's dependencies hold, decided from the state: each
//! `depends_on` entry's condition against what its service runs now. A
//! dependent starts (and restarts) no replica until all hold; the first
//! that does not is named in its status.

use std::time::Instant;

use api::spec::{Condition, ServiceSpec};

use crate::agent::ProcessState;
use crate::control::state::State;

/// What the gate knows of one dependency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Facts {
    pub stopped: bool,
    /// Replicas of its current version that run.
    pub running: u32,
    /// Of those, the ready ones.
    pub ready: u32,
    /// A replica of it keeps crashing.
    pub looping: bool,
    /// For a job: whether its latest run is over, and how it went.
    pub job: Option<JobFacts>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct JobFacts {
    pub run: u64,
    pub active: bool,
    pub succeeded: Option<bool>,
}

/// Facts about service `name` in `st` (None: not deployed).
pub(crate) fn facts(st: &State, name: &str, now: Instant) -> Option<Facts> {
    let record = st.records.get(name)?;
    let has_check = crate::control::health::readiness(&record.spec).is_some();
    let mut f = Facts {
        stopped: record.stopped,
        job: record.spec.is_job().then_some(JobFacts {
            run: record.job.run,
            active: record.job.active(),
            succeeded: record.job.succeeded(),
        }),
        ..Facts::default()
    };
    for i in st.instances.get(name).into_iter().flatten() {
        if i.version != record.version || st.removing.contains(&i.id) {
            continue;
        }
        if matches!(i.state, ProcessState::Running) {
            f.running += 1;
            f.ready += u32::from(st.ready(has_check, &i.id, now));
        }
        f.looping |= st.crash_looping(&i.id, now);
    }
    Some(f)
}

/// Why `spec` must wait, naming the first dependency that does not hold
/// (None: all hold, or it has none).
pub(crate) fn waiting(spec: &ServiceSpec, facts: &dyn Fn(&str) -> Option<Facts>) -> Option<String> {
    let deps = spec.depends_on.as_ref()?.conditions();
    for (name, condition) in deps {
        let wait = format!("waiting for {name} to be {}", condition.as_str());
        let Some(f) = facts(&name) else {
            return Some(format!("{wait}: it is not deployed"));
        };
        if f.stopped {
            return Some(format!("{wait}: it is stopped"));
        }
        let ran = f.job.is_some_and(|j| j.run > 0 && !j.active);
        let holds = match condition {
            Condition::Started => f.running > 0 || ran,
            Condition::Healthy => f.ready > 0,
            Condition::Completed => f
                .job
                .is_some_and(|j| !j.active && j.succeeded == Some(true)),
        };
        if holds {
            continue;
        }
        let why = match f.job {
            Some(j) if !j.active && j.succeeded == Some(false) => {
                Some(format!("its run {} failed", j.run))
            }
            _ if f.looping => Some("its replicas keep exiting".to_string()),
            _ => None,
        };
        return Some(match why {
            Some(why) => format!("{wait}: {why}"),
            None => wait,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn spec(json: &str) -> ServiceSpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn each_condition_is_waited_for_and_named() {
        let web = spec(
            r#"{"name":"web","image":"x","depends_on":{"db":"healthy","migrate":"completed"}}"#,
        );
        let mut known: HashMap<&str, Facts> = HashMap::new();
        let check = |known: &HashMap<&str, Facts>| waiting(&web, &|n: &str| known.get(n).cloned());
        assert_eq!(
            check(&known).as_deref(),
            Some("waiting for db to be healthy: it is not deployed")
        );
        known.insert(
            "db",
            Facts {
                running: 1,
                ..Facts::default()
            },
        );
        assert_eq!(
            check(&known).as_deref(),
            Some("waiting for db to be healthy")
        );
        known.insert(
            "db",
            Facts {
                running: 1,
                ready: 1,
                ..Facts::default()
            },
        );
        let migrate = |active, succeeded| Facts {
            job: Some(JobFacts {
                run: 1,
                active,
                succeeded,
            }),
            ..Facts::default()
        };
        known.insert("migrate", migrate(true, None));
        assert_eq!(
            check(&known).as_deref(),
            Some("waiting for migrate to be completed")
        );
        known.insert("migrate", migrate(false, Some(false)));
        assert_eq!(
            check(&known).as_deref(),
            Some("waiting for migrate to be completed: its run 1 failed")
        );
        known.insert("migrate", migrate(false, Some(true)));
        assert_eq!(check(&known), None);
    }
}
