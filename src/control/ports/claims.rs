//! Which published ports a deploy may take: none another service holds
//! (deployed, or earlier in the same deploy), and none of orca's own
//! listeners. A conflict is a 409 that names the holder.

use api::spec::{Protocol, ServiceSpec};
use api::ApiError;

/// One of orca's own listeners: port, protocol, and what it is.
pub(crate) type Own = (u16, Protocol, &'static str);

/// Checks `spec`'s ports against `others` (the specs of every other
/// service that keeps its ports) and `own`.
pub(crate) fn check<'a>(
    spec: &ServiceSpec,
    others: impl Iterator<Item = &'a ServiceSpec>,
    own: &[Own],
) -> Result<(), ApiError> {
    let mine = spec.published_ports();
    if mine.is_empty() {
        return Ok(());
    }
    for p in &mine {
        if let Some((_, _, what)) = own
            .iter()
            .find(|(port, proto, _)| *port == p.published && *proto == p.protocol)
        {
            return Err(ApiError::conflict(format!(
                "{}: port {} is orca's own {what}",
                spec.name,
                p.key()
            )));
        }
    }
    for other in others.filter(|o| o.name != spec.name) {
        for theirs in other.published_ports() {
            if let Some(p) = mine.iter().find(|p| {
                p.published == theirs.published
                    && p.protocol == theirs.protocol
                    && overlap(p.host_ip, theirs.host_ip)
            }) {
                return Err(ApiError::conflict(format!(
                    "{}: port {} is already published by {} (project {})",
                    spec.name,
                    p.key(),
                    other.name,
                    other.project
                )));
            }
        }
    }
    Ok(())
}

/// Two bindings of one port clash unless both name different addresses.
fn overlap(a: Option<std::net::Ipv4Addr>, b: Option<std::net::Ipv4Addr>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, ports: &[&str]) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({ "name": name, "image": "x", "ports": ports }))
            .unwrap()
    }

    #[test]
    fn held_ports_and_orca_listeners_are_refused_by_name() {
        let own: &[Own] = &[(6880, Protocol::Tcp, "API"), (53, Protocol::Udp, "DNS")];
        let mqtt = spec("mqtt", &["1883:1883"]);
        let others = [mqtt.clone()];
        let e = check(&spec("mqtt2", &["1883:1884"]), others.iter(), own).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.message.contains("1883/tcp is already published by mqtt"),
            "{}",
            e.message
        );
        // Same number, other protocol: fine; the service itself: fine.
        assert!(check(&spec("dns", &["1883:53/udp"]), others.iter(), own).is_ok());
        assert!(check(&mqtt, others.iter(), own).is_ok());
        let e = check(&spec("api", &["6880:80"]), others.iter(), own).unwrap_err();
        assert!(e.message.contains("orca's own API"), "{}", e.message);
        let e = check(&spec("dns", &["53:53/udp"]), others.iter(), own).unwrap_err();
        assert!(
            e.message.contains("53/udp is orca's own DNS"),
            "{}",
            e.message
        );
        // Different addresses of a node: both may publish.
        let a = spec("a", &["10.0.0.1:8080:80"]);
        assert!(check(&spec("b", &["10.0.0.2:8080:80"]), [a.clone()].iter(), own).is_ok());
        assert!(check(&spec("c", &["8080:80"]), [a].iter(), own).is_err());
    }
}
