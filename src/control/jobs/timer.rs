//! When a scheduled job is due, pure: from its schedule, the last due time
//! handled and the time now. Only the latest due time counts, so runs
//! missed while the server was down are not all run at once: one runs if
//! it was due within the catch-up window, else it is passed over.

use api::spec::Schedule;

/// What to do about a schedule now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Nothing is due.
    Idle,
    /// A run is due at this time: start it.
    Run(i64),
    /// Due at this time while a run still goes: skip it, and say so.
    Skip(i64),
    /// Due at this time, too long ago (the server was down): pass it over.
    Missed(i64),
}

/// Decides at `now` (Unix seconds) for a job whose last handled due time
/// is `last_due` (None: none yet, so nothing before `now` counts), with a
/// catch-up window of `catchup` seconds and a run going or not.
pub(crate) fn due(
    schedule: &Schedule,
    last_due: Option<i64>,
    now: i64,
    catchup: i64,
    running: bool,
) -> Due {
    let Some(last) = last_due else {
        return Due::Idle;
    };
    let Some(latest) = schedule.last_at_or_before(now).filter(|t| *t > last) else {
        return Due::Idle;
    };
    if now - latest > catchup {
        Due::Missed(latest)
    } else if running {
        Due::Skip(latest)
    } else {
        Due::Run(latest)
    }
}

/// The next due time after both `now` and `last_due`.
pub(crate) fn next(schedule: &Schedule, last_due: Option<i64>, now: i64) -> Option<i64> {
    schedule.next_after(last_due.map_or(now, |l| l.max(now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every_minute() -> Schedule {
        Schedule::parse("* * * * *", None).unwrap()
    }

    // 2026-12-07T10:00:00Z
    const T: i64 = 1_796_637_600;

    #[test]
    fn a_due_minute_runs_once() {
        let s = every_minute();
        assert_eq!(due(&s, Some(T - 10), T + 5, 300, false), Due::Run(T));
        // Handled: nothing more until the next minute.
        assert_eq!(due(&s, Some(T), T + 30, 300, false), Due::Idle);
        assert_eq!(next(&s, Some(T), T + 30), Some(T + 60));
        assert_eq!(due(&s, Some(T), T + 61, 300, false), Due::Run(T + 60));
    }

    #[test]
    fn a_run_still_going_skips_the_next() {
        let s = every_minute();
        assert_eq!(due(&s, Some(T), T + 60, 300, true), Due::Skip(T + 60));
    }

    #[test]
    fn after_downtime_at_most_one_runs_and_only_if_recent() {
        let s = every_minute();
        // Down for an hour: the latest minute runs, once.
        assert_eq!(
            due(&s, Some(T), T + 3600 + 20, 300, false),
            Due::Run(T + 3600)
        );
        let daily = Schedule::parse("0 3 * * *", None).unwrap();
        // 03:00 passed 7 hours ago, past the window: passed over.
        let three = T - 7 * 3600;
        assert_eq!(
            due(&daily, Some(three - 86_400), T, 300, false),
            Due::Missed(three)
        );
        // Never handled (just deployed): nothing before now counts.
        assert_eq!(due(&s, None, T + 5, 300, false), Due::Idle);
    }
}
