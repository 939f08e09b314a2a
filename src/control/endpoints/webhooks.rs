//! Git push webhooks: registered per repo, service and branch with a shared
//! secret (sealed in the store, never shown). A delivery is trusted only
//! after its HMAC-SHA256 signature (GitHub's `X-Hub-Signature-256` or
//! Gitea's `X-Gitea-Signature`) checks out in constant time against a
//! registered secret; then `ping` answers 200, a push to another branch is
//! ignored, and a push to the registered branch re-resolves the service's
//! image tag and rolls the service out, answering 202 at once. Deliveries
//! and redeployed commits are kept per webhook ([`super::webhook_seen`]):
//! a replayed delivery id, or a commit already deployed, is ignored.

use api::request::GitWebhook;
use api::status::WebhookRequest;
use api::{ApiError, ApiResponse};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::control::ControlPlane;
use crate::store::Tree;

/// Invocations kept per webhook.
const KEEP_INVOCATIONS: usize = 20;

/// One delivery and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invocation {
    pub at: String,
    pub delivery: Option<String>,
    pub event: String,
    pub result: String,
}

/// A registered webhook, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookRecord {
    pub id: String,
    pub repo: String,
    pub service: String,
    /// The service's project when the webhook was registered (None for
    /// webhooks registered before webhooks had one: the service's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub branch: String,
    /// The shared secret, sealed (hex).
    pub secret_sealed: String,
    pub created_at: String,
    #[serde(default)]
    pub invocations: Vec<Invocation>,
    /// Delivery ids as kept before they had times (read, then moved into
    /// `seen`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deliveries: Vec<String>,
    /// Deliveries and commits handled.
    #[serde(default)]
    pub seen: super::webhook_seen::Seen,
}

impl WebhookRecord {
    /// What the API shows: everything but the secret.
    fn public(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id, "repo": self.repo, "service": self.service,
            "project": self.project, "branch": self.branch,
            "created_at": self.created_at, "invocations": self.invocations,
        })
    }
}

