//! What a token scoped to one project may reach: only that project's
//! services, for reads as for changes. A pure decision over the request
//! and two lookups (a service's project, a webhook's project), so that it
//! is tested without a server; unscoped tokens pass through unchanged.

use api::{ApiError, ApiRequest, Caller};

/// Where the decision looks things up.
pub(crate) trait Lookup {
    /// The project of service `name`, if it exists.
    fn service_project(&self, name: &str) -> Option<String>;
    /// The project of webhook `id`, if it exists.
    fn webhook_project(&self, id: &str) -> Option<String>;
}

/// `request` as `caller` may make it: refused (403) when it reaches
/// another project, narrowed to the caller's project when it lists (status,
/// events), unchanged otherwise.
pub(crate) fn scoped(
    caller: Option<&Caller>,
    request: ApiRequest,
    lookup: &dyn Lookup,
) -> Result<ApiRequest, ApiError> {
    let Some((caller, own)) = caller.and_then(|c| c.project.clone().map(|p| (c, p))) else {
        return Ok(request);
    };
    let refuse = |what: &str, other: &str| {
        ApiError::forbidden(format!(
            "{what}: token {:?} is scoped to project {own}, not {other}",
            caller.name
        ))
    };
    let service = |name: &str| match lookup.service_project(name) {
        Some(p) if p != own => Err(refuse(name, &p)),
        _ => Ok(()),
    };
    match request {
        ApiRequest::Scale { ref name, .. }
        | ApiRequest::StopService { ref name }
        | ApiRequest::Promote { ref name }
        | ApiRequest::Run { ref name }
        | ApiRequest::Rollback { ref name, .. }
        | ApiRequest::Exec { ref name, .. }
        | ApiRequest::Attach { ref name, .. }
        | ApiRequest::Logs { ref name, .. }
        | ApiRequest::Versions { ref name } => {
            service(name)?;
            Ok(request)
        }
        ApiRequest::CreateWebhook(ref w) => match lookup.service_project(&w.service) {
            Some(p) if p == own => Ok(request),
            Some(p) => Err(refuse(&w.service, &p)),
            None => Err(ApiError::not_found(format!(
                "service not found in project {own}: {} (a webhook needs a deployed service)",
                w.service
            ))),
        },
        ApiRequest::DeleteWebhook { ref id } => match lookup.webhook_project(id) {
            Some(p) if p != own => Err(refuse(&format!("webhook {id}"), &p)),
            _ => Ok(request),
        },
        ApiRequest::StopProject { ref name }
        | ApiRequest::DeleteVolume {
            project: ref name, ..
        }
        | ApiRequest::MoveVolume {
            project: ref name, ..
        }
        | ApiRequest::BackupVolume {
            project: ref name, ..
        }
        | ApiRequest::RestoreVolume {
            project: ref name, ..
        }
        | ApiRequest::ListSecrets { project: ref name }
        | ApiRequest::PutSecret {
            project: ref name, ..
        }
        | ApiRequest::DeleteSecret {
            project: ref name, ..
        } => match name == &own {
            true => Ok(request),
            false => Err(refuse(&format!("project {name}"), name)),
        },
        ApiRequest::Status { project } => match project {
            Some(p) if p != own => Err(refuse(&format!("status of project {p}"), &p)),
            _ => Ok(ApiRequest::Status { project: Some(own) }),
        },
        ApiRequest::ListVolumes { project } => match project {
            Some(p) if p != own => Err(refuse(&format!("volumes of project {p}"), &p)),
            _ => Ok(ApiRequest::ListVolumes { project: Some(own) }),
        },
        ApiRequest::Events(mut query) => {
            if let Some(p) = query.project.as_ref().filter(|p| **p != own) {
                return Err(refuse(&format!("events of project {p}"), p));
            }
            if let Some(name) = query.service.as_deref() {
                service(name)?;
            }
            query.project = Some(own);
            Ok(ApiRequest::Events(query))
        }
        // Reaches every project (the cluster's nodes among them), or makes
        // a token that could.
        ApiRequest::StopAll
        | ApiRequest::StoreBackup
        | ApiRequest::StoreFreeze
        | ApiRequest::CreateToken(_)
        | ApiRequest::ListTokens
        | ApiRequest::DeleteToken { .. }
        | ApiRequest::Drain { .. }
        | ApiRequest::Undrain { .. }
        | ApiRequest::RemoveNode { .. }
        | ApiRequest::CreateJoinToken(_)
        | ApiRequest::ListJoinTokens
        | ApiRequest::DeleteJoinToken { .. } => Err(ApiError::forbidden(format!(
            "token {:?} is scoped to project {own}: this needs an unscoped token",
            caller.name
        ))),
        // Deploys are checked per service (`access::authorize`), webhook
        // lists are filtered by the handler, and the rest is not a
        // project's.
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use api::request::EventsQuery;
    use api::Role;

    struct Fixed;
    impl Lookup for Fixed {
        fn service_project(&self, name: &str) -> Option<String> {
            match name {
                "cart" => Some("shop".into()),
                "ledger" => Some("bank".into()),
                _ => None,
            }
        }
        fn webhook_project(&self, id: &str) -> Option<String> {
            (id == "wh-bank").then(|| "bank".into())
        }
    }

    fn caller(role: Role, project: Option<&str>) -> Caller {
        Caller {
            name: "t".into(),
            role,
            project: project.map(str::to_string),
        }
    }

    fn versions(name: &str) -> ApiRequest {
        ApiRequest::Versions { name: name.into() }
    }

    #[test]
    fn a_scoped_token_reads_only_its_project() {
        let shop = caller(Role::Viewer, Some("shop"));
        let err = scoped(Some(&shop), versions("ledger"), &Fixed).unwrap_err();
        assert_eq!(err.status, 403);
        assert!(
            err.message.contains("scoped to project shop"),
            "{}",
            err.message
        );
        // Positive controls: its own service, and an unscoped token.
        assert_eq!(
            scoped(Some(&shop), versions("cart"), &Fixed).unwrap(),
            versions("cart")
        );
        let any = caller(Role::Viewer, None);
        assert_eq!(
            scoped(Some(&any), versions("ledger"), &Fixed).unwrap(),
            versions("ledger")
        );
        let logs = ApiRequest::Logs {
            name: "ledger".into(),
            tail: None,
            follow: false,
        };
        assert_eq!(scoped(Some(&shop), logs, &Fixed).unwrap_err().status, 403);
    }

    #[test]
    fn lists_are_narrowed_to_the_project() {
        let shop = caller(Role::Viewer, Some("shop"));
        assert_eq!(
            scoped(Some(&shop), ApiRequest::Status { project: None }, &Fixed).unwrap(),
            ApiRequest::Status {
                project: Some("shop".into())
            }
        );
        let other = ApiRequest::Status {
            project: Some("bank".into()),
        };
        assert_eq!(scoped(Some(&shop), other, &Fixed).unwrap_err().status, 403);
        let events = scoped(
            Some(&shop),
            ApiRequest::Events(EventsQuery::default()),
            &Fixed,
        )
        .unwrap();
        assert_eq!(
            events,
            ApiRequest::Events(EventsQuery {
                project: Some("shop".into()),
                ..Default::default()
            })
        );
        let bank_service = ApiRequest::Events(EventsQuery {
            service: Some("ledger".into()),
            ..Default::default()
        });
        assert_eq!(
            scoped(Some(&shop), bank_service, &Fixed)
                .unwrap_err()
                .status,
            403
        );
    }

    #[test]
    fn webhooks_belong_to_a_project() {
        let shop = caller(Role::Deployer, Some("shop"));
        let hook = |service: &str| {
            ApiRequest::CreateWebhook(api::status::WebhookRequest {
                repo: "o/r".into(),
                service: service.into(),
                branch: "main".into(),
                secret: "s".into(),
            })
        };
        assert_eq!(
            scoped(Some(&shop), hook("ledger"), &Fixed)
                .unwrap_err()
                .status,
            403
        );
        assert_eq!(
            scoped(Some(&shop), hook("nothing"), &Fixed)
                .unwrap_err()
                .status,
            404
        );
        assert!(scoped(Some(&shop), hook("cart"), &Fixed).is_ok());
        let delete = |id: &str| ApiRequest::DeleteWebhook { id: id.into() };
        assert_eq!(
            scoped(Some(&shop), delete("wh-bank"), &Fixed)
                .unwrap_err()
                .status,
            403
        );
        let admin = caller(Role::Admin, None);
        assert!(scoped(Some(&admin), delete("wh-bank"), &Fixed).is_ok());
    }

    #[test]
    fn a_scoped_admin_is_scoped_too() {
        let shop_admin = caller(Role::Admin, Some("shop"));
        let put = |project: &str| ApiRequest::PutSecret {
            project: project.into(),
            name: "K".into(),
            value: "v".into(),
        };
        assert_eq!(
            scoped(Some(&shop_admin), put("bank"), &Fixed)
                .unwrap_err()
                .status,
            403
        );
        assert!(scoped(Some(&shop_admin), put("shop"), &Fixed).is_ok());
        assert_eq!(
            scoped(Some(&shop_admin), ApiRequest::ListTokens, &Fixed)
                .unwrap_err()
                .status,
            403
        );
        assert!(scoped(
            Some(&caller(Role::Admin, None)),
            ApiRequest::ListTokens,
            &Fixed
        )
        .is_ok());
        assert_eq!(
            scoped(Some(&shop_admin), ApiRequest::StopAll, &Fixed)
                .unwrap_err()
                .status,
            403
        );
        let drain = ApiRequest::Drain {
            node: "n1".into(),
            deadline_secs: None,
            move_volumes: false,
        };
        assert_eq!(
            scoped(Some(&shop_admin), drain.clone(), &Fixed)
                .unwrap_err()
                .status,
            403
        );
        assert!(scoped(Some(&caller(Role::Admin, None)), drain, &Fixed).is_ok());
    }

    #[test]
    fn volumes_belong_to_their_project() {
        let shop = caller(Role::Deployer, Some("shop"));
        let on = |project: &str| {
            [
                ApiRequest::DeleteVolume {
                    project: project.into(),
                    name: "pgdata".into(),
                },
                ApiRequest::MoveVolume {
                    project: project.into(),
                    name: "pgdata".into(),
                    node: "n2".into(),
                },
                ApiRequest::BackupVolume {
                    project: project.into(),
                    name: "pgdata".into(),
                    live: false,
                },
                ApiRequest::RestoreVolume {
                    project: project.into(),
                    name: "pgdata".into(),
                    body: Default::default(),
                },
            ]
        };
        for request in on("bank") {
            let e = scoped(Some(&shop), request, &Fixed).unwrap_err();
            assert_eq!(e.status, 403, "{}", e.message);
        }
        // Controls: its own project's, and any project's for an unscoped token.
        for request in on("shop") {
            assert!(scoped(Some(&shop), request, &Fixed).is_ok());
        }
        for request in on("bank") {
            assert!(scoped(Some(&caller(Role::Deployer, None)), request, &Fixed).is_ok());
        }
        // A listing is narrowed to the token's project, and another's is refused.
        assert_eq!(
            scoped(
                Some(&shop),
                ApiRequest::ListVolumes { project: None },
                &Fixed
            )
            .unwrap(),
            ApiRequest::ListVolumes {
                project: Some("shop".into())
            }
        );
        let other = ApiRequest::ListVolumes {
            project: Some("bank".into()),
        };
        assert_eq!(scoped(Some(&shop), other, &Fixed).unwrap_err().status, 403);
    }
}
