//! Published ports (`ports`): compose's short syntax
//! (`"[host_ip:]published:target[/tcp|udp]"`) or the long form, each read
//! into one [`PublishedPort`] and checked.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// Most published ports one service may have.
const MAX_PORTS: usize = 64;

/// `tcp` or `udp`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    Default,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// Where a published port accepts.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    /// Every ready node accepts and forwards to ready replicas on any node.
    #[default]
    Mesh,
    /// Only nodes that run a replica accept, to their own replicas, with
    /// the client's address kept.
    Host,
}

/// One entry of `ports`: the short syntax or the long form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum PortSpec {
    Short(String),
    Long(PublishedPort),
}

/// A published port, as the long form writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishedPort {
    /// The port nodes accept on.
    pub published: u16,
    /// The replica's port.
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PortMode,
    /// Accept only on this address of a node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<Ipv4Addr>,
}

impl PublishedPort {
    /// `1883/tcp`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.published, self.protocol.as_str())
    }
}

impl PortSpec {
    /// The port this entry publishes.
    pub fn parse(&self) -> Result<PublishedPort, String> {
        let p = match self {
            PortSpec::Long(p) => p.clone(),
            PortSpec::Short(s) => parse_short(s)?,
        };
        if p.published == 0 || p.target == 0 {
            return Err(format!(
                "invalid port {}: published and target must be 1 to 65535",
                p.key()
            ));
        }
        if p.host_ip
            .is_some_and(|ip| ip.is_multicast() || ip.is_broadcast())
        {
            return Err(format!(
                "invalid port {}: host_ip must be a unicast address",
                p.key()
            ));
        }
        Ok(p)
    }
}

/// `"[host_ip:]published:target[/tcp|udp]"`.
fn parse_short(s: &str) -> Result<PublishedPort, String> {
    let bad = |why: &str| {
        format!(
            "invalid port {s:?}: {why} (\"PUBLISHED:TARGET[/udp]\", \"HOST_IP:PUBLISHED:TARGET\")"
        )
    };
    let (ports, protocol) = match s.rsplit_once('/') {
        Some((p, "tcp")) => (p, Protocol::Tcp),
        Some((p, "udp")) => (p, Protocol::Udp),
        Some((_, other)) => return Err(bad(&format!("protocol {other:?} is neither tcp nor udp"))),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = ports.split(':').collect();
    let (host_ip, published, target) = match parts.as_slice() {
        [published, target] => (None, *published, *target),
        [ip, published, target] => {
            let ip: Ipv4Addr = ip
                .parse()
                .map_err(|_| bad(&format!("{ip:?} is not an IPv4 address")))?;
            (Some(ip), *published, *target)
        }
        [_] => return Err(bad("a published port is needed")),
        _ => return Err(bad("too many parts")),
    };
    let number = |p: &str| -> Result<u16, String> {
        if p.contains('-') {
            return Err(bad("port ranges are not supported; list each port"));
        }
        p.parse()
            .map_err(|_| bad(&format!("{p:?} is not a port number")))
    };
    Ok(PublishedPort {
        published: number(published)?,
        target: number(target)?,
        protocol,
        mode: PortMode::Mesh,
        host_ip,
    })
}

/// `ports` of one spec: each parses, none twice.
pub(super) fn check_ports(ports: &[PortSpec]) -> Result<(), ApiError> {
    if ports.len() > MAX_PORTS {
        return Err(ApiError::bad_request(format!("ports: at most {MAX_PORTS}")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for p in ports {
        let p = p.parse().map_err(ApiError::bad_request)?;
        if !seen.insert(p.key()) {
            return Err(ApiError::bad_request(format!(
                "ports: {} is listed twice",
                p.key()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short(s: &str) -> Result<PublishedPort, String> {
        PortSpec::Short(s.into()).parse()
    }

    #[test]
    fn short_syntax_reads_like_compose() {
        let p = short("1883:1883").unwrap();
        assert_eq!(
            (p.published, p.target, p.protocol),
            (1883, 1883, Protocol::Tcp)
        );
        let p = short("5353:53/udp").unwrap();
        assert_eq!(
            (p.published, p.target, p.protocol),
            (5353, 53, Protocol::Udp)
        );
        let p = short("127.0.0.1:8080:80/tcp").unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::LOCALHOST));
        assert_eq!(p.key(), "8080/tcp");
        for bad in [
            "80",
            "0:80",
            "80:0",
            "8000-8010:80",
            "a:80",
            "80:80/sctp",
            "::1:80:80",
            "1:2:3:4",
        ] {
            assert!(short(bad).is_err(), "{bad}");
        }
        let long: PortSpec = serde_json::from_str(
            r#"{"published": 53, "target": 5353, "protocol": "udp", "mode": "host"}"#,
        )
        .unwrap();
        let p = long.parse().unwrap();
        assert_eq!((p.protocol, p.mode), (Protocol::Udp, PortMode::Host));
        assert!(check_ports(&[
            PortSpec::Short("80:80".into()),
            PortSpec::Short("80:8080/tcp".into())
        ])
        .is_err());
        assert!(check_ports(&[
            PortSpec::Short("53:53/udp".into()),
            PortSpec::Short("53:53/tcp".into())
        ])
        .is_ok());
    }
}
