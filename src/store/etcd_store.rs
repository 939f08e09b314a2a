//! The [`Store`] on etcd: each tree's keys under `<prefix>/<tree>/`. A
//! write returns once etcd committed it (on a quorum of its members, each
//! with its log on disk), so a reply sent after it survives a kill -9 of
//! orca and of any minority of etcd's members.
//!
//! The [`Store`] trait is synchronous, as sled is; the etcd client is
//! async. The client lives on a thread of its own with its own runtime,
//! where calls run side by side, and each caller waits for its answer, at
//! most [`OP_TIMEOUT`].

use std::sync::mpsc as sync_mpsc;
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, TlsOptions, Txn,
    TxnOp,
};
use tokio::sync::mpsc;

use super::settings::StoreSection;
use super::{Store, StoreError, Tree};

/// How long one call may take before it is an error.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

type Reply<T> = sync_mpsc::SyncSender<Result<T, StoreError>>;

/// One call for the client's thread.
enum Op {
    Get(String, Reply<Option<Vec<u8>>>),
    Put(String, Vec<u8>, Option<(String, i64)>, Reply<()>),
    Delete(String, Option<(String, i64)>, Reply<()>),
    List(String, Reply<Vec<(String, Vec<u8>)>>),
}

/// etcd, under a prefix.
pub struct EtcdStore {
    ops: mpsc::UnboundedSender<Op>,
    prefix: String,
    /// What every write must hold (see [`Fence`]); none: writes are free
    /// (the offline tools).
    fence: Option<Fence>,
}

/// The leadership a server's writes hold. While it leads, every write is
/// a transaction that commits only if the leader key still has the
/// creation revision its election gave it (the term): a deposed leader's
/// late write changes nothing. While it does not lead, writes are refused
/// here, before they reach etcd.
#[derive(Clone, Default)]
pub struct Fence {
    held: std::sync::Arc<std::sync::RwLock<Option<(String, i64)>>>,
}

