//! The URL and host rules of the registry client: where a redirect goes,
//! which hosts are one site or one origin, and which are loopback (reached
//! over plain HTTP). Pure string work on `scheme://host[:port]/path`.

use std::net::Ipv4Addr;

/// True for `localhost[:port]` and 127.0.0.0/8 addresses.
pub fn is_loopback(host_port: &str) -> bool {
    let host = strip_port(host_port);
    host == "localhost"
        || host
            .parse::<Ipv4Addr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
        || host == "[::1]"
}

pub(super) fn resolve_location(current: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = current
        .find("://")
        .and_then(|i| current[i + 3..].find('/').map(|j| i + 3 + j))
        .unwrap_or(current.len());
    format!("{}{}", &current[..origin_end], location)
}

pub(super) fn scheme_of(url: &str) -> &str {
    url.split_once("://").map(|(s, _)| s).unwrap_or("")
}

/// True when both URLs have the same scheme, host and port.
pub(super) fn same_origin(a: &str, b: &str) -> bool {
    scheme_of(a).eq_ignore_ascii_case(scheme_of(b)) && host_of(a).eq_ignore_ascii_case(host_of(b))
}

pub(super) fn strip_port(host_port: &str) -> &str {
    match host_port.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.ends_with(':') => h,
        _ => host_port,
    }
}

/// True when hosts `a` and `b` are one site: equal, or (for names) sharing
/// their last two labels.
pub(super) fn same_site(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    if a == b {
        return true;
    }
    let is_name = |h: &str| h.parse::<std::net::IpAddr>().is_err() && !h.starts_with('[');
    let site = |h: &str| -> Option<String> {
        let labels: Vec<&str> = h.split('.').collect();
        (labels.len() >= 2).then(|| labels[labels.len() - 2..].join("."))
    };
    is_name(&a) && is_name(&b) && site(&a).is_some() && site(&a) == site(&b)
}

pub(super) fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    rest.split('/').next().unwrap_or(rest)
}
