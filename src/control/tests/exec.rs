//! Interactive exec through the control plane, over a fake node.

use api::attach::{AttachRequest, Input, Output};
use api::{ApiRequest, ApiResponse, Handler};
use serde_json::json;

use super::{admin, call, deploy_req, eventually, plane, running};

/// An interactive exec is relayed both ways between the client's session
/// and the node's (the fake node echoes stdin), and ends with the exit.
#[tokio::test]
async fn interactive_exec_relays_both_ways_until_the_exit() {
    let (cp, agent) = plane().await;
    call(
        &cp,
        deploy_req(json!([{ "name": "web", "image": "app:v1", "replicas": 1 }])),
    )
    .await
    .unwrap();
    eventually("1 replica", || running(&agent, "web") == 1).await;
    eventually("listed", || {
        cp.status(None).services[0].running_replicas == 1
    })
    .await;
    let request = ApiRequest::Attach {
        name: "web".into(),
        request: AttachRequest {
            command: vec!["sh".into()],
            instance: None,
            tty: true,
            cols: 80,
            rows: 24,
        },
    };
    let ApiResponse::Attach(mut s) = cp.handle(request, admin()).await.unwrap() else {
        panic!("not a session");
    };
    assert_eq!(s.output.recv().await, Some(Output::Stdout("sh".into())));
    s.input.send(Input::Stdin("ls\n".into())).await.unwrap();
    assert_eq!(s.output.recv().await, Some(Output::Stdout("ls\n".into())));
    s.input.send(Input::CloseStdin).await.unwrap();
    assert_eq!(s.output.recv().await, Some(Output::Exit(0)));
    assert_eq!(s.output.recv().await, None);

    let request = ApiRequest::Attach {
        name: "nope".into(),
        request: AttachRequest {
            command: vec!["sh".into()],
            instance: None,
            tty: false,
            cols: 80,
            rows: 24,
        },
    };
    assert_eq!(
        cp.handle(request, admin()).await.err().map(|e| e.status),
        Some(404)
    );
}