impl Fence {
    /// Writes from now on hold only while `key` was created at `revision`.
    pub fn lead(&self, key: &str, revision: i64) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = Some((key.to_string(), revision));
    }

    /// Writes from now on are refused.
    pub fn drop_lead(&self) {
        *self.held.write().unwrap_or_else(|p| p.into_inner()) = None;
    }

    fn held(&self) -> Option<(String, i64)> {
        self.held.read().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn backend(op: &'static str) -> impl Fn(etcd_client::Error) -> StoreError {
    move |e| StoreError::Backend {
        op,
        reason: format!("etcd: {e}"),
    }
}

fn timed_out(op: &'static str) -> StoreError {
    StoreError::Backend {
        op,
        reason: format!("etcd: no answer within {} s", OP_TIMEOUT.as_secs()),
    }
}

/// The client options `[store]` asks for: TLS with etcd's CA (and this
/// server's certificate) for https endpoints.
pub(crate) fn options(section: &StoreSection) -> Result<ConnectOptions, StoreError> {
    let read = |p: &std::path::Path| {
        std::fs::read(p).map_err(|e| StoreError::Backend {
            op: "open",
            reason: format!("read {}: {e}", p.display()),
        })
    };
    let mut opts = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(OP_TIMEOUT)
        .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
    if let Some(ca) = &section.ca {
        let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
        if let (Some(cert), Some(key)) = (&section.cert, &section.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        opts = opts.with_tls(tls);
    }
    Ok(opts)
}

impl EtcdStore {
    /// Connects to the endpoints of `section` and checks that etcd
    /// answers; the client then runs on a thread of its own.
    ///
    /// A server (`fence` given) waits, saying so, while no member can be
    /// reached at all: it never starts on a state it has not read. Wrong
    /// certificates, and anything else, fail at once.
    pub fn open(section: &StoreSection, fence: Option<Fence>) -> Result<Self, StoreError> {
        let waits = fence.is_some();
        let opts = options(section)?;
        let endpoints = section.endpoints.clone();
        let (ops, mut rx) = mpsc::unbounded_channel::<Op>();
        let (ready_tx, ready_rx) = sync_mpsc::sync_channel::<Result<(), StoreError>>(1);
        std::thread::Builder::new()
            .name("orca-etcd".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Backend {
                            op: "open",
                            reason: e.to_string(),
                        }));
                        return;
                    }
                };
                rt.block_on(async move {
                    let mut said: Option<std::time::Instant> = None;
                    let client = loop {
                        let connected = tokio::time::timeout(CONNECT_TIMEOUT, async {
                            let mut client =
                                Client::connect(endpoints.clone(), Some(opts.clone())).await?;
                            // A connection is lazy: ask once, so a wrong
                            // address or certificate fails the start.
                            client.status().await?;
                            Ok::<_, etcd_client::Error>(client)
                        })
                        .await;
                        let why = match connected {
                            Ok(Ok(c)) => break c,
                            Ok(Err(e)) if waits && unreachable(&e) => e.to_string(),
                            Err(_) if waits => "no answer".to_string(),
                            Ok(Err(e)) => {
                                let _ = ready_tx.send(Err(backend("open")(e)));
                                return;
                            }
                            Err(_) => {
                                let _ = ready_tx.send(Err(timed_out("open")));
                                return;
                            }
                        };
                        if said.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                            tracing::warn!(
                                endpoints = %endpoints.join(", "),
                                error = %why,
                                "waiting for etcd: no member can be reached; this server starts once one answers"
                            );
                            said = Some(std::time::Instant::now());
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    };
                    let _ = ready_tx.send(Ok(()));
                    while let Some(op) = rx.recv().await {
                        tokio::spawn(serve(client.kv_client(), op));
                    }
                });
            })
            .map_err(|e| StoreError::Backend {
                op: "open",
                reason: e.to_string(),
            })?;
        ready_rx.recv().map_err(|_| StoreError::Backend {
            op: "open",
            reason: "etcd client thread ended".into(),
        })??;
        Ok(Self {
            ops,
            prefix: section.prefix.clone(),
            fence,
        })
    }

    /// The guard a write must hold: `Ok(None)` when writes are free.
    fn guard(&self, op: &'static str) -> Result<Option<(String, i64)>, StoreError> {
        match &self.fence {
            None => Ok(None),
            Some(fence) => fence.held().map(Some).ok_or(StoreError::NotLeader { op }),
        }
    }

    fn key(&self, tree: Tree, key: &str) -> String {
        format!("{}/{}/{key}", self.prefix, tree.name())
    }

    /// Sends `op` (made with its reply channel) and waits for the answer.
    fn call<T>(
        &self,
        name: &'static str,
        op: impl FnOnce(Reply<T>) -> Op,
    ) -> Result<T, StoreError> {
        let (tx, rx) = sync_mpsc::sync_channel(1);
        self.ops.send(op(tx)).map_err(|_| StoreError::Backend {
            op: name,
            reason: "etcd client thread ended".into(),
        })?;
        // The client's own timeout answers first; this one is a backstop.
        rx.recv_timeout(OP_TIMEOUT + Duration::from_secs(1))
            .map_err(|_| timed_out(name))?
    }
}

/// True for a failure another try may not meet: the call found no
/// connection to the member it went to (down, or not connected yet),
/// while others may answer.
pub(crate) fn transient(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => s.code() == tonic::Code::Unavailable,
        _ => false,
    }
}

/// True when no TCP connection to any member could be made (down, or
/// not there yet), unlike a member that answered and refused.
fn unreachable(e: &etcd_client::Error) -> bool {
    format!("{e:?}").contains("tcp connect error")
}

