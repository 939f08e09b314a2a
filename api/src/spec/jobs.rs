//! Jobs, schedules and dependencies in the spec: `restart` (a service that
//! runs to an end), `schedule` with `timezone` (cron), and `depends_on`
//! (what must hold of another service of the project before a replica
//! starts). Checked here without outside knowledge; names and cycles are
//! checked against the project by the control plane ([`dependency_cycle`]).

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::ServiceSpec;
use crate::error::ApiError;

/// `restart`: what happens when a replica's process ends.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    /// Always started again (with the backoff): a long-running service.
    #[default]
    Always,
    /// Started again only after a non-zero exit: a job that retries.
    OnFailure,
    /// Never started again: a job that runs once per run.
    Never,
}

impl RestartPolicy {
    /// As it is written in the spec (and in a container's label).
    pub fn as_str(self) -> &'static str {
        match self {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "never",
        }
    }

    /// True when a replica that exited with `code` is over for good: a
    /// job's clean end, or any end under `never`.
    pub fn finished(self, code: u32) -> bool {
        match self {
            RestartPolicy::Always => false,
            RestartPolicy::OnFailure => code == 0,
            RestartPolicy::Never => true,
        }
    }
}

impl FromStr for RestartPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(RestartPolicy::Always),
            "on-failure" => Ok(RestartPolicy::OnFailure),
            "never" => Ok(RestartPolicy::Never),
            other => Err(format!(
                "invalid restart {other:?}: always, on-failure or never"
            )),
        }
    }
}

/// What a dependency must be before a dependent's replica starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    /// At least one replica runs (or, for a job, has run).
    Started,
    /// At least one replica is ready (its readiness check passed).
    Healthy,
    /// The job's latest run ended with every replica exiting 0.
    Completed,
}

impl Condition {
    /// As a waiting message says it: "waiting for db to be {healthy}".
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Started => "started",
            Condition::Healthy => "healthy",
            Condition::Completed => "completed",
        }
    }
}

/// `depends_on`: names (each `started`), or names with their condition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum DependsOn {
    Names(Vec<String>),
    Conditions(BTreeMap<String, Condition>),
}

impl DependsOn {
    /// Each dependency with its condition, by name.
    pub fn conditions(&self) -> BTreeMap<String, Condition> {
        match self {
            DependsOn::Names(n) => n.iter().map(|n| (n.clone(), Condition::Started)).collect(),
            DependsOn::Conditions(c) => c.clone(),
        }
    }
}

/// Most dependencies one service may have.
const MAX_DEPENDENCIES: usize = 64;

/// A parsed `schedule` in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: chrono_tz::Tz,
}

impl Schedule {
    /// Parses a five-field cron expression (minute hour day-of-month month
    /// day-of-week, with lists, ranges, steps, names and `@daily`-style
    /// nicknames) in `timezone` (an IANA name; UTC when None).
    pub fn parse(expr: &str, timezone: Option<&str>) -> Result<Schedule, String> {
        use croner::parser::{CronParser, Seconds, Year};
        let parser = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build();
        let cron = parser
            .parse(expr)
            .map_err(|e| format!("invalid schedule {expr:?}: {e} (cron: \"0 3 * * *\")"))?;
        let tz = match timezone {
            None => chrono_tz::UTC,
            Some(name) => name.parse().map_err(|_| {
                format!("invalid timezone {name:?}: an IANA name such as \"Europe/Berlin\"")
            })?,
        };
        Ok(Schedule { cron, tz })
    }

    /// The first time it is due strictly after `after` (Unix seconds).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let from: DateTime<Utc> = Utc.timestamp_opt(after, 0).single()?;
        self.cron
            .find_next_occurrence(&from.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.timestamp())
    }

    /// The latest time it was due at or before `at` (Unix seconds).
    pub fn last_at_or_before(&self, at: i64) -> Option<i64> {
        let from: DateTime<Utc> = Utc.timestamp_opt(at, 0).single()?;
        self.cron
            .find_previous_occurrence(&from.with_timezone(&self.tz), true)
            .ok()
            .map(|t| t.timestamp())
    }
}

