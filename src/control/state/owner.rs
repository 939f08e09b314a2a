//! The state's owner task and the handle to it. The task applies changes
//! one message at a time, in the order sent; after each batch it publishes
//! one snapshot, and only then answers, so a caller that awaited a change
//! reads it in the next snapshot. Nothing blocks in it: every change is a
//! plain function of the state (see [`super::change`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};

use super::{Exit, State};
use crate::agent::Instance;
use crate::control::decide::{decide, Decided};
use crate::feed::{Announced, Note};
use crate::nodes::Table;
use crate::store::ServiceRecord;

/// Messages handled before a snapshot is published.
const BATCH: usize = 64;

/// A change, with where its answer goes.
enum Msg {
    PutRecord(Box<ServiceRecord>, oneshot::Sender<Vec<Note>>),
    Listed(String, Vec<Instance>, Instant, oneshot::Sender<()>),
    ForgetService(String, oneshot::Sender<bool>),
    Settling(
        String,
        Option<(u64, Instant)>,
        Option<Announced>,
        oneshot::Sender<()>,
    ),
    PullNote(String, Option<String>, oneshot::Sender<()>),
    TlsProblems(HashMap<String, String>, oneshot::Sender<()>),
    Exited(String, Exit, oneshot::Sender<bool>),
    Started(String, u32, oneshot::Sender<()>),
    Restarted(String, u32, oneshot::Sender<u32>),
    RestartFailed(String, String, String, oneshot::Sender<u32>),
    StartedNew(Instance, u32, Option<u64>, oneshot::Sender<()>),
    StartFailed(String, String, Option<u64>, oneshot::Sender<()>),
    Removing(String, oneshot::Sender<bool>),
    Removed(String, oneshot::Sender<()>),
    CheckerStarted(String, oneshot::Sender<bool>),
    CheckerEnded(String, bool, oneshot::Sender<()>),
    ForgetChecks(String, oneshot::Sender<()>),
    Readiness(String, Option<bool>, Option<u32>, oneshot::Sender<bool>),
    Decide(Box<DecideArgs>, oneshot::Sender<Decided>),
    ClaimVolumes(Vec<String>, String, oneshot::Sender<Option<Claimed>>),
    SetBusy(String, Option<String>, oneshot::Sender<bool>),
    SetVolume(
        String,
        Option<crate::store::VolumeRecord>,
        oneshot::Sender<()>,
    ),
}

/// The new volume records of a claim, or why it failed.
pub(crate) type Claimed = Result<Vec<crate::store::VolumeRecord>, String>;

struct DecideArgs {
    table: Arc<Table>,
    reschedule_after: Duration,
    service: String,
    instances: Vec<Instance>,
    now: Instant,
}

/// An answer held back until the batch's snapshot is out.
type Answer = Box<dyn FnOnce() + Send>;

fn answer<T: Send + 'static>(reply: oneshot::Sender<T>, value: T) -> Answer {
    Box::new(move || {
        // The asker may have gone (its task ended): nothing to tell.
        let _ = reply.send(value);
    })
}

