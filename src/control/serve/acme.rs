//! Certificates for `tls = "acme"`: one task owns them. For each such
//! service's domain it uses the certificate in the store (its key sealed
//! like a secret) until two-thirds of its lifetime, else orders one from
//! the `[acme] directory` with an HTTP-01 challenge: the answer goes to
//! every node's ingress before the authority is told to look. What it
//! holds, or why it holds nothing, goes to [`crate::control::certs`], which serves
//! it; a failure is tried again after 5 s, doubling up to 10 minutes.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use api::spec::{TlsMode, TlsSpec};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use network::proxy::TlsPair;

use crate::control::Inner;
use crate::store::AcmeCert;

/// Where certificates come from (`[acme]`).
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    pub directory: String,
    pub email: Option<String>,
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// How often the task looks for domains that need a certificate, besides
/// when a record is saved.
const TICK: Duration = Duration::from_secs(10);
const RETRY_FIRST: Duration = Duration::from_secs(5);
const RETRY_MAX: Duration = Duration::from_secs(600);

/// A domain's failures in a row, when to try again, and why it failed.
struct Failing {
    count: u32,
    next: Instant,
    why: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The domains of the running services with `tls = "acme"`.
fn wanted(inner: &Inner) -> Vec<String> {
    let st = inner.state();
    let mut out: Vec<String> = st
        .records
        .values()
        .filter(|r| !r.stopped && r.spec.tls == Some(TlsSpec::Mode(TlsMode::Acme)))
        .filter_map(|r| r.spec.domain.as_ref().map(|d| d.to_ascii_lowercase()))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// What the task holds between looks: the account, the certificates, and
/// the domains whose last order failed.
#[derive(Default)]
struct Held {
    account: Option<Account>,
    certs: HashMap<String, (AcmeCert, TlsPair)>,
    failing: HashMap<String, Failing>,
}

impl Held {
    /// Each wanted domain's certificate, or why there is none (pure).
    fn table(&self, domains: &[String]) -> HashMap<String, Result<TlsPair, String>> {
        domains
            .iter()
            .map(|d| {
                let got = match (self.certs.get(d), self.failing.get(d)) {
                    (Some((_, pair)), _) => Ok(pair.clone()),
                    (None, Some(f)) => Err(format!("tls acme for {d}: {}", f.why)),
                    (None, None) => Err(format!("tls acme for {d}: waiting for a certificate")),
                };
                (d.clone(), got)
            })
            .collect()
    }

    /// A failed order for `domain`: tried again after 5 s, doubling.
    fn failed(&mut self, domain: &str, why: String) {
        let count = self.failing.get(domain).map_or(0, |f| f.count) + 1;
        let wait = RETRY_FIRST
            .saturating_mul(2u32.saturating_pow(count - 1))
            .min(RETRY_MAX);
        let next = Instant::now() + wait;
        self.failing
            .insert(domain.to_string(), Failing { count, next, why });
    }

    /// How long to sleep: until the next look, or a retry coming due.
    fn wait(&self) -> Duration {
        let retry = self.failing.values().map(|f| f.next).min();
        retry.map_or(TICK, |t| {
            t.saturating_duration_since(Instant::now()).min(TICK)
        })
    }
}

/// Gets `domain` a certificate unless it holds a fresh one: from the store,
/// else from the authority (not before a failed order's retry is due).
async fn tend(inner: &Arc<Inner>, settings: &AcmeSettings, held: &mut Held, domain: &str) {
    let fresh = |c: &AcmeCert| unix_now() < c.renew_at();
    if held.certs.get(domain).is_some_and(|(c, _)| fresh(c)) {
        return;
    }
    if let Some(got) = stored(inner, domain).await.filter(|(c, _)| fresh(c)) {
        held.certs.insert(domain.to_string(), got);
        return;
    }
    if held
        .failing
        .get(domain)
        .is_some_and(|f| Instant::now() < f.next)
    {
        return;
    }
    match issue(inner, settings, &mut held.account, domain).await {
        Ok(got) => {
            tracing::info!(domain, "certificate issued by the ACME authority");
            held.certs.insert(domain.to_string(), got);
            held.failing.remove(domain);
        }
        Err(why) => {
            tracing::warn!(domain, error = %why, "no certificate from the ACME authority");
            held.failed(domain, why);
        }
    }
}

/// Runs while the control plane lives (and has ACME settings).
pub(crate) async fn run(inner: Weak<Inner>) {
    let mut held = Held::default();
    loop {
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let Some(settings) = inner.settings.acme.clone() else {
            return;
        };
        let domains = wanted(&inner);
        for domain in &domains {
            tend(&inner, &settings, &mut held, domain).await;
        }
        held.certs.retain(|d, _| domains.contains(d));
        held.failing.retain(|d, _| domains.contains(d));
        let table = held.table(&domains);
        let changed = inner.acme.send_if_modified(|current| {
            let changed = *current != table;
            if changed {
                *current = table;
            }
            changed
        });
        if changed {
            inner.certs_wake.notify_one();
        }
        let wake = inner.acme_wake.clone();
        drop(inner);
        tokio::select! {
            _ = tokio::time::sleep(held.wait()) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The certificate the store holds for `domain`, with its key opened.
async fn stored(inner: &Arc<Inner>, domain: &str) -> Option<(AcmeCert, TlsPair)> {
    let repo = inner.repo.clone();
    let key = domain.to_string();
    let cert = tokio::task::spawn_blocking(move || repo.acme_cert(&key))
        .await
        .ok()?
        .ok()??;
    let secrets = inner.settings.secrets.as_ref()?;
    let key_pem = secrets
        .open_value(&format!("acme:{domain}"), &cert.key_sealed)
        .ok()?;
    let pair = TlsPair {
        cert_pem: cert.cert_pem.clone(),
        key_pem: key_pem.to_string(),
    };
    Some((cert, pair))
}

/// The account: from the store when one was made with this directory,
/// else a new one (kept, sealed).
async fn account(inner: &Arc<Inner>, settings: &AcmeSettings) -> Result<Account, String> {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Kept {
        directory: String,
        credentials: AccountCredentials,
    }
    let secrets = inner
        .settings
        .secrets
        .clone()
        .ok_or("no secrets key to keep the account with")?;
    let builder = || match &settings.ca_bundle {
        Some(bundle) => Account::builder_with_root(bundle)
            .map_err(|e| format!("ca_bundle {}: {e}", bundle.display())),
        None => Account::builder().map_err(|e| e.to_string()),
    };
    let repo = inner.repo.clone();
    let sealed = tokio::task::spawn_blocking(move || repo.acme_account())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let kept = sealed
        .and_then(|s| secrets.open_value("acme:account", &s).ok())
        .and_then(|json| serde_json::from_str::<Kept>(&json).ok())
        .filter(|k| k.directory == settings.directory);
    if let Some(k) = kept {
        return builder()?
            .from_credentials(k.credentials)
            .await
            .map_err(|e| format!("account: {e}"));
    }
    let contact = settings.email.as_ref().map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let new = NewAccount {
        contact: &contacts,
        terms_of_service_agreed: true,
        only_return_existing: false,
    };
    let (account, credentials) = builder()?
        .create(&new, settings.directory.clone(), None)
        .await
        .map_err(|e| format!("new account at {}: {e}", settings.directory))?;
    let kept = Kept {
        directory: settings.directory.clone(),
        credentials,
    };
    let json = serde_json::to_string(&kept).map_err(|e| e.to_string())?;
    let sealed = secrets.seal("acme:account", &json);
    let repo = inner.repo.clone();
    tokio::task::spawn_blocking(move || repo.put_acme_account(&sealed))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("keep the account: {e}"))?;
    Ok(account)
}

/// Puts `answers` in the ingress of every node (or takes them out), and
/// waits until the nodes have them.
async fn serve_answers(inner: &Arc<Inner>, answers: &HashMap<String, String>, serve: bool) {
    inner.challenges.send_modify(|c| {
        for (token, answer) in answers {
            if serve {
                c.insert(token.clone(), answer.clone());
            } else {
                c.remove(token);
            }
        }
    });
    let generation = crate::control::publish::publish_routes(inner);
    crate::control::push::delivered(inner, generation, Duration::from_secs(5)).await;
}

/// Orders a certificate for `domain`, answers its HTTP-01 challenge on
/// every node, and keeps what is issued.
async fn issue(
    inner: &Arc<Inner>,
    settings: &AcmeSettings,
    slot: &mut Option<Account>,
    domain: &str,
) -> Result<(AcmeCert, TlsPair), String> {
    let account = match slot {
        Some(a) => a.clone(),
        None => {
            let a = account(inner, settings).await?;
            *slot = Some(a.clone());
            a
        }
    };
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .map_err(|e| format!("new order: {e}"))?;
    let mut answers = HashMap::new();
    let mut ready = Vec::new();
    {
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            match a.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => return Err(format!("authorization is {other:?}")),
            }
            let challenge = a
                .challenge(ChallengeType::Http01)
                .ok_or("the authority offers no HTTP-01 challenge")?;
            answers.insert(
                challenge.token.clone(),
                challenge.key_authorization().as_str().to_string(),
            );
            ready.push(challenge.url.clone());
        }
    }
    serve_answers(inner, &answers, true).await;
    let outcome = finish(&mut order, &ready).await;
    serve_answers(inner, &answers, false).await;
    let key_pem = outcome?;
    let cert_pem = order
        .poll_certificate(&RetryPolicy::default())
        .await
        .map_err(|e| format!("certificate: {e}"))?;
    let pair = TlsPair { cert_pem, key_pem };
    network::proxy::tls::certified(&pair).map_err(|e| format!("issued certificate: {e}"))?;
    let (not_before, not_after) = validity(&pair.cert_pem)?;
    let secrets = inner
        .settings
        .secrets
        .as_ref()
        .ok_or("no secrets key to keep the certificate's key with")?;
    let cert = AcmeCert {
        domain: domain.to_string(),
        cert_pem: pair.cert_pem.clone(),
        key_sealed: secrets.seal(&format!("acme:{domain}"), &pair.key_pem),
        not_before,
        not_after,
    };
    let repo = inner.repo.clone();
    let kept = cert.clone();
    tokio::task::spawn_blocking(move || repo.put_acme_cert(&kept))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("keep the certificate: {e}"))?;
    Ok((cert, pair))
}

/// Tells the authority the answers are up, waits for the order to be
/// ready, and finalizes it; the new key's PEM.
async fn finish(order: &mut instant_acme::Order, ready: &[String]) -> Result<String, String> {
    {
        let mut authorizations = order.authorizations();
        while let Some(a) = authorizations.next().await {
            let mut a = a.map_err(|e| format!("authorization: {e}"))?;
            if let Some(mut c) = a.challenge(ChallengeType::Http01) {
                if ready.contains(&c.url) {
                    c.set_ready().await.map_err(|e| format!("challenge: {e}"))?;
                }
            }
        }
    }
    let status = order
        .poll_ready(&RetryPolicy::default())
        .await
        .map_err(|e| format!("order: {e}"))?;
    if status != OrderStatus::Ready {
        return Err(format!(
            "the authority did not validate the domain (order {status:?})"
        ));
    }
    order.finalize().await.map_err(|e| format!("finalize: {e}"))
}

/// A certificate's validity, in unix seconds.
fn validity(pem: &str) -> Result<(u64, u64), String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| e.to_string())?;
    let cert = pem.parse_x509().map_err(|e| e.to_string())?;
    let v = cert.validity();
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Ok((
        secs(v.not_before.timestamp()),
        secs(v.not_after.timestamp()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_back_off_and_say_why() {
        let mut held = Held::default();
        let domains = vec!["a.test".to_string()];
        assert_eq!(
            held.table(&domains)["a.test"],
            Err("tls acme for a.test: waiting for a certificate".into())
        );
        held.failed("a.test", "refused".into());
        assert_eq!(
            held.table(&domains)["a.test"],
            Err("tls acme for a.test: refused".into())
        );
        let first = held.failing["a.test"].next;
        held.failed("a.test", "refused".into());
        let second = held.failing["a.test"].next;
        assert!(second > first + Duration::from_secs(4), "no doubling");
        assert!(held.wait() <= TICK);
        for _ in 0..20 {
            held.failed("a.test", "refused".into());
        }
        let last = held.failing["a.test"].next;
        assert!(last <= Instant::now() + RETRY_MAX);
    }

    #[test]
    fn renewal_at_two_thirds_and_validity_read_from_the_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["a.test".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2026, 4, 1);
        let cert = params.self_signed(&key).unwrap();
        let (nb, na) = validity(&cert.pem()).unwrap();
        assert_eq!(na - nb, 90 * 86400);
        let record = AcmeCert {
            domain: "a.test".into(),
            cert_pem: cert.pem(),
            key_sealed: vec![],
            not_before: nb,
            not_after: na,
        };
        assert_eq!(record.renew_at(), nb + 60 * 86400);
        assert!(validity("not a certificate").is_err());
    }
}
