//! `POST /api/v1/services/{name}/exec`: a command in one replica, on
//! whichever node runs it. Which replica is decided here, from the state
//! (pure: [`pick`]); the node runs the command and sends its output back.
//! The same path upgraded to a WebSocket runs it interactively: the
//! session's input and output are relayed between the socket (see
//! [`api::attach`]) and the node.

use std::time::{Duration, Instant};

use api::status::{ExecRequest, ExecResponse, DEFAULT_EXEC_TIMEOUT_SECS};
use api::{ApiError, ApiResponse};

use crate::agent::{AgentError, ProcessState};
use crate::control::state::State;
use crate::control::ControlPlane;

/// The replica of `service` to run in: `wanted` if it is one of its
/// running replicas, else the first ready one of the current version (by
/// slot), else the first ready one, else the first running one.
pub(crate) fn pick(
    st: &State,
    service: &str,
    wanted: Option<&str>,
    now: Instant,
) -> Result<String, ApiError> {
    let record = st
        .records
        .get(service)
        .ok_or_else(|| ApiError::service_not_found(service))?;
    let mut running: Vec<_> = st
        .instances
        .get(service)
        .into_iter()
        .flatten()
        .filter(|i| matches!(i.state, ProcessState::Running) && !st.removing.contains(&i.id))
        .collect();
    if let Some(id) = wanted {
        return running
            .iter()
            .find(|i| i.id == id)
            .map(|i| i.id.clone())
            .ok_or_else(|| {
                ApiError::not_found(format!("no running replica {id} of service {service}"))
            });
    }
    let has_check = crate::control::health::readiness(&record.spec).is_some();
    running.sort_by_key(|i| {
        (
            !st.ready(has_check, &i.id, now),
            i.version != record.version,
            i.slot,
            i.id.clone(),
        )
    });
    running
        .first()
        .map(|i| i.id.clone())
        .ok_or_else(|| ApiError::conflict(format!("service {service} has no running replica")))
}

impl ControlPlane {
    pub(crate) async fn exec(
        &self,
        service: &str,
        request: ExecRequest,
    ) -> Result<ApiResponse, ApiError> {
        let instance = {
            let st = self.inner().state();
            pick(&st, service, request.instance.as_deref(), Instant::now())?
        };
        let timeout =
            Duration::from_secs(request.timeout_secs.unwrap_or(DEFAULT_EXEC_TIMEOUT_SECS));
        let agent = self.inner().agent_of(&instance).map_err(answer_error)?;
        let out = agent
            .exec(&instance, &request.command, timeout)
            .await
            .map_err(answer_error)?;
        ApiResponse::ok(&ExecResponse {
            instance,
            exit_code: out.code,
            stdout: out.stdout,
            stderr: out.stderr,
            truncated: out.truncated,
            timed_out: out.timed_out,
        })
    }
}

impl ControlPlane {
    pub(crate) async fn attach(
        &self,
        service: &str,
        request: api::attach::AttachRequest,
    ) -> Result<ApiResponse, ApiError> {
        let instance = {
            let st = self.inner().state();
            pick(&st, service, request.instance.as_deref(), Instant::now())?
        };
        let agent = self.inner().agent_of(&instance).map_err(answer_error)?;
        let opts = cri::AttachOptions {
            tty: request.tty,
            cols: request.cols,
            rows: request.rows,
        };
        let session = agent
            .attach(&instance, &request.command, opts)
            .await
            .map_err(answer_error)?;
        tracing::info!(instance, tty = request.tty, "interactive exec");
        let (input, from_client) = tokio::sync::mpsc::channel(64);
        let (to_client, output) = tokio::sync::mpsc::channel(64);
        self.inner().spawn(relay(session, from_client, to_client));
        Ok(ApiResponse::Attach(api::attach::Session { input, output }))
    }
}

/// Relays a session between the client's socket and the node until the
/// command exits. The client gone (or the control plane stopping) drops
/// the node's input, which kills the command.
async fn relay(
    mut node: cri::Attached,
    mut from_client: tokio::sync::mpsc::Receiver<api::attach::Input>,
    to_client: tokio::sync::mpsc::Sender<api::attach::Output>,
) {
    use api::attach::{Input, Output};
    loop {
        tokio::select! {
            out = node.output.recv() => {
                let out = match out {
                    Some(cri::AttachOutput::Stdout(b)) => Output::Stdout(b.into()),
                    Some(cri::AttachOutput::Stderr(b)) => Output::Stderr(b.into()),
                    Some(cri::AttachOutput::Exit(code)) => Output::Exit(code),
                    None => Output::Error("the node lost the session".into()),
                };
                let last = matches!(out, Output::Exit(_) | Output::Error(_));
                if to_client.send(out).await.is_err() || last {
                    return;
                }
            }
            input = from_client.recv() => {
                let input = match input {
                    Some(Input::Stdin(b)) => cri::AttachInput::Stdin(b.to_vec()),
                    Some(Input::CloseStdin) => cri::AttachInput::CloseStdin,
                    Some(Input::Resize { cols, rows }) => cri::AttachInput::Resize { cols, rows },
                    None => return,
                };
                if node.input.send(input).await.is_err() {
                    // The command is over; its exit is on the way.
                    continue;
                }
            }
        }
    }
}

/// A node's failure as the API says it: gone replica 404, node out of
/// reach 503, anything else 500 with the node's words.
fn answer_error(e: AgentError) -> ApiError {
    match &e {
        AgentError::NotFound(_) => ApiError::not_found(e.to_string()),
        AgentError::Runtime(c) if c.is_not_found() => ApiError::not_found(e.to_string()),
        _ if e.is_unavailable() => ApiError::unavailable(e.to_string()),
        _ => ApiError::internal(format!("exec failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::Instance;

    fn instance(id: &str, version: u64, slot: u32, state: ProcessState) -> Instance {
        Instance {
            id: id.into(),
            node: "n1".into(),
            service: "web".into(),
            project: "p".into(),
            version,
            slot,
            pid: Some(1),
            state,
            ip: None,
            run: 0,
            restart: Default::default(),
        }
    }

    fn state(instances: Vec<Instance>) -> State {
        let mut st = State::default();
        let spec: api::spec::ServiceSpec =
            serde_json::from_value(serde_json::json!({"name": "web", "image": "busybox"})).unwrap();
        let record = crate::store::ServiceRecord::for_tests(spec, 2);
        st.put_record(record);
        st.listed("web", instances, Instant::now());
        st
    }

    #[test]
    fn picks_a_ready_replica_of_the_current_version_first() {
        let now = Instant::now();
        let st = state(vec![
            instance("web.1.a", 1, 0, ProcessState::Running),
            instance("web.2.b", 2, 1, ProcessState::Running),
            instance("web.0.c", 2, 0, ProcessState::Exited { code: 1 }),
        ]);
        assert_eq!(pick(&st, "web", None, now).unwrap(), "web.2.b");
        assert_eq!(pick(&st, "web", Some("web.1.a"), now).unwrap(), "web.1.a");
        assert_eq!(
            pick(&st, "web", Some("web.0.c"), now).unwrap_err().status,
            404
        );
        assert_eq!(pick(&st, "api", None, now).unwrap_err().status, 404);
        assert_eq!(
            pick(&state(vec![]), "web", None, now).unwrap_err().status,
            409
        );
    }
}
