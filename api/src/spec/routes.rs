//! Path routes: the prefixes of a domain a service serves (`routes`, with
//! `domain`), checked so that each is a clean URL path that the ingress can
//! match segment by segment, and compared between services for clashes.

use crate::ApiError;

/// Most prefixes one service may claim.
const MAX_ROUTES: usize = 32;

/// The prefixes a service serves on its domain: its `routes`, or `/`.
pub fn route_prefixes(routes: &[String]) -> Vec<&str> {
    if routes.is_empty() {
        vec!["/"]
    } else {
        routes.iter().map(String::as_str).collect()
    }
}

/// The first prefix two services would both claim, if any.
pub fn routes_overlap<'a>(mine: &'a [String], theirs: &[String]) -> Option<&'a str> {
    let theirs = route_prefixes(theirs);
    route_prefixes(mine)
        .into_iter()
        .find(|p| theirs.contains(p))
}

/// A prefix: `/` or `/seg[/seg...]`, no trailing slash, no empty, `.` or
/// `..` segment, and only characters a URL path carries unescaped.
fn check_prefix(route: &str) -> Result<(), ApiError> {
    let bad = |why: &str| {
        Err(ApiError::bad_request(format!(
            "invalid route {route:?}: {why}"
        )))
    };
    if route == "/" {
        return Ok(());
    }
    let Some(rest) = route.strip_prefix('/') else {
        return bad("must start with /");
    };
    if route.len() > 256 {
        return bad("longer than 256 characters");
    }
    for segment in rest.split('/') {
        if segment.is_empty() {
            return bad("an empty segment (// or a trailing /)");
        }
        if segment == "." || segment == ".." {
            return bad("a . or .. segment");
        }
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@%".contains(&b);
        if !segment.bytes().all(plain) {
            return bad("only letters, digits and -._~!$&'()*+,;=:@% in a segment");
        }
    }
    Ok(())
}

/// `routes` and `strip_prefix` as a whole.
pub(crate) fn check_routes(
    routes: &[String],
    strip_prefix: bool,
    domain: Option<&String>,
) -> Result<(), ApiError> {
    if !routes.is_empty() && domain.is_none() {
        return Err(ApiError::bad_request("routes needs a domain"));
    }
    if strip_prefix && routes.is_empty() {
        return Err(ApiError::bad_request(
            "strip_prefix needs routes (a prefix to strip)",
        ));
    }
    if routes.len() > MAX_ROUTES {
        return Err(ApiError::bad_request(format!(
            "too many routes: at most {MAX_ROUTES}"
        )));
    }
    for (i, r) in routes.iter().enumerate() {
        check_prefix(r)?;
        if routes[..i].contains(r) {
            return Err(ApiError::bad_request(format!(
                "route {r:?} is listed twice"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_clean_paths() {
        let d = Some("app.test".to_string());
        for fine in [
            vec!["/"],
            vec!["/api"],
            vec!["/api/v2", "/static"],
            vec!["/a-b_c.d~e"],
        ] {
            let r: Vec<String> = fine.iter().map(|s| s.to_string()).collect();
            check_routes(&r, false, d.as_ref()).unwrap();
        }
        for bad in [
            "api", "/api/", "//api", "/a//b", "/a/../b", "/./a", "/a b", "/a?x", "/a#x", "",
        ] {
            let err = check_routes(&[bad.to_string()], false, d.as_ref()).unwrap_err();
            assert_eq!(err.status, 400, "{bad}");
            assert!(
                err.message.contains("invalid route"),
                "{bad}: {}",
                err.message
            );
        }
        let twice = check_routes(&["/a".into(), "/a".into()], false, d.as_ref()).unwrap_err();
        assert!(twice.message.contains("twice"), "{}", twice.message);
        let no_domain = check_routes(&["/a".into()], false, None).unwrap_err();
        assert!(no_domain.message.contains("needs a domain"));
        let strip_alone = check_routes(&[], true, d.as_ref()).unwrap_err();
        assert!(strip_alone.message.contains("strip_prefix needs routes"));
    }

    #[test]
    fn overlaps_count_the_default_route() {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(routes_overlap(&s(&[]), &s(&[])), Some("/"));
        assert_eq!(routes_overlap(&s(&["/api"]), &s(&[])), None);
        assert_eq!(routes_overlap(&s(&["/api", "/x"]), &s(&["/x"])), Some("/x"));
        assert_eq!(routes_overlap(&s(&["/"]), &s(&[])), Some("/"));
        assert_eq!(routes_overlap(&s(&["/api"]), &s(&["/api/v2"])), None);
    }
}
