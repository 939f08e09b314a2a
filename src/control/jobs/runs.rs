//! Acting on jobs: the schedule's clock (runs due times, skips those that
//! come while a run goes, passes over those missed too long ago), `orca
//! run`, and the end of a run, each saved in the service's record under
//! its lock before anything happens.

use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use api::spec::Schedule;
use api::ApiError;

use super::timer::{due, Due};
use crate::control::deploy::now_rfc3339;
use crate::control::Inner;
use crate::store::ServiceRecord;

/// How often the clock looks at the schedules.
const TICK: Duration = Duration::from_secs(1);

/// Unix seconds now.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// RFC 3339 of Unix seconds.
pub(crate) fn rfc3339(at: i64) -> String {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(at.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The parsed schedule of a record (None without one, or not a job).
pub(crate) fn schedule_of(record: &ServiceRecord) -> Option<Schedule> {
    let expr = record.spec.schedule.as_ref()?;
    Schedule::parse(expr, record.spec.timezone.as_deref()).ok()
}

/// Saves `record` under the lock the caller holds, then tells and wakes.
async fn save(inner: &Arc<Inner>, mut record: ServiceRecord) -> Result<(), String> {
    record.changed_at(now_rfc3339());
    inner
        .repo
        .put_service(&record)
        .map_err(|e| format!("storing {}: {e}", record.spec.name))?;
    let name = record.spec.name.clone();
    let notes = inner.state.put_record(record).await;
    inner.tell(notes);
    crate::control::worker::wake(inner, &name);
    Ok(())
}

/// The clock: every [`TICK`], each scheduled job's due time is handled.
pub(crate) async fn clock(inner: Weak<Inner>) {
    loop {
        tokio::time::sleep(TICK).await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let now = unix_now();
        let catchup = inner.settings.schedule_catchup.as_secs() as i64;
        let due_now: Vec<String> = inner
            .state()
            .records
            .values()
            .filter(|r| !r.stopped && r.spec.is_job())
            .filter(|r| {
                schedule_of(r).is_some_and(|s| {
                    due(&s, r.job.last_due, now, catchup, r.job.active()) != Due::Idle
                })
            })
            .map(|r| r.spec.name.clone())
            .collect();
        for name in due_now {
            if let Err(e) = on_due(&inner, &name, now, catchup).await {
                tracing::warn!(service = %name, error = %e, "scheduled run not recorded");
            }
        }
    }
}

/// Handles `name`'s due time at `now`, from its stored record.
async fn on_due(inner: &Arc<Inner>, name: &str, now: i64, catchup: i64) -> Result<(), String> {
    let lock = inner.service_lock(name);
    let _held = lock.lock().await;
    let Some(mut record) = inner.repo.service(name).map_err(|e| e.to_string())? else {
        return Ok(());
    };
    let Some(schedule) = schedule_of(&record).filter(|_| !record.stopped) else {
        return Ok(());
    };
    let job = &mut record.job;
    match due(&schedule, job.last_due, now, catchup, job.active()) {
        Due::Idle => return Ok(()),
        Due::Run(at) => {
            job.last_due = Some(at);
            job.run += 1;
            job.last_run = Some(rfc3339(now));
            job.trigger = Some(format!("its schedule (due {})", rfc3339(at)));
            tracing::info!(service = name, run = job.run, "scheduled run");
        }
        Due::Skip(at) => {
            job.last_due = Some(at);
            job.skipped += 1;
            job.last_skipped = Some(rfc3339(at));
            tracing::warn!(
                service = name,
                run = job.run,
                "scheduled run skipped: the last one still runs"
            );
        }
        Due::Missed(at) => {
            job.last_due = Some(at);
            tracing::info!(service = name, due = %rfc3339(at), "scheduled run passed over: due too long ago");
        }
    }
    save(inner, record).await
}

/// `orca run NAME`: a new run of a job now (409 while one goes).
pub(crate) async fn run_now(inner: &Arc<Inner>, name: &str, by: &str) -> Result<u64, ApiError> {
    let lock = inner.service_lock(name);
    let _held = lock.lock().await;
    let mut record = inner
        .repo
        .service(name)
        .map_err(crate::control::endpoints::store_error)?
        .ok_or_else(|| ApiError::service_not_found(name))?;
    if !record.spec.is_job() {
        return Err(ApiError::bad_request(format!(
            "{name} is not a job: it restarts always (set restart = \"on-failure\" or \"never\")"
        )));
    }
    if record.stopped {
        return Err(ApiError::conflict(format!(
            "{name} is stopped: deploy it again first"
        )));
    }
    if record.job.active() {
        return Err(ApiError::conflict(format!(
            "run {} of {name} is still going",
            record.job.run
        )));
    }
    record.job.run += 1;
    record.job.last_run = Some(now_rfc3339());
    record.job.trigger = Some(format!("orca run ({by})"));
    let run = record.job.run;
    save(inner, record).await.map_err(ApiError::internal)?;
    Ok(run)
}

/// Records that run `run` of `name` ended with `codes` (by slot).
pub(crate) async fn finished(inner: &Arc<Inner>, name: &str, run: u64, codes: Vec<u32>) {
    let lock = inner.service_lock(name);
    let _held = lock.lock().await;
    let Ok(Some(mut record)) = inner.repo.service(name) else {
        return;
    };
    if record.job.run != run || record.job.done >= run {
        return;
    }
    tracing::info!(service = name, run, ?codes, "job run ended");
    record.job.done = run;
    record.job.exit_codes = codes;
    record.job.finished_at = Some(now_rfc3339());
    if let Err(e) = save(inner, record).await {
        tracing::error!(service = name, error = %e, "could not record the end of a run");
    }
}

/// After a listing: records the end of the job's active run, if every
/// replica of it is over for good.
pub(crate) async fn check_end(
    inner: &Arc<Inner>,
    service: &str,
    instances: &[crate::agent::Instance],
) {
    let Some((want, name)) = inner
        .state()
        .records
        .get(service)
        .and_then(|r| Some((super::want_of(r)?, r.spec.name.clone())))
    else {
        return;
    };
    if !want.active {
        return;
    }
    let view = super::outcome::run_view(&want, instances);
    if view.ended {
        finished(inner, &name, want.run, view.codes).await;
    }
}