/// `restart`, `schedule`, `timezone` and `depends_on` of one spec.
pub(super) fn check_jobs(spec: &ServiceSpec) -> Result<(), ApiError> {
    let bad = |m: String| Err(ApiError::bad_request(m));
    if let Some(expr) = &spec.schedule {
        Schedule::parse(expr, spec.timezone.as_deref()).map_err(ApiError::bad_request)?;
        if spec.restart == Some(RestartPolicy::Always) {
            return bad(
                "a service with a schedule runs to an end: restart must be on-failure or never"
                    .into(),
            );
        }
    } else if spec.timezone.is_some() {
        return bad("timezone needs a schedule".into());
    }
    if spec.is_job() {
        if spec.deploy.as_ref().and_then(|d| d.strategy) == Some(super::Strategy::Canary) {
            return bad("a job (restart on-failure or never) cannot be a canary".into());
        }
        if spec.domain.is_some() {
            return bad("a job (restart on-failure or never) takes no domain".into());
        }
    }
    if let Some(deps) = &spec.depends_on {
        let deps = deps.conditions();
        if deps.len() > MAX_DEPENDENCIES {
            return bad(format!("depends_on: at most {MAX_DEPENDENCIES} services"));
        }
        for name in deps.keys() {
            crate::names::checked_name("depends_on name", name)?;
            if *name == spec.name {
                return bad(format!("depends_on: {name} cannot depend on itself"));
            }
        }
    }
    Ok(())
}

/// A cycle among the dependencies of `specs` (name to what it depends
/// on), as `a -> b -> a`; the first found in name order.
pub fn dependency_cycle(deps: &BTreeMap<String, BTreeSet<String>>) -> Option<String> {
    fn visit(
        name: &str,
        deps: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<String> {
        if let Some(at) = path.iter().position(|p| p == name) {
            let mut cycle = path[at..].to_vec();
            cycle.push(name.to_string());
            return Some(cycle.join(" -> "));
        }
        if done.contains(name) {
            return None;
        }
        path.push(name.to_string());
        for next in deps.get(name).into_iter().flatten() {
            if let Some(c) = visit(next, deps, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(name.to_string());
        None
    }
    let mut done = BTreeSet::new();
    deps.keys()
        .find_map(|name| visit(name, deps, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp()
    }

    #[test]
    fn schedules_follow_their_time_zone() {
        let utc = Schedule::parse("0 3 * * *", None).unwrap();
        assert_eq!(
            utc.next_after(at("2026-12-07T10:00:00Z")),
            Some(at("2026-12-08T03:00:00Z"))
        );
        // 03:00 in Berlin is 02:00 UTC in winter.
        let berlin = Schedule::parse("0 3 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            berlin.next_after(at("2026-12-07T10:00:00Z")),
            Some(at("2026-12-08T02:00:00Z"))
        );
        let every = Schedule::parse("*/15 * * * *", None).unwrap();
        assert_eq!(
            every.last_at_or_before(at("2026-12-07T10:14:59Z")),
            Some(at("2026-12-07T10:00:00Z"))
        );
        assert_eq!(
            every.next_after(at("2026-12-07T10:15:00Z")),
            Some(at("2026-12-07T10:30:00Z"))
        );
        assert!(Schedule::parse("@daily", None).is_ok());
    }

    #[test]
    fn bad_schedules_and_zones_are_refused() {
        for bad in ["", "* * * *", "0 0 3 * * *", "61 * * * *", "nonsense"] {
            assert!(Schedule::parse(bad, None).is_err(), "{bad:?}");
        }
        let e = Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
    }

    #[test]
    fn finished_follows_the_policy() {
        assert!(!RestartPolicy::Always.finished(0));
        assert!(RestartPolicy::OnFailure.finished(0));
        assert!(!RestartPolicy::OnFailure.finished(1));
        assert!(RestartPolicy::Never.finished(1));
    }

    #[test]
    fn cycles_are_named() {
        let deps = |pairs: &[(&str, &[&str])]| -> BTreeMap<String, BTreeSet<String>> {
            pairs
                .iter()
                .map(|(n, d)| (n.to_string(), d.iter().map(|s| s.to_string()).collect()))
                .collect()
        };
        assert_eq!(
            dependency_cycle(&deps(&[("web", &["db"]), ("db", &[]), ("m", &["db"])])),
            None
        );
        assert_eq!(
            dependency_cycle(&deps(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])])).as_deref(),
            Some("a -> b -> c -> a")
        );
    }

    #[test]
    fn depends_on_takes_both_forms() {
        let list: DependsOn = serde_json::from_str(r#"["db"]"#).unwrap();
        assert_eq!(list.conditions()["db"], Condition::Started);
        let map: DependsOn =
            serde_json::from_str(r#"{"db":"healthy","migrate":"completed"}"#).unwrap();
        assert_eq!(map.conditions()["migrate"], Condition::Completed);
        assert!(serde_json::from_str::<DependsOn>(r#"{"db":"ready"}"#).is_err());
    }
}