/// True if `signature` (hex, maybe `sha256=`-prefixed) is the HMAC-SHA256
/// of `body` under `secret`; the comparison is constant-time.
pub fn signature_ok(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex_sig = signature
        .trim()
        .strip_prefix("sha256=")
        .unwrap_or(signature.trim());
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref", default)]
    git_ref: String,
    /// The commit the branch points at after the push.
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Repository {
    #[serde(default)]
    full_name: String,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl ControlPlane {
    fn webhook_records(&self) -> Result<Vec<WebhookRecord>, ApiError> {
        self.inner()
            .repo
            .list_typed::<WebhookRecord>(Tree::Webhooks)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    fn save_webhook(&self, hook: &WebhookRecord) -> Result<(), ApiError> {
        self.inner()
            .repo
            .put_typed(Tree::Webhooks, &hook.id, hook)
            .map_err(super::store_error)
    }

    /// The webhooks, only those of project `scope` when a scoped token asks.
    pub(crate) fn list_webhooks(&self, scope: Option<&str>) -> Result<ApiResponse, ApiError> {
        use super::scope::Lookup;
        let hooks: Vec<serde_json::Value> = self
            .webhook_records()?
            .iter()
            .filter(|hook| {
                scope.is_none_or(|own| {
                    let project = hook
                        .project
                        .clone()
                        .or_else(|| self.service_project(&hook.service));
                    project.as_deref() == Some(own)
                })
            })
            .map(WebhookRecord::public)
            .collect();
        ApiResponse::ok(&serde_json::json!({ "webhooks": hooks }))
    }

    /// Registers a webhook; a scoped caller's service was checked to be of
    /// its project (`scope`).
    pub(crate) fn create_webhook(&self, request: WebhookRequest) -> Result<ApiResponse, ApiError> {
        use super::scope::Lookup;
        let secrets = self.secret_box()?;
        let project = self.service_project(&request.service);
        let id = format!("wh{:010x}", rand::random::<u64>() & 0xff_ffff_ffff);
        let hook = WebhookRecord {
            id: id.clone(),
            repo: request.repo,
            service: request.service,
            project,
            branch: request.branch,
            secret_sealed: hex::encode(secrets.seal(&format!("webhook:{id}"), &request.secret)),
            created_at: now(),
            invocations: Vec::new(),
            deliveries: Vec::new(),
            seen: Default::default(),
        };
        self.save_webhook(&hook)?;
        ApiResponse::json(201, &hook.public())
    }

    pub(crate) fn delete_webhook(&self, id: &str) -> Result<ApiResponse, ApiError> {
        let existed = self
            .inner()
            .repo
            .delete_in(Tree::Webhooks, id)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        if !existed {
            return Err(ApiError::not_found(format!("webhook not found: {id}")));
        }
        ApiResponse::ok(&serde_json::json!({ "deleted": id }))
    }

    /// A delivery from GitHub or Gitea (see the module doc).
    pub(crate) async fn git_webhook(&self, delivery: GitWebhook) -> Result<ApiResponse, ApiError> {
        let Some(signature) = delivery
            .github_signature
            .as_deref()
            .or(delivery.gitea_signature.as_deref())
        else {
            return Err(ApiError::unauthorized(
                "missing signature (X-Hub-Signature-256 or X-Gitea-Signature)",
            ));
        };
        // Without a secret box no webhook can have been registered.
        let secrets = self
            .secret_box()
            .map_err(|_| ApiError::unauthorized("no webhook is registered"))?;
        // Every registered secret is tried, so timing says nothing about which.
        let mut matched: Vec<WebhookRecord> = Vec::new();
        for hook in self.webhook_records()? {
            let Ok(sealed) = hex::decode(&hook.secret_sealed) else {
                continue;
            };
            let Ok(secret) = secrets.open_value(&format!("webhook:{}", hook.id), &sealed) else {
                continue;
            };
            if signature_ok(secret.as_bytes(), &delivery.body, signature) {
                matched.push(hook);
            }
        }
        if matched.is_empty() {
            return Err(ApiError::unauthorized("bad signature"));
        }
        // GitHub and Gitea always send one; without it a replay could not
        // be told from a new push.
        let Some(id) = delivery.delivery.clone().filter(|d| !d.is_empty()) else {
            return Err(ApiError::bad_request(
                "missing delivery id (X-GitHub-Delivery or X-Gitea-Delivery)",
            ));
        };
        let event = delivery.event.clone().unwrap_or_default();
        let mut status = 200;
        let mut answers = Vec::new();
        for hook in matched {
            // Check and record the delivery under the webhook's own lock,
            // from its stored record: two copies of one delivery arriving
            // together act once.
            let lock = self.inner().service_lock(&format!("webhook:{}", hook.id));
            let _held = lock.lock().await;
            let Some(mut hook) = self.webhook_record(&hook.id)? else {
                continue;
            };
            let at = unix_now();
            for old in std::mem::take(&mut hook.deliveries) {
                hook.seen.add_delivery(&old, at);
            }
            let result = if hook.seen.has_delivery(&id) {
                format!("ignored: delivery {id} was already handled")
            } else {
                self.handle_delivery(&mut hook, &event, &delivery).await
            };
            if result.starts_with("redeploying") {
                status = 202;
            }
            hook.seen.add_delivery(&id, at);
            hook.invocations.insert(
                0,
                Invocation {
                    at: now(),
                    delivery: Some(id.clone()),
                    event: event.clone(),
                    result: result.clone(),
                },
            );
            hook.invocations.truncate(KEEP_INVOCATIONS);
            self.save_webhook(&hook)?;
            answers.push(serde_json::json!({ "webhook": hook.id, "result": result }));
        }
        ApiResponse::json(status, &serde_json::json!({ "results": answers }))
    }

    pub(crate) fn webhook_record(&self, id: &str) -> Result<Option<WebhookRecord>, ApiError> {
        self.inner()
            .repo
            .get_typed(Tree::Webhooks, id)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    /// What one verified delivery does to one webhook; the result text.
    /// A redeployed commit is noted in `hook.seen`.
    async fn handle_delivery(
        &self,
        hook: &mut WebhookRecord,
        event: &str,
        delivery: &GitWebhook,
    ) -> String {
        match event {
            "ping" => return "pong".into(),
            "push" => {}
            "" => return "ignored: no event header".into(),
            other => return format!("ignored: event {other}"),
        }
        let Ok(push) = serde_json::from_slice::<PushPayload>(&delivery.body) else {
            return "ignored: unreadable push payload".into();
        };
        let branch = push
            .git_ref
            .strip_prefix("refs/heads/")
            .unwrap_or(&push.git_ref);
        if branch != hook.branch {
            return format!("ignored: push to {branch}, not {}", hook.branch);
        }
        if let Some(repo) = push.repository.as_ref().filter(|r| !r.full_name.is_empty()) {
            if !repo.full_name.eq_ignore_ascii_case(&hook.repo) {
                return format!(
                    "ignored: repository {} is not {}",
                    repo.full_name, hook.repo
                );
            }
        }
        let Some(record) = self.inner().state().records.get(&hook.service).cloned() else {
            return format!("ignored: service {} is not deployed", hook.service);
        };
        // An operator stopped it: a push does not start it again.
        if record.stopped {
            return format!("ignored: service {} is stopped", hook.service);
        }
        // A commit deployed already (a replay under a fresh delivery id).
        let commit = push.after.filter(|c| !c.is_empty());
        if let Some(c) = commit.as_deref().filter(|c| hook.seen.has_commit(c)) {
            return format!("ignored: commit {c} was already deployed");
        }
        if let Some(c) = &commit {
            hook.seen.add_commit(c);
        }
        // Re-resolve the tag in the background: a moved tag is a new digest,
        // so a new version, rolled out like any deploy.
        let cp = self.clone();
        let spec = record.spec.clone();
        let by = format!("webhook {}", hook.id);
        let (hook_id, delivery_id) = (hook.id.clone(), delivery.delivery.clone());
        let failed_commit = commit.clone();
        self.inner().spawn(async move {
            let request = api::spec::DeployRequest {
                services: vec![spec],
            };
            // A push names a moved tag: always ask the registry, and fail
            // rather than redeploy what runs already.
            let pull = Some(crate::agent::PullMode::Always { fallback: false });
            let failure = match cp.deploy_pulling(request, &by, None, pull).await {
                // A deploy that did nothing answers its errors with a 4xx.
                Ok(ApiResponse::Json(status, body)) if status >= 400 => {
                    serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("status {status}"))
                }
                Ok(_) => {
                    tracing::info!(by, "push redeploy requested");
                    return;
                }
                Err(e) => e.message,
            };
            tracing::warn!(by, error = %failure, "push redeploy failed");
            let outcome = format!("redeploy failed: {failure}");
            if let Err(e) = cp
                .note_outcome(
                    &hook_id,
                    delivery_id.as_deref(),
                    failed_commit.as_deref(),
                    outcome,
                )
                .await
            {
                tracing::warn!(webhook = %hook_id, error = %e.message, "could not record the outcome");
            }
        });
        format!("redeploying {} from {branch}", hook.service)
    }

    /// Replaces the result of delivery `delivery` in webhook `id`'s list of
    /// invocations with what the failed redeploy it started came to, and
    /// forgets its commit, so a later push of it may try again.
    async fn note_outcome(
        &self,
        id: &str,
        delivery: Option<&str>,
        commit: Option<&str>,
        outcome: String,
    ) -> Result<(), ApiError> {
        let lock = self.inner().service_lock(&format!("webhook:{id}"));
        let _held = lock.lock().await;
        let Some(mut hook) = self.webhook_record(id)? else {
            return Ok(());
        };
        if let Some(i) = hook
            .invocations
            .iter_mut()
            .find(|i| i.delivery.as_deref() == delivery)
        {
            i.result = outcome;
        }
        if let Some(c) = commit {
            hook.seen.remove_commit(c);
        }
        self.save_webhook(&hook)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        // RFC 4231-style check against a known HMAC-SHA256.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"key").unwrap();
        mac.update(b"The quick brown fox jumps over the lazy dog");
        let good = hex::encode(mac.finalize().into_bytes());
        assert_eq!(
            good,
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
        let body = b"The quick brown fox jumps over the lazy dog";
        assert!(signature_ok(b"key", body, &format!("sha256={good}")));
        assert!(signature_ok(b"key", body, &good));
        assert!(!signature_ok(b"other", body, &good));
        assert!(!signature_ok(b"key", b"tampered", &good));
        assert!(!signature_ok(b"key", body, "sha256=zz"));
        assert!(!signature_ok(b"key", body, ""));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 500, ..Default::default() })]

        /// A body's own signature is accepted in both spellings; a changed
        /// body, another secret, or any other text is not.
        #[test]
        fn signatures_hold_for_any_body_and_secret(
            secret in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 1..512),
            flip in proptest::prelude::any::<proptest::sample::Index>(),
            noise in "[ -~]{0,80}",
        ) {
            let mut mac = Hmac::<Sha256>::new_from_slice(&secret).unwrap();
            mac.update(&body);
            let good = hex::encode(mac.finalize().into_bytes());
            proptest::prop_assert!(signature_ok(&secret, &body, &good));
            let prefixed = format!("sha256={}", good);
            proptest::prop_assert!(signature_ok(&secret, &body, &prefixed));
            let mut changed = body.clone();
            let at = flip.index(changed.len());
            changed[at] ^= 1;
            proptest::prop_assert!(!signature_ok(&secret, &changed, &good));
            let mut other = secret.clone();
            other.push(1);
            proptest::prop_assert!(!signature_ok(&other, &body, &good));
            if noise.trim() != good && noise.trim().strip_prefix("sha256=") != Some(good.as_str()) {
                proptest::prop_assert!(!signature_ok(&secret, &body, &noise));
            }
        }
    }
}
