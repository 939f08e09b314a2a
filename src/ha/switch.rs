//! The API of a server that shares its store: while it leads, its control
//! plane answers; while another server leads, requests go on to that one
//! (see [`api::forward`]), but for `/metrics`, which tells of this server;
//! while no leader is known (or it does not answer), reads are answered
//! from this server's own view of the store, kept current by a watch, and
//! changes are refused with 503.

use std::sync::Arc;

use api::forward::Forward;
use api::server::Handler;
use api::{ApiError, ApiRequest, ApiResponse, Caller};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::ServerInfo;
use crate::control::ControlPlane;

/// What this server does now, for the API and the cluster port.
#[derive(Clone)]
pub enum Role {
    Leading(Arc<Leading>),
    Following(Option<ServerInfo>),
}

/// One term of leadership: its control plane, and what ends with it.
pub struct Leading {
    pub term: u64,
    pub control: ControlPlane,
    /// Cancelled when the term ends: every node stream ends with it.
    pub ended: CancellationToken,
}

/// See the module doc.
pub struct Switch {
    pub role: watch::Receiver<Role>,
    /// The control plane that does nothing but answer reads (never started).
    pub view: ControlPlane,
    /// This server's id, set on what it sends on.
    pub me: String,
}

impl Switch {
    /// Who answers here now.
    fn answering(&self) -> ControlPlane {
        match &*self.role.borrow() {
            Role::Leading(l) => l.control.clone(),
            Role::Following(_) => self.view.clone(),
        }
    }
}

#[async_trait::async_trait]
impl Handler for Switch {
    fn authenticate(&self, token: &str) -> Option<Caller> {
        Handler::authenticate(&self.answering(), token)
    }

    async fn handle(
        &self,
        request: ApiRequest,
        caller: Option<Caller>,
    ) -> Result<ApiResponse, ApiError> {
        let leading = matches!(&*self.role.borrow(), Role::Leading(_));
        if !leading && !request.is_read() {
            return Err(ApiError::new(
                503,
                "no server leads the control plane now (an election is under way, or the store cannot be reached); nothing was changed: try again in a few seconds",
            ));
        }
        self.answering().handle(request, caller).await
    }

    fn observe(
        &self,
        route: &'static str,
        method: &str,
        status: u16,
        elapsed: std::time::Duration,
    ) {
        self.answering().observe(route, method, status, elapsed)
    }

    fn access_of(&self, request: &ApiRequest) -> api::auth::Access {
        self.answering().access_of(request)
    }

    fn forward_to(&self, _method: &http::Method, path: &str) -> Option<Forward> {
        match &*self.role.borrow() {
            Role::Following(Some(leader)) if path != "/metrics" => Some(Forward {
                to: leader.api.clone(),
                by: self.me.clone(),
            }),
            _ => None,
        }
    }
}
