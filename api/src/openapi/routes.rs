//! What a route is, as data: method, path, the [`ApiRequest::route`] label
//! it parses to, who may call it, its parameters, body and answers. The
//! table of every route is in [`super::table`]; the OpenAPI document is
//! built from it, and the tests check it against the parser both ways.
//!
//! [`ApiRequest::route`]: crate::ApiRequest::route

use crate::auth::Access;

/// A query parameter's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// A DNS label (service, project).
    Name,
    /// An unsigned integer, with its bounds.
    Number(u64, u64),
    Bool,
    /// Repeated: `?command=sh&command=-c`.
    List,
}

/// A query parameter.
#[derive(Debug, Clone, Copy)]
pub struct Query {
    pub name: &'static str,
    pub kind: Kind,
    pub about: &'static str,
}

pub(super) const fn q(name: &'static str, kind: Kind, about: &'static str) -> Query {
    Query { name, kind, about }
}

/// A request body: the component schema it follows and an example.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    pub schema: &'static str,
    pub required: bool,
    pub example: &'static str,
}

/// What a route answers on success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// JSON following a component schema.
    Json(u16, &'static str),
    /// Plain text (logs, followed or not).
    Text,
    /// Prometheus' text format.
    Metrics,
    Html,
    /// Server-Sent Events.
    Events,
    /// 101: a WebSocket.
    Upgrade,
    /// A binary stream of this media type.
    Binary(&'static str),
}

/// One route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// With `{name}`, `{project}` or `{id}` for path parameters.
    pub path: &'static str,
    /// The [`crate::ApiRequest::route`] label; the operation id.
    pub op: &'static str,
    pub access: Access,
    pub tag: &'static str,
    pub summary: &'static str,
    pub query: &'static [Query],
    pub body: Option<Body>,
    pub replies: &'static [Reply],
    /// Error statuses it may answer (with `{"error": ...}`).
    pub errors: &'static [u16],
}
