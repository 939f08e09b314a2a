//! The election, on etcd: each server holds a lease of `[store]
//! leader_ttl_secs`, announces itself on it, and tries to create the
//! leader key on it; the one that created it leads, with the key's
//! creation revision as its term. A leader whose renewals go unanswered
//! drops its fence at the deadline [`Lease`] sets, before its lease can
//! end at etcd, and starts over with a new lease.
//!
//! It runs on a thread of its own with its own runtime: nothing the rest
//! of the server does (a store call waiting on an unreachable etcd) can
//! hold back the deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::Context;
use etcd_client::{
    Client, Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{oneshot, watch};

use super::lease::Lease;
use super::{ServerInfo, Standing};
use crate::store::settings::StoreSection;
use crate::store::Fence;
use api::status::ServerStatus;

/// How often a follower looks whether the leader key is free.
const LOOK: Duration = Duration::from_millis(250);
/// The list of servers is read every this many looks.
const LIST_EVERY: u32 = 8;
/// Longest wait for one call when no lease deadline is nearer.
const CALL: Duration = Duration::from_secs(5);

/// The running election (see the module doc).
pub struct Election {
    standing: watch::Receiver<Standing>,
    servers: watch::Receiver<Vec<ServerStatus>>,
    changes: watch::Receiver<u64>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the election's thread works with.
struct Cfg {
    prefix: String,
    ttl: Duration,
    me: ServerInfo,
    fence: Fence,
    standing: watch::Sender<Standing>,
    servers: watch::Sender<Vec<ServerStatus>>,
}

impl Cfg {
    fn leader_key(&self) -> String {
        format!("{}/leader", self.prefix)
    }
    fn member_key(&self, id: &str) -> String {
        format!("{}/members/{id}", self.prefix)
    }
    fn alive_key(&self, id: &str) -> String {
        format!("{}/alive/{id}", self.prefix)
    }
}

impl Election {
    /// Connects to etcd (a client of its own) and starts campaigning.
    pub fn start(section: &StoreSection, me: ServerInfo, fence: Fence) -> anyhow::Result<Self> {
        let opts = crate::store::etcd_store::options(section)?;
        let endpoints = section.endpoints.clone();
        let (standing_tx, standing) = watch::channel(Standing::Following(None));
        let (servers_tx, servers) = watch::channel(Vec::new());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (changes_tx, changes) = watch::channel(0);
        let prefix = section.prefix.clone();
        let cfg = Cfg {
            prefix: section.prefix.clone(),
            ttl: Duration::from_secs(section.leader_ttl_secs),
            me,
            fence,
            standing: standing_tx,
            servers: servers_tx,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("start the election's runtime")?;
        let thread = std::thread::Builder::new()
            .name("orca-election".into())
            .spawn(move || {
                rt.block_on(async move {
                    let client = loop {
                        match Client::connect(endpoints.clone(), Some(opts.clone())).await {
                            Ok(c) => break c,
                            Err(e) => {
                                tracing::warn!(error = %e, "election: cannot reach etcd; trying again");
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        }
                    };
                    tokio::spawn(watch_changes(client.clone(), prefix, changes_tx));
                    run(client, cfg, stop_rx).await
                })
            })
            .context("start the election's thread")?;
        Ok(Self {
            standing,
            servers,
            changes,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    /// Where this server stands, as it changes.
    pub fn standing(&self) -> watch::Receiver<Standing> {
        self.standing.clone()
    }

    /// The servers as last read from the store.
    pub fn servers(&self) -> watch::Receiver<Vec<ServerStatus>> {
        self.servers.clone()
    }

    /// Bumped whenever services, volumes or tokens change in the store
    /// (and after the watch was broken, when changes may have been missed).
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Stops campaigning and gives the lease back, so that another server
    /// leads at once (not after the TTL).
    pub async fn resign(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Follows the store's changes to what a follower's view holds.
async fn watch_changes(mut client: Client, prefix: String, changes: watch::Sender<u64>) {
    let watched = ["services", "volumes", "tokens"].map(|t| format!("{prefix}/{t}/"));
    loop {
        match client
            .watch(
                format!("{prefix}/"),
                Some(WatchOptions::new().with_prefix()),
            )
            .await
        {
            Ok(mut stream) => {
                while let Ok(Some(answer)) = stream.message().await {
                    let relevant = answer.events().iter().any(|e| {
                        e.kv().is_some_and(|kv| {
                            let key = String::from_utf8_lossy(kv.key());
                            watched.iter().any(|w| key.starts_with(w.as_str()))
                        })
                    });
                    if relevant {
                        changes.send_modify(|n| *n += 1);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "watch of the store failed"),
        }
        if changes.is_closed() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        changes.send_modify(|n| *n += 1);
    }
}

/// Campaigns, lease after lease, until told to stop.
async fn run(mut client: Client, cfg: Cfg, mut stop: oneshot::Receiver<()>) {
    let mut lease_id = None;
    loop {
        let ended = tokio::select! {
            ended = one_lease(&mut client, &cfg, &mut lease_id) => ended,
            _ = &mut stop => {
                cfg.fence.drop_lead();
                if let Some(id) = lease_id {
                    let _ = tokio::time::timeout(CALL, client.lease_revoke(id)).await;
                }
                return;
            }
        };
        cfg.fence.drop_lead();
        let was_leading = matches!(*cfg.standing.borrow(), Standing::Leading { .. });
        if was_leading {
            cfg.standing.send_replace(Standing::Following(None));
        }
        // A follower that lost its own lease still knows who leads.
        if let Err(e) = ended {
            if was_leading {
                tracing::warn!(error = %format!("{e:#}"), "leadership lost: stopped acting");
            } else {
                tracing::warn!(error = %format!("{e:#}"), "election: lease lost");
            }
        }
        if let Some(id) = lease_id.take() {
            // Best effort: it ends by itself after the TTL anyway.
            let _ = tokio::time::timeout(Duration::from_secs(1), client.lease_revoke(id)).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(LOOK) => {}
            _ = &mut stop => return,
        }
    }
}

/// `call` on a clone of `client`, tried again while it fails for want of
/// a connection to one member (see `etcd_store::retried`).
fn again<T, Fut>(
    client: &Client,
    call: impl Fn(Client) -> Fut,
) -> impl std::future::Future<Output = Result<T, etcd_client::Error>>
where
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let client = client.clone();
    crate::store::etcd_store::retried(move || call(client.clone()))
}

/// Waits for `work` at most until `deadline` (or [`CALL`]).
async fn bounded<T>(
    deadline: Option<Instant>,
    what: &str,
    work: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    let limit = Instant::now() + CALL;
    let until = deadline.map_or(limit, |d| d.min(limit));
    match tokio::time::timeout_at(until.into(), work).await {
        Ok(r) => r.with_context(|| format!("etcd: {what}")),
        Err(_) => anyhow::bail!("etcd: {what}: no answer in time"),
    }
}

/// One lease: grant it, announce this server, campaign, lead while it is
/// renewed. Returns when the lease is lost.
async fn one_lease(
    client: &mut Client,
    cfg: &Cfg,
    lease_id: &mut Option<i64>,
) -> anyhow::Result<()> {
    let mut lease = Lease::new(cfg.ttl);
    let sent = Instant::now();
    let grant = bounded(
        None,
        "grant a lease",
        again(client, |mut c| async move {
            c.lease_grant(cfg.ttl.as_secs() as i64, None).await
        }),
    )
    .await?;
    *lease_id = Some(grant.id());
    let id = grant.id();
    lease.renewed(sent, Duration::from_secs(grant.ttl().max(0) as u64));
    let (mut keeper, mut answers) = bounded(
        lease.deadline(),
        "renew the lease",
        client.lease_keep_alive(id),
    )
    .await?;
    let info = serde_json::to_vec(&cfg.me)?;
    let me = cfg.me.id.as_str();
    bounded(
        lease.deadline(),
        "announce this server",
        again(client, |mut c| {
            let (key, info) = (cfg.member_key(me), info.clone());
            async move { c.put(key, info, None).await }
        }),
    )
    .await?;
    let on_lease = Some(PutOptions::new().with_lease(id));
    bounded(
        lease.deadline(),
        "announce this server",
        again(client, |mut c| {
            let (key, info, opts) = (cfg.alive_key(me), info.clone(), on_lease.clone());
            async move { c.put(key, info, opts).await }
        }),
    )
    .await?;
    let mut renew = tokio::time::interval(lease.renew_every());
    let mut look = tokio::time::interval(LOOK);
    let mut pending: VecDeque<Instant> = VecDeque::new();
    let mut looks = 0u32;
    let mut leader: Option<ServerInfo> = None;
    loop {
        let deadline = lease.deadline().unwrap_or_else(Instant::now);
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                anyhow::bail!("the lease was not renewed within {} ms", cfg.ttl.as_millis());
            }
            _ = renew.tick() => {
                let now = Instant::now();
                if !lease.acting(now) {
                    anyhow::bail!("the lease was not renewed in time");
                }
                pending.push_back(now);
                bounded(Some(deadline), "renew the lease", keeper.keep_alive()).await?;
            }
            answer = answers.message() => {
                match answer.context("etcd: lease renewals")? {
                    Some(a) if a.ttl() > 0 => {
                        let sent = pending.pop_front().unwrap_or(deadline);
                        lease.renewed(sent, Duration::from_secs(a.ttl() as u64));
                    }
                    Some(_) => anyhow::bail!("the lease expired at etcd"),
                    None => anyhow::bail!("etcd ended the lease renewals"),
                }
            }
            _ = look.tick() => {
                let term = match *cfg.standing.borrow() {
                    Standing::Leading { term } => Some(term),
                    Standing::Following(_) => None,
                };
                let before = (term, leader.clone());
                match term {
                    None => leader = campaign(client, cfg, id, &info, Some(deadline)).await?,
                    Some(term) => still_held(client, cfg, term, Some(deadline)).await?,
                }
                let now_leading = matches!(*cfg.standing.borrow(), Standing::Leading { .. });
                // Who leads changed: the list says so at once.
                let changed = before.0.is_some() != now_leading || before.1 != leader;
                looks += 1;
                if looks % LIST_EVERY == 1 || changed {
                    let servers = list(client, cfg, leader.as_ref(), Some(deadline)).await?;
                    cfg.servers.send_if_modified(|old| {
                        let changed = *old != servers;
                        *old = servers;
                        changed
                    });
                }
            }
        }
    }
}

/// Tries to take the leader key; who holds it (None: this server).
async fn campaign(
    client: &mut Client,
    cfg: &Cfg,
    lease: i64,
    info: &[u8],
    deadline: Option<Instant>,
) -> anyhow::Result<Option<ServerInfo>> {
    let key = cfg.leader_key();
    let txn = Txn::new()
        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key.clone(),
            info.to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        )])
        .or_else([TxnOp::get(key.clone(), None)]);
    let done = bounded(
        deadline,
        "campaign",
        again(client, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        }),
    )
    .await?;
    if done.succeeded() {
        let term = done
            .header()
            .map(|h| h.revision())
            .context("etcd: no revision in the answer")?;
        cfg.fence.lead(&key, term);
        cfg.standing
            .send_replace(Standing::Leading { term: term as u64 });
        tracing::info!(term, server = %cfg.me.id, "leading the control plane");
        return Ok(None);
    }
    let held = done.op_responses().into_iter().find_map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| {
            let holder = serde_json::from_slice::<ServerInfo>(kv.value()).ok();
            (holder, kv.lease())
        }),
        _ => None,
    });
    let Some((holder, holder_lease)) = held else {
        // Freed in between: the next look takes it.
        return Ok(None);
    };
    if let Some(h) = holder
        .as_ref()
        .filter(|h| h.id == cfg.me.id && holder_lease != lease)
    {
        // This server's own earlier run (killed): its lease is of no one
        // now, so give it back rather than wait for it to end.
        tracing::info!(server = %h.id, "the leader key is this server's from before its restart: taking it back");
        let _ = bounded(
            deadline,
            "give back an old lease",
            client.lease_revoke(holder_lease),
        )
        .await;
        return Ok(None);
    }
    cfg.standing.send_if_modified(|old| {
        let new = Standing::Following(holder.clone());
        let changed = *old != new;
        *old = new;
        changed
    });
    Ok(holder)
}

/// Fails unless the leader key is still the one this term created.
async fn still_held(
    client: &mut Client,
    cfg: &Cfg,
    term: u64,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let got = bounded(
        deadline,
        "read the leader key",
        again(client, |mut c| {
            let key = cfg.leader_key();
            async move { c.get(key, None).await }
        }),
    )
    .await?;
    match got.kvs().first() {
        Some(kv) if kv.create_revision() as u64 == term => Ok(()),
        _ => anyhow::bail!("the leader key is no longer this term's"),
    }
}

/// Every server that ever announced itself, with who leads and who holds
/// a lease now.
async fn list(
    client: &mut Client,
    cfg: &Cfg,
    leader: Option<&ServerInfo>,
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<ServerStatus>> {
    let under = |key: String| {
        bounded(
            deadline,
            "list the servers",
            again(client, move |mut c| {
                let key = key.clone();
                async move { c.get(key, Some(GetOptions::new().with_prefix())).await }
            }),
        )
    };
    let members = under(cfg.member_key("")).await?;
    let alive = under(cfg.alive_key("")).await?;
    let alive: Vec<&[u8]> = alive.kvs().iter().map(|kv| kv.value()).collect();
    let leading = matches!(*cfg.standing.borrow(), Standing::Leading { .. });
    let leader_id = if leading {
        Some(cfg.me.id.as_str())
    } else {
        leader.map(|l| l.id.as_str())
    };
    Ok(members
        .kvs()
        .iter()
        .filter_map(|kv| serde_json::from_slice::<ServerInfo>(kv.value()).ok())
        .map(|s| ServerStatus {
            leader: leader_id == Some(s.id.as_str()),
            healthy: alive
                .iter()
                .any(|a| serde_json::from_slice::<ServerInfo>(a).is_ok_and(|x| x.id == s.id)),
            id: s.id,
            address: s.api,
        })
        .collect())
}
