//! The registry client's rules, one by one.

use super::*;

fn client(config: RegistryConfig) -> RegistryClient {
    RegistryClient::new(config).unwrap()
}

#[test]
fn loopback_is_plain_http() {
    assert!(is_loopback("127.0.0.1:5000"));
    assert!(is_loopback("127.1.2.3"));
    assert!(is_loopback("localhost:5000"));
    assert!(!is_loopback("10.0.0.1:5000"));
    assert!(!is_loopback("registry-1.docker.io"));
}

#[test]
fn mirrors_come_first() {
    let mut config = RegistryConfig::default();
    config
        .mirrors
        .insert("docker.io".into(), "http://127.0.0.1:5000/".into());
    config.insecure.push("reg.lan:5000".into());
    let c = client(config);
    let e = c.endpoints(&ImageRef::parse("nginx:alpine").unwrap());
    assert_eq!(e.len(), 2);
    assert_eq!(
        (e[0].scheme, e[0].host.as_str(), e[0].mirror),
        ("http", "127.0.0.1:5000", true)
    );
    assert_eq!(
        (e[1].scheme, e[1].host.as_str(), e[1].mirror),
        ("https", "registry-1.docker.io", false)
    );
    let e = c.endpoints(&ImageRef::parse("reg.lan:5000/app").unwrap());
    assert_eq!((e[0].scheme, e.len()), ("http", 1));
    let e = c.endpoints(&ImageRef::parse("ghcr.io/a/b").unwrap());
    assert_eq!(e[0].scheme, "https");
}

#[test]
fn credentials_stay_on_the_registrys_site_and_scheme() {
    assert!(same_site("auth.docker.io", "registry-1.docker.io"));
    assert!(same_site("ghcr.io", "ghcr.io"));
    assert!(!same_site("evil.example", "ghcr.io"));
    assert!(!same_site("10.0.0.1", "10.0.0.2"));
    assert!(same_origin("https://a.io/x", "https://a.io/y"));
    assert!(!same_origin("http://a.io/x", "https://a.io/x"));
    assert!(!same_origin("https://cdn.a.io/x", "https://a.io/x"));
    let config = RegistryConfig {
        insecure: vec!["reg.lan:5000".into()],
        ..Default::default()
    };
    let client = RegistryClient::new(config).unwrap();
    let hub = Endpoint {
        scheme: "https",
        host: "registry-1.docker.io".into(),
        mirror: false,
    };
    assert!(client.may_send_credentials(&hub, "https://auth.docker.io/token"));
    assert!(!client.may_send_credentials(&hub, "http://auth.docker.io/token"));
    assert!(!client.may_send_credentials(&hub, "https://evil.example/token"));
    assert!(client.may_send_credentials(&hub, "http://127.0.0.1:9/token"));
    assert!(client.may_send_credentials(&hub, "http://reg.lan:5000/token"));
    assert!(!client.may_send_credentials(&hub, "http://reg.lan:6000/token"));
}

#[test]
fn redirects_resolve() {
    assert_eq!(
        resolve_location("http://a:1/v2/x/blobs/y", "/other?z=1"),
        "http://a:1/other?z=1"
    );
    assert_eq!(
        resolve_location("http://a/v2", "https://cdn/b"),
        "https://cdn/b"
    );
    assert_eq!(host_of("https://cdn.example/b/c"), "cdn.example");
}