/// Applies one message (the decision is the state's; see `change`).
fn apply(st: &mut State, msg: Msg) -> Answer {
    let now = Instant::now();
    match msg {
        Msg::PutRecord(record, r) => answer(r, st.put_record(*record)),
        Msg::Listed(service, list, at, r) => {
            st.listed(&service, list, at);
            answer(r, ())
        }
        Msg::ForgetService(service, r) => {
            // An API write may have raced in: then the service stays.
            let gone = !st.records.contains_key(&service);
            if gone {
                st.forget_service(&service);
            }
            answer(r, gone)
        }
        Msg::Settling(service, since, announced, r) => {
            st.settling(&service, since, announced);
            answer(r, ())
        }
        Msg::PullNote(service, note, r) => {
            st.pull_note(&service, note);
            answer(r, ())
        }
        Msg::TlsProblems(problems, r) => {
            st.tls_problems(problems);
            answer(r, ())
        }
        Msg::Exited(id, exit, r) => answer(r, st.record_exit(&id, &exit, now)),
        Msg::Started(id, pid, r) => {
            st.record_start(&id, pid, now);
            answer(r, ())
        }
        Msg::Restarted(id, pid, r) => answer(r, st.restarted(&id, pid, now)),
        Msg::RestartFailed(service, id, error, r) => {
            answer(r, st.restart_failed(&service, &id, error, now))
        }
        Msg::StartedNew(instance, pid, key, r) => {
            if let Some(key) = key {
                st.release(key);
            }
            st.started_new(instance, pid, now);
            answer(r, ())
        }
        Msg::StartFailed(service, error, key, r) => {
            if let Some(key) = key {
                st.release(key);
            }
            st.start_failed(&service, error, now);
            answer(r, ())
        }
        Msg::Removing(id, r) => answer(r, st.removing(&id)),
        Msg::Removed(id, r) => {
            st.removed(&id);
            answer(r, ())
        }
        Msg::CheckerStarted(id, r) => answer(r, st.checker_started(&id)),
        Msg::CheckerEnded(id, reset, r) => {
            st.checker_ended(&id, reset);
            answer(r, ())
        }
        Msg::ForgetChecks(node, r) => {
            st.forget_checks(&node);
            answer(r, ())
        }
        Msg::Readiness(id, healthy, failures, r) => answer(r, st.readiness(&id, healthy, failures)),
        Msg::ClaimVolumes(keys, node, r) => answer(r, Some(st.claim_volumes(&keys, &node))),
        Msg::SetBusy(key, why, r) => answer(r, st.set_busy(&key, why)),
        Msg::SetVolume(key, record, r) => {
            st.set_volume(&key, record);
            answer(r, ())
        }
        Msg::Decide(a, r) => {
            let decided = decide(
                st,
                &a.table,
                a.reschedule_after,
                &a.service,
                &a.instances,
                a.now,
            );
            answer(r, decided)
        }
    }
}

/// The loop: a batch of messages, one snapshot, then the answers. It ends
/// once every handle is gone.
async fn run(
    mut st: State,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    publish: watch::Sender<Arc<State>>,
) {
    let mut answers: Vec<Answer> = Vec::with_capacity(BATCH);
    while let Some(first) = rx.recv().await {
        answers.push(apply(&mut st, first));
        while answers.len() < BATCH {
            match rx.try_recv() {
                Ok(msg) => answers.push(apply(&mut st, msg)),
                Err(_) => break,
            }
        }
        publish.send_replace(Arc::new(st.clone()));
        for a in answers.drain(..) {
            a();
        }
    }
}

/// The handle to the state: cheap to clone. Reads take the last snapshot;
/// changes are messages to the owner, answered once applied and published.
#[derive(Clone)]
pub(crate) struct StateHandle {
    tx: mpsc::UnboundedSender<Msg>,
    snapshot: watch::Receiver<Arc<State>>,
}

