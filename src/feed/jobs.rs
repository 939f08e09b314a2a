//! What a change to a job's runs means as events: a run began, a run
//! ended (with its exit codes), a due run was skipped.

use api::events::EventKind;

use super::Note;
use crate::store::ServiceRecord;

/// The job events of saving `new` over `old`.
pub fn job_notes(old: Option<&ServiceRecord>, new: &ServiceRecord) -> Vec<Note> {
    let note = |kind, message: String| {
        Note::new(kind, message)
            .service(&new.spec.name, &new.spec.project)
            .version(new.version)
    };
    let before = old.map(|o| o.job.clone()).unwrap_or_default();
    let job = &new.job;
    let mut out = Vec::new();
    if job.done > before.done {
        let codes: Vec<String> = job.exit_codes.iter().map(u32::to_string).collect();
        let how = if job.succeeded() == Some(true) {
            "completed"
        } else {
            "failed"
        };
        out.push(note(
            EventKind::JobFinished,
            format!("run {} {how}: exit codes [{}]", job.done, codes.join(", ")),
        ));
    }
    if job.skipped > before.skipped {
        out.push(note(
            EventKind::JobSkipped,
            format!(
                "a scheduled run was skipped: run {} was still going",
                job.run
            ),
        ));
    }
    if job.run > before.run {
        let by = job.trigger.as_deref().unwrap_or("a deploy");
        out.push(note(
            EventKind::JobStarted,
            format!("run {} started by {by}", job.run),
        ));
    }
    out
}
