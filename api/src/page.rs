//! The status page at `GET /`: one HTML file with its CSS and script
//! inline, embedded in the binary (no build step). It asks for a token,
//! keeps it in the tab's sessionStorage, and shows services, replicas,
//! nodes, recent events (live) and a log tail per service, all from the API.

/// The page.
pub const INDEX: &str = include_str!("page/index.html");

/// What the page may load and run: its own inline script and style, and
/// requests to this origin only.
pub const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
