//! Who may deploy what: a scoped token deploys only into its project, a
//! spec that names secrets (`${secrets.KEY}`) needs an admin or a deployer
//! scoped to the spec's project, and privileged fields need an admin.

use api::spec::ServiceSpec;
use api::{ApiError, Caller};

/// Whether `caller` may deploy `spec`; `None` is orca itself (a
/// webhook's redeploy of a stored spec, which keeps the privilege of the
/// spec it redeploys and gains none).
pub(crate) fn authorize(caller: Option<&Caller>, spec: &ServiceSpec) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    if !caller.may_reach(&spec.project) {
        return Err(ApiError::forbidden(format!(
            "{}: token {:?} is scoped to project {}",
            spec.name,
            caller.name,
            caller.project.as_deref().unwrap_or_default()
        )));
    }
    if !spec.secret_refs().is_empty() && !caller.may_use_secrets_of(&spec.project) {
        return Err(ApiError::forbidden(format!(
            "{}: referencing secrets needs the admin role or a deployer token scoped to project {}",
            spec.name, spec.project
        )));
    }
    let privileged = spec.privileged_fields();
    if !privileged.is_empty() && !caller.is_admin() {
        return Err(ApiError::forbidden(format!(
            "{}: {} needs an admin token (token {:?} is a {})",
            spec.name,
            privileged.join(", "),
            caller.name,
            caller.role.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::Role;

    fn caller(role: Role, project: Option<&str>) -> Caller {
        Caller {
            name: "t".into(),
            role,
            project: project.map(str::to_string),
        }
    }

    #[test]
    fn privilege_is_the_admins() {
        let spec: ServiceSpec = serde_json::from_str(
            r#"{"name":"a","image":"x","security":{"cap_add":["SYS_ADMIN"]}}"#,
        )
        .unwrap();
        for role in [Role::Deployer, Role::Viewer] {
            let e = authorize(Some(&caller(role, None)), &spec).unwrap_err();
            assert_eq!(e.status, 403);
            assert!(
                e.message.contains("security.cap_add SYS_ADMIN"),
                "{}",
                e.message
            );
        }
        // Positive controls: the admin deploys it, and orca's own redeploy
        // of a stored spec passes.
        authorize(Some(&caller(Role::Admin, None)), &spec).unwrap();
        authorize(None, &spec).unwrap();
        let baseline: ServiceSpec =
            serde_json::from_str(r#"{"name":"a","image":"x","security":{"cap_add":["NET_RAW"]}}"#)
                .unwrap();
        authorize(Some(&caller(Role::Deployer, None)), &baseline).unwrap();
    }

    #[test]
    fn secrets_need_the_project() {
        let spec: ServiceSpec = serde_json::from_str(
            r#"{"name":"a","project":"shop","image":"x","env":{"P":"${secrets.K}"}}"#,
        )
        .unwrap();
        assert_eq!(
            authorize(Some(&caller(Role::Deployer, None)), &spec)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            authorize(Some(&caller(Role::Deployer, Some("bank"))), &spec)
                .unwrap_err()
                .status,
            403
        );
        authorize(Some(&caller(Role::Deployer, Some("shop"))), &spec).unwrap();
        authorize(Some(&caller(Role::Admin, None)), &spec).unwrap();
    }
}
