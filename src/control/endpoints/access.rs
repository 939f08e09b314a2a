//! Who may deploy what: a scoped token deploys only into its project, and
//! a spec that names secrets (`${secrets.KEY}`) needs an admin or a
//! deployer scoped to the spec's project.

use api::spec::ServiceSpec;
use api::{ApiError, Caller};

/// The secret names a spec's env refers to (`${secrets.KEY}`).
pub(crate) fn secret_refs(spec: &ServiceSpec) -> Vec<String> {
    let mut out = Vec::new();
    for value in spec.env.values() {
        let mut rest = value.as_str();
        while let Some(start) = rest.find("${secrets.") {
            let after = &rest[start + "${secrets.".len()..];
            match after.find('}') {
                Some(end) => {
                    out.push(after[..end].to_string());
                    rest = &after[end + 1..];
                }
                None => {
                    out.push(after.to_string());
                    break;
                }
            }
        }
    }
    out
}

/// Whether `caller` may deploy `spec`; `None` is orca itself (a
/// webhook's redeploy of a stored spec).
pub(crate) fn authorize(caller: Option<&Caller>, spec: &ServiceSpec) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    if !caller.may_change(&spec.project) {
        return Err(ApiError::forbidden(format!(
            "{}: token {:?} is scoped to project {}",
            spec.name,
            caller.name,
            caller.project.as_deref().unwrap_or_default()
        )));
    }
    if !secret_refs(spec).is_empty() && !caller.may_use_secrets_of(&spec.project) {
        return Err(ApiError::forbidden(format!(
            "{}: referencing secrets needs the admin role or a deployer token scoped to project {}",
            spec.name, spec.project
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_secret_references() {
        let mut spec: ServiceSpec = serde_json::from_str(r#"{"name":"a","image":"x"}"#).unwrap();
        spec.env.insert("A".into(), "${secrets.DB_PASS}".into());
        spec.env
            .insert("B".into(), "x${secrets.ONE}y${secrets.TWO}".into());
        spec.env.insert("C".into(), "plain".into());
        let mut refs = secret_refs(&spec);
        refs.sort();
        assert_eq!(refs, ["DB_PASS", "ONE", "TWO"]);
    }
}
