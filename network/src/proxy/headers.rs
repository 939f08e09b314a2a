//! What the ingress changes in a request's head on its way to a replica,
//! and in a response's head on its way back: hop-by-hop headers go, the
//! `X-Forwarded-*` headers say who asked and how, and the replica gets the
//! path in origin form. Pure functions of the head, so each rule is tested
//! on its own.

use std::net::IpAddr;

use http::header::{self, HeaderName, HeaderValue, HOST};
use http::uri::PathAndQuery;
use http::Uri;

use super::ingress::Scheme;

/// Headers that belong to one hop and are never forwarded.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes the hop-by-hop headers, and those the Connection header names.
pub(crate) fn strip_hop_by_hop(headers: &mut http::HeaderMap) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Rewrites a client's request head for a replica: hop-by-hop headers go
/// (an `upgrade` the client asked for is asked for again), `client` is
/// appended to X-Forwarded-For, X-Forwarded-Proto and X-Forwarded-Host say
/// how and for which `host` it came, a missing Host header is set, and the
/// URI keeps the path and query alone.
pub(crate) fn to_replica(
    parts: &mut http::request::Parts,
    client: IpAddr,
    scheme: Scheme,
    host: HeaderValue,
    upgrade: Option<&HeaderValue>,
) {
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = upgrade {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, u.clone());
    }
    let forwarded_for = match parts
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {client}"),
        None => client.to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&forwarded_for) {
        parts.headers.insert("x-forwarded-for", v);
    }
    let proto = match scheme {
        Scheme::Http => "http",
        Scheme::Https => "https",
    };
    parts
        .headers
        .insert("x-forwarded-proto", HeaderValue::from_static(proto));
    parts.headers.insert("x-forwarded-host", host.clone());
    if !parts.headers.contains_key(HOST) {
        parts.headers.insert(HOST, host);
    }
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
}

/// Takes a route's `prefix` off the request's path (`strip_prefix`), and
/// says which in X-Forwarded-Prefix, so that an app can build its links.
pub(crate) fn strip_prefix(parts: &mut http::request::Parts, prefix: &str) {
    let whole = parts.uri.path_and_query().map_or("/", PathAndQuery::as_str);
    let stripped = super::routes::strip(whole, prefix);
    if let Ok(uri) = Uri::try_from(stripped) {
        parts.uri = uri;
        if let Ok(v) = HeaderValue::from_str(prefix) {
            parts.headers.insert("x-forwarded-prefix", v);
        }
    }
}

/// Rewrites a replica's response head for the client: hop-by-hop headers go.
pub(crate) fn to_client(parts: &mut http::response::Parts) {
    strip_hop_by_hop(&mut parts.headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn a_replica_learns_who_asked_and_how() {
        let mut parts = head(
            http::Request::get("http://shop.test/cart?id=7")
                .header("x-forwarded-for", "203.0.113.9")
                .header("te", "trailers")
                .header("x-kept", "1"),
        );
        let host = HeaderValue::from_static("shop.test");
        to_replica(
            &mut parts,
            "198.51.100.4".parse().unwrap(),
            Scheme::Https,
            host,
            None,
        );
        let h = &parts.headers;
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.4");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "shop.test");
        assert_eq!(h[HOST], "shop.test");
        assert_eq!(h["x-kept"], "1");
        assert!(!h.contains_key("te"));
        // Origin form: the path and query alone.
        assert_eq!(parts.uri, "/cart?id=7");
    }

    #[test]
    fn a_client_host_header_stays_and_an_upgrade_is_asked_again() {
        let mut parts = head(
            http::Request::get("/ws")
                .header(HOST, "chat.test:8080")
                .header("connection", "Upgrade")
                .header("upgrade", "websocket"),
        );
        let upgrade = parts.headers.get(header::UPGRADE).cloned();
        to_replica(
            &mut parts,
            "10.0.0.1".parse().unwrap(),
            Scheme::Http,
            HeaderValue::from_static("chat.test:8080"),
            upgrade.as_ref(),
        );
        let h = &parts.headers;
        assert_eq!(h[HOST], "chat.test:8080");
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(parts.uri, "/ws");
    }

    #[test]
    fn a_response_loses_its_hop_by_hop_headers() {
        let (mut parts, ()) = http::Response::builder()
            .header("connection", "close")
            .header("transfer-encoding", "chunked")
            .header("content-type", "text/plain")
            .body(())
            .unwrap()
            .into_parts();
        to_client(&mut parts);
        assert_eq!(parts.headers.len(), 1);
        assert_eq!(parts.headers["content-type"], "text/plain");
    }
}
