//! The ingress routing table: the ready replicas of every domain and path
//! prefix (the longest prefix matching a request's path, segment by
//! segment, wins), weighted round robin over them, replicas taken out of
//! rotation for a while after refusing a connection, and what was
//! answered per domain.
//!
//! A table's key is the domain for its `/` route and the domain followed
//! by the prefix for any other (`app.test/api`): a node that knows no
//! prefixes never matches such a key to a Host.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a replica that refused a connection stays out of rotation.
const EJECT_FOR: Duration = Duration::from_secs(2);

/// One replica behind a domain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Backend {
    pub id: String,
    pub addr: SocketAddr,
    /// Relative share of requests (canaries get less).
    pub weight: u32,
    /// The route's prefix is removed before a request reaches it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strip_prefix: bool,
}

/// The table key of `prefix` (`/` or `/seg...`) on `domain`.
pub fn route_key(domain: &str, prefix: &str) -> String {
    if prefix == "/" {
        domain.to_ascii_lowercase()
    } else {
        format!("{}{prefix}", domain.to_ascii_lowercase())
    }
}

/// True if `path` lies under `prefix` (empty for `/`), segment by segment.
fn under(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// `path_and_query` without `prefix`: `/api/x?q` under `/api` is `/x?q`,
/// `/api` alone is `/`.
pub(crate) fn strip(path_and_query: &str, prefix: &str) -> String {
    let rest = path_and_query
        .strip_prefix(prefix)
        .unwrap_or(path_and_query);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
}

/// What the ingress answered for one domain since orca started.
#[derive(Debug, Default)]
pub struct Traffic {
    /// Responses by status class: 1xx, 2xx, 3xx, 4xx, 5xx.
    responses: [AtomicU64; 5],
    /// Attempts to reach a replica that failed (refused or broken); a
    /// request retried on another replica counts once per failed attempt.
    upstream_errors: AtomicU64,
}

impl Traffic {
    pub(crate) fn respond(&self, status: http::StatusCode) {
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Responses by status class, 1xx to 5xx.
    pub fn responses(&self) -> [u64; 5] {
        std::array::from_fn(|i| self.responses[i].load(Ordering::Relaxed))
    }

    pub fn upstream_errors(&self) -> u64 {
        self.upstream_errors.load(Ordering::Relaxed)
    }
}

/// The backends of one prefix of a domain.
pub(crate) struct Route {
    /// The path prefix, empty for `/`.
    pub(crate) prefix: String,
    /// Requests lose the prefix on their way to a replica.
    pub(crate) strip: bool,
    pub(crate) backends: Vec<Backend>,
    /// Each backend repeated by its weight, for weighted round robin.
    ring: Vec<usize>,
    next: AtomicUsize,
    /// The domain's counters, which outlive table changes.
    pub(crate) traffic: Arc<Traffic>,
}

impl Route {
    fn new(prefix: &str, backends: Vec<Backend>, traffic: Arc<Traffic>) -> Self {
        let ring = interleave(&backends);
        Self {
            prefix: prefix.to_string(),
            strip: !prefix.is_empty() && backends.iter().any(|b| b.strip_prefix),
            backends,
            ring,
            next: AtomicUsize::new(0),
            traffic,
        }
    }
}

/// Smooth weighted round robin: each backend appears `weight` times, spread out.
fn interleave(backends: &[Backend]) -> Vec<usize> {
    // Weights up to 10000 (canary shares), reduced by their common divisor
    // to keep the ring short.
    fn gcd(a: u32, b: u32) -> u32 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let divisor = backends
        .iter()
        .map(|b| b.weight.min(10_000))
        .fold(0, gcd)
        .max(1);
    let weight = |b: &Backend| i64::from(b.weight.min(10_000) / divisor);
    let total: i64 = backends.iter().map(weight).sum();
    let mut current = vec![0i64; backends.len()];
    let mut out = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = 0;
        for (i, b) in backends.iter().enumerate() {
            current[i] += weight(b);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(best);
    }
    out
}

/// The routing table, replaced whole whenever readiness changes.
#[derive(Default)]
pub struct Routes {
    /// Each domain's routes, longest prefix first.
    table: RwLock<HashMap<String, Vec<Arc<Route>>>>,
    ejected: RwLock<HashMap<SocketAddr, Instant>>,
    /// Per domain ever routed; kept when a domain goes, as counters are.
    traffic: RwLock<HashMap<String, Arc<Traffic>>>,
    /// Requests for a host no service claims.
    unrouted: AtomicU64,
    /// The certificates of the domains served over HTTPS.
    certs: super::tls::CertStore,
    /// ACME HTTP-01 answers in flight: token to key authorization.
    challenges: RwLock<HashMap<String, String>>,
}

impl Routes {
    /// Sets the backends of every route, keyed by [`route_key`] (routes
    /// not listed are removed).
    pub fn replace(&self, routes: HashMap<String, Vec<Backend>>) {
        let Ok(mut traffic) = self.traffic.write() else {
            return;
        };
        let current = self.table.read().map(|t| t.clone()).unwrap_or_default();
        let mut table: HashMap<String, Vec<Arc<Route>>> = HashMap::new();
        let mut unchanged = true;
        for (key, backends) in routes {
            let key = key.to_ascii_lowercase();
            let (domain, prefix) = match key.find('/') {
                Some(at) => key.split_at(at),
                None => (key.as_str(), ""),
            };
            let strip = backends.iter().any(|b| b.strip_prefix);
            // An unchanged route is kept, and with it its place in the turn.
            let kept = current
                .get(domain)
                .and_then(|rs| rs.iter().find(|r| r.prefix == prefix))
                .filter(|r| r.backends == backends && r.strip == (strip && !prefix.is_empty()));
            let route = match kept {
                Some(r) => r.clone(),
                None => {
                    unchanged = false;
                    let counters = traffic.entry(domain.to_string()).or_default().clone();
                    Arc::new(Route::new(prefix, backends, counters))
                }
            };
            table.entry(domain.to_string()).or_default().push(route);
        }
        drop(traffic);
        for routes in table.values_mut() {
            routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        }
        let count = |t: &HashMap<String, Vec<Arc<Route>>>| t.values().map(Vec::len).sum::<usize>();
        if unchanged && count(&table) == count(&current) {
            return;
        }
        if let Ok(mut t) = self.table.write() {
            *t = table;
        }
    }

    /// The certificates of the TLS domains.
    pub fn certs(&self) -> &super::tls::CertStore {
        &self.certs
    }

    /// Answers exactly these ACME HTTP-01 challenges (token to key
    /// authorization) from now on.
    pub fn replace_challenges(&self, challenges: HashMap<String, String>) {
        if let Ok(mut c) = self.challenges.write() {
            *c = challenges;
        }
    }

    /// The key authorization of challenge `token`, while it is in flight.
    pub(crate) fn challenge(&self, token: &str) -> Option<String> {
        self.challenges.read().ok()?.get(token).cloned()
    }

    /// The backends of every route of `domain` now.
    pub fn backends(&self, domain: &str) -> Option<Vec<Backend>> {
        self.table
            .read()
            .ok()?
            .get(&domain.to_ascii_lowercase())
            .map(|rs| rs.iter().flat_map(|r| r.backends.iter().cloned()).collect())
    }

    /// The counters of every domain ever routed, sorted by domain.
    pub fn traffic(&self) -> Vec<(String, Arc<Traffic>)> {
        let mut all: Vec<_> = self
            .traffic
            .read()
            .map(|t| t.iter().map(|(d, c)| (d.clone(), c.clone())).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Requests for hosts no service claims.
    pub fn unrouted(&self) -> u64 {
        self.unrouted.load(Ordering::Relaxed)
    }

    pub(crate) fn count_unrouted(&self) {
        self.unrouted.fetch_add(1, Ordering::Relaxed);
    }

    /// The route of `domain` (lowercase) whose prefix is the longest
    /// that `path` lies under; `Err(true)` if the domain has routes but
    /// none for the path, `Err(false)` if it has none.
    pub(crate) fn route(&self, domain: &str, path: &str) -> Result<Arc<Route>, bool> {
        let table = self.table.read().map_err(|_| false)?;
        let routes = table.get(domain).ok_or(false)?;
        routes
            .iter()
            .find(|r| under(path, &r.prefix))
            .cloned()
            .ok_or(true)
    }

    fn is_ejected(&self, addr: &SocketAddr) -> bool {
        let Ok(ejected) = self.ejected.read() else {
            return false;
        };
        // Nothing ejected is the common case: no clock read then.
        !ejected.is_empty()
            && ejected
                .get(addr)
                .is_some_and(|until| *until > Instant::now())
    }

    pub(crate) fn eject(&self, addr: SocketAddr) {
        if let Ok(mut e) = self.ejected.write() {
            e.retain(|_, until| *until > Instant::now());
            e.insert(addr, Instant::now() + EJECT_FOR);
        }
    }

    /// The index in `route.backends` of the next backend that is not
    /// ejected, skipping the addresses in `tried`.
    pub(crate) fn pick(&self, route: &Route, tried: &[SocketAddr]) -> Option<usize> {
        if route.ring.is_empty() {
            return None;
        }
        for _ in 0..route.ring.len() {
            let n = route.next.fetch_add(1, Ordering::Relaxed);
            let i = route.ring[n % route.ring.len()];
            let addr = &route.backends[i].addr;
            if !tried.contains(addr) && !self.is_ejected(addr) {
                return Some(i);
            }
        }
        // All ejected: try one anyway rather than fail outright.
        route.backends.iter().position(|b| !tried.contains(&b.addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(id: &str, port: u16, weight: u32) -> Backend {
        Backend {
            id: id.into(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            weight,
            strip_prefix: false,
        }
    }

    fn pick_id(routes: &Routes, route: &Route) -> String {
        route.backends[routes.pick(route, &[]).unwrap()].id.clone()
    }

    #[test]
    fn weighted_round_robin_spreads_by_weight() {
        let routes = Routes::default();
        routes.replace(HashMap::from([(
            "app.test".to_string(),
            vec![b("a", 1, 90), b("b", 2, 10)],
        )]));
        let route = routes.route("app.test", "/").unwrap();
        let mut counts = HashMap::new();
        for _ in 0..1000 {
            *counts.entry(pick_id(&routes, &route)).or_insert(0) += 1;
        }
        assert_eq!(counts["a"], 900);
        assert_eq!(counts["b"], 100);
        // Equal weights alternate.
        routes.replace(HashMap::from([(
            "x".to_string(),
            vec![b("a", 1, 1), b("b", 2, 1)],
        )]));
        let route = routes.route("x", "/").unwrap();
        let seq: Vec<String> = (0..4).map(|_| pick_id(&routes, &route)).collect();
        assert_ne!(seq[0], seq[1]);
        assert_ne!(seq[1], seq[2]);
    }

    #[test]
    fn ejected_backends_are_skipped() {
        let routes = Routes::default();
        routes.replace(HashMap::from([(
            "x".to_string(),
            vec![b("a", 1, 1), b("b", 2, 1)],
        )]));
        let route = routes.route("x", "/").unwrap();
        routes.eject(SocketAddr::from(([127, 0, 0, 1], 1)));
        for _ in 0..10 {
            assert_eq!(pick_id(&routes, &route), "b");
        }
        assert_eq!(routes.backends("X").unwrap().len(), 2);
    }

    #[test]
    fn an_unchanged_table_keeps_the_turn() {
        let routes = Routes::default();
        let table = || HashMap::from([("x".to_string(), vec![b("a", 1, 1), b("b", 2, 1)])]);
        routes.replace(table());
        let first = pick_id(&routes, &routes.route("x", "/").unwrap());
        routes.replace(table());
        // Not back to the start: the other backend is next.
        assert_ne!(pick_id(&routes, &routes.route("x", "/").unwrap()), first);
        let before = routes.route("x", "/").unwrap();
        routes.replace(HashMap::from([("x".to_string(), vec![b("a", 1, 1)])]));
        assert!(!Arc::ptr_eq(&before, &routes.route("x", "/").unwrap()));
    }

    #[test]
    fn the_longest_prefix_wins_segment_by_segment() {
        let routes = Routes::default();
        let stripping = |mut b: Backend| {
            b.strip_prefix = true;
            b
        };
        let table = || {
            HashMap::from([
                (route_key("App.test", "/"), vec![b("root", 1, 1)]),
                (
                    route_key("app.test", "/api"),
                    vec![stripping(b("api", 2, 1))],
                ),
                (route_key("app.test", "/api/v2"), vec![b("v2", 3, 1)]),
                (route_key("only.test", "/x"), vec![b("x", 4, 1)]),
            ])
        };
        routes.replace(table());
        let at = |domain: &str, path: &str| {
            routes
                .route(domain, path)
                .map(|r| (r.backends[0].id.clone(), r.strip))
        };
        assert_eq!(at("app.test", "/"), Ok(("root".into(), false)));
        assert_eq!(at("app.test", "/apix"), Ok(("root".into(), false)));
        assert_eq!(at("app.test", "/api"), Ok(("api".into(), true)));
        assert_eq!(at("app.test", "/api/users"), Ok(("api".into(), true)));
        assert_eq!(at("app.test", "/api/v2"), Ok(("v2".into(), false)));
        assert_eq!(at("app.test", "/api/v2/x"), Ok(("v2".into(), false)));
        assert_eq!(at("app.test", "/api/v20"), Ok(("api".into(), true)));
        assert_eq!(at("only.test", "/x/y"), Ok(("x".into(), false)));
        assert_eq!(at("only.test", "/"), Err(true));
        assert_eq!(at("none.test", "/"), Err(false));
        assert_eq!(routes.backends("app.test").unwrap().len(), 3);
        assert_eq!(strip("/api/users?id=1", "/api"), "/users?id=1");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api?q", "/api"), "/?q");
        // The same table again keeps every route as it was.
        let before = routes.route("app.test", "/api").unwrap();
        routes.replace(table());
        assert!(Arc::ptr_eq(
            &before,
            &routes.route("app.test", "/api").unwrap()
        ));
    }

    #[test]
    fn traffic_outlives_table_changes() {
        let routes = Routes::default();
        routes.replace(HashMap::from([("X".to_string(), vec![b("a", 1, 1)])]));
        let route = routes.route("x", "/").unwrap();
        route.traffic.respond(http::StatusCode::OK);
        route.traffic.respond(http::StatusCode::BAD_GATEWAY);
        route.traffic.upstream_error();
        routes.replace(HashMap::new());
        routes.replace(HashMap::from([("x".to_string(), vec![b("b", 2, 1)])]));
        routes
            .route("x", "/")
            .unwrap()
            .traffic
            .respond(http::StatusCode::OK);
        let all = routes.traffic();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].0, "x");
        assert_eq!(all[0].1.responses(), [0, 2, 0, 0, 1]);
        assert_eq!(all[0].1.upstream_errors(), 1);
    }
}
