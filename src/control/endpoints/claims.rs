//! What a deploy may claim of the ingress: a domain, or a path prefix of
//! one (`routes`). Services of one project share a domain by prefix; two
//! never claim the same prefix, whether one is deployed already or both
//! come in one request; and a domain never spans projects (a deployer of
//! one project cannot take a path of another's domain).

use api::spec::ServiceSpec;
use api::ApiError;

/// 409 if a service of `others` (other than `spec` itself) serves a prefix
/// of `spec`'s domain that `spec` claims too.
pub(crate) fn domain<'a>(
    spec: &ServiceSpec,
    others: impl Iterator<Item = &'a ServiceSpec>,
) -> Result<(), ApiError> {
    let Some(domain) = &spec.domain else {
        return Ok(());
    };
    for other in others {
        let same = other.name != spec.name
            && other
                .domain
                .as_deref()
                .is_some_and(|d| d.eq_ignore_ascii_case(domain));
        if !same {
            continue;
        }
        if other.project != spec.project {
            return Err(ApiError::conflict(format!(
                "{}: domain {domain} is served by {} of project {} (a domain's routes stay in one project)",
                spec.name, other.name, other.project
            )));
        }
        if let Some(prefix) = api::spec::routes_overlap(&spec.routes, &other.routes) {
            let what = if prefix == "/" {
                format!("domain {domain}")
            } else {
                format!("route {domain}{prefix}")
            };
            return Err(ApiError::conflict(format!(
                "{}: {what} is already served by {}",
                spec.name, other.name
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, domain: &str, routes: &[&str]) -> ServiceSpec {
        serde_json::from_value(serde_json::json!({
            "name": name, "image": "i", "port": 80, "domain": domain, "routes": routes
        }))
        .unwrap()
    }

    #[test]
    fn prefixes_of_one_domain_are_shared_never_twice() {
        let web = spec("web", "app.test", &[]);
        let api = spec("api", "APP.test", &["/api"]);
        assert!(domain(&api, [&web].into_iter()).is_ok());
        let clash = domain(
            &spec("api2", "app.test", &["/x", "/api"]),
            [&web, &api].into_iter(),
        )
        .unwrap_err();
        assert_eq!(clash.status, 409);
        assert!(
            clash
                .message
                .contains("route app.test/api is already served by api"),
            "{}",
            clash.message
        );
        let root = domain(&spec("web2", "app.test", &[]), [&web].into_iter()).unwrap_err();
        assert!(
            root.message
                .contains("domain app.test is already served by web"),
            "{}",
            root.message
        );
        // A new version of the same service is no clash.
        assert!(domain(&web, [&web].into_iter()).is_ok());
        assert!(domain(&spec("o", "other.test", &[]), [&web].into_iter()).is_ok());
        // Another project never takes a path of the domain.
        let mut foreign = spec("admin", "app.test", &["/admin"]);
        foreign.project = "other".into();
        let e = domain(&foreign, [&web, &api].into_iter()).unwrap_err();
        assert_eq!(e.status, 409);
        assert!(
            e.message.contains("served by web of project default"),
            "{}",
            e.message
        );
    }
}