/// Runs `call` again (5 times at most, 50 ms more apart each time) while
/// it fails [`transient`]ly. Every call here may run twice: a put or a
/// delete of the same value, and a guarded transaction, change nothing
/// more the second time.
pub(crate) async fn retried<T, F, Fut>(mut call: F) -> Result<T, etcd_client::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
{
    let mut tries = 0u32;
    loop {
        match call().await {
            Err(e) if transient(&e) && tries < 5 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50) * tries).await;
            }
            done => return done,
        }
    }
}

/// Runs `op` alone (no guard), or in a transaction that commits only
/// while the leader key has the term's creation revision.
async fn guarded(
    kv: &mut etcd_client::KvClient,
    name: &'static str,
    op: TxnOp,
    guard: Option<(String, i64)>,
) -> Result<(), StoreError> {
    let txn = match guard {
        None => Txn::new().and_then([op]),
        Some((key, revision)) => Txn::new()
            .when([Compare::create_revision(key, CompareOp::Equal, revision)])
            .and_then([op]),
    };
    let done = retried(|| {
        let (mut kv, txn) = (kv.clone(), txn.clone());
        async move { kv.txn(txn).await }
    })
    .await
    .map_err(backend(name))?;
    if done.succeeded() {
        Ok(())
    } else {
        Err(StoreError::NotLeader { op: name })
    }
}

/// Runs one call and answers it.
async fn serve(mut kv: etcd_client::KvClient, op: Op) {
    match op {
        Op::Get(key, reply) => {
            let r = retried(|| {
                let (mut kv, key) = (kv.clone(), key.clone());
                async move { kv.get(key, None).await }
            })
            .await
            .map(|r| r.kvs().first().map(|kv| kv.value().to_vec()))
            .map_err(backend("get"));
            let _ = reply.send(r);
        }
        Op::Put(key, value, guard, reply) => {
            let r = guarded(&mut kv, "put", TxnOp::put(key, value, None), guard).await;
            let _ = reply.send(r);
        }
        Op::Delete(key, guard, reply) => {
            let r = guarded(&mut kv, "delete", TxnOp::delete(key, None), guard).await;
            let _ = reply.send(r);
        }
        Op::List(prefix, reply) => {
            let r = retried(|| {
                let (mut kv, key) = (kv.clone(), prefix.clone());
                async move { kv.get(key, Some(GetOptions::new().with_prefix())).await }
            })
            .await
            .map(|r| {
                r.kvs()
                    .iter()
                    .map(|kv| {
                        let key = String::from_utf8_lossy(kv.key());
                        let key = key.strip_prefix(&prefix).unwrap_or(&key).to_string();
                        (key, kv.value().to_vec())
                    })
                    .collect()
            })
            .map_err(backend("scan"));
            let _ = reply.send(r);
        }
    }
}

impl Store for EtcdStore {
    fn get(&self, tree: Tree, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let key = self.key(tree, key);
        self.call("get", |r| Op::Get(key, r))
    }

    fn put(&self, tree: Tree, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let key = self.key(tree, key);
        let value = value.to_vec();
        let guard = self.guard("put")?;
        self.call("put", |r| Op::Put(key, value, guard, r))
    }

    fn delete(&self, tree: Tree, key: &str) -> Result<(), StoreError> {
        let key = self.key(tree, key);
        let guard = self.guard("delete")?;
        self.call("delete", |r| Op::Delete(key, guard, r))
    }

    fn list(&self, tree: Tree) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let prefix = self.key(tree, "");
        self.call("scan", |r| Op::List(prefix, r))
    }

    /// One range over the whole prefix, so one revision: etcd's own
    /// consistent view. The election's keys, outside every tree, are left.
    fn list_every(&self) -> Result<Vec<(Tree, String, Vec<u8>)>, StoreError> {
        let prefix = format!("{}/", self.prefix);
        let listed = self.call("scan", |r| Op::List(prefix, r))?;
        Ok(listed
            .into_iter()
            .filter_map(|(path, value)| {
                let (tree, key) = path.split_once('/')?;
                Some((Tree::from_name(tree)?, key.to_string(), value))
            })
            .collect())
    }
}