impl StateHandle {
    /// Starts the owner of `state`. Must be called inside a Tokio runtime.
    pub fn start(state: State) -> StateHandle {
        let (publish, snapshot) = watch::channel(Arc::new(state.clone()));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(state, rx, publish));
        StateHandle { tx, snapshot }
    }

    /// The state as of the last change answered.
    pub fn read(&self) -> Arc<State> {
        self.snapshot.borrow().clone()
    }

    /// Sends a change and waits for its answer. The owner only ends when
    /// every handle is gone, and this is one: a missing answer is a bug in
    /// a change (a panic), and then the default is the safe answer.
    async fn ask<T: Default>(&self, msg: impl FnOnce(oneshot::Sender<T>) -> Msg) -> T {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(msg(reply)).is_err() {
            tracing::error!("the control plane's state owner has stopped");
            return T::default();
        }
        answer.await.unwrap_or_default()
    }

    /// Claims volumes `keys` for a start on `node`.
    pub async fn claim_volumes(&self, keys: Vec<String>, node: &str) -> Claimed {
        self.ask(|r| Msg::ClaimVolumes(keys, node.to_string(), r))
            .await
            .unwrap_or_else(|| Err("the control plane's state owner has stopped".into()))
    }

    /// Marks volume `key` busy with `why` (false: it already is), or
    /// (`None`) free again.
    pub async fn set_busy(&self, key: &str, why: Option<String>) -> bool {
        self.ask(|r| Msg::SetBusy(key.to_string(), why, r)).await
    }

    /// Puts (`Some`) or forgets the record of volume `key`.
    pub async fn set_volume(&self, key: &str, record: Option<crate::store::VolumeRecord>) {
        self.ask(|r| Msg::SetVolume(key.to_string(), record, r))
            .await
    }

    /// Keeps a saved record; what changed, for the feed.
    pub async fn put_record(&self, record: ServiceRecord) -> Vec<Note> {
        self.ask(|r| Msg::PutRecord(Box::new(record), r)).await
    }

    /// The replicas a gathering found for `service`.
    pub async fn listed(&self, service: &str, list: Vec<Instance>, now: Instant) {
        self.ask(|r| Msg::Listed(service.to_string(), list, now, r))
            .await
    }

    /// Forgets a service unless it is wanted again; true if forgotten.
    pub async fn forget_service(&self, service: &str) -> bool {
        self.ask(|r| Msg::ForgetService(service.to_string(), r))
            .await
    }

    pub async fn settling(
        &self,
        service: &str,
        since: Option<(u64, Instant)>,
        announced: Option<Announced>,
    ) {
        self.ask(|r| Msg::Settling(service.to_string(), since, announced, r))
            .await
    }

    pub async fn pull_note(&self, service: &str, note: Option<String>) {
        self.ask(|r| Msg::PullNote(service.to_string(), note, r))
            .await
    }

    pub async fn tls_problems(&self, problems: HashMap<String, String>) {
        self.ask(|r| Msg::TlsProblems(problems, r)).await
    }

    /// A replica's exit; false if it is being removed on purpose.
    pub async fn exited(&self, id: &str, exit: Exit) -> bool {
        self.ask(|r| Msg::Exited(id.to_string(), exit, r)).await
    }

    pub async fn started(&self, id: &str, pid: u32) {
        self.ask(|r| Msg::Started(id.to_string(), pid, r)).await
    }

    /// A restart done by orca; the replica's restart count.
    pub async fn restarted(&self, id: &str, pid: u32) -> u32 {
        self.ask(|r| Msg::Restarted(id.to_string(), pid, r)).await
    }

    /// How many restarts of `id` failed in a row, this one included.
    pub async fn restart_failed(&self, service: &str, id: &str, error: String) -> u32 {
        self.ask(|r| Msg::RestartFailed(service.to_string(), id.to_string(), error, r))
            .await
    }

    /// A new replica runs; frees what its start held (`key`).
    pub async fn started_new(&self, instance: Instance, pid: u32, key: Option<u64>) {
        self.ask(|r| Msg::StartedNew(instance, pid, key, r)).await
    }

    /// A new replica did not start; frees what its start held (`key`).
    pub async fn start_failed(&self, service: &str, error: String, key: Option<u64>) {
        self.ask(|r| Msg::StartFailed(service.to_string(), error, key, r))
            .await
    }

    /// Marks a replica as being removed; false if it already is.
    pub async fn removing(&self, id: &str) -> bool {
        self.ask(|r| Msg::Removing(id.to_string(), r)).await
    }

    pub async fn removed(&self, id: &str) {
        self.ask(|r| Msg::Removed(id.to_string(), r)).await
    }

    /// Marks a replica as checked; false if it already is.
    pub async fn checker_started(&self, id: &str) -> bool {
        self.ask(|r| Msg::CheckerStarted(id.to_string(), r)).await
    }

    pub async fn checker_ended(&self, id: &str, reset: bool) {
        self.ask(|r| Msg::CheckerEnded(id.to_string(), reset, r))
            .await
    }

    pub async fn forget_checks(&self, node: &str) {
        self.ask(|r| Msg::ForgetChecks(node.to_string(), r)).await
    }

    /// A replica's readiness (and failed probes in a row, when counted
    /// here); true if the readiness changed.
    pub async fn readiness(&self, id: &str, healthy: Option<bool>, failures: Option<u32>) -> bool {
        self.ask(|r| Msg::Readiness(id.to_string(), healthy, failures, r))
            .await
    }

    /// One worker round's decision for `service`, its starts' resources
    /// held (see [`decide`]).
    pub async fn decide(
        &self,
        table: Arc<Table>,
        reschedule_after: Duration,
        service: &str,
        instances: Vec<Instance>,
        now: Instant,
    ) -> Decided {
        let args = Box::new(DecideArgs {
            table,
            reschedule_after,
            service: service.to_string(),
            instances,
            now,
        });
        self.ask(|r| Msg::Decide(args, r)).await
    }
}
