//! The etcd side of the escrow: every read and transaction the agent makes,
//! each bounded in time so an unreachable etcd costs the agent a timeout,
//! never a hang. Only the agent's thread calls these.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchOptions, WatchStream,
};

use super::keys::{self, Key, Keys};
use super::plan::{Holding, others_total};
use crate::config::{ClusterConfig, Limit};

/// Why an etcd call did not happen.
#[derive(Debug)]
pub enum StoreError {
    Etcd(etcd_client::Error),
    TimedOut,
    /// The lease the spare was tied to is gone (expired while unreachable).
    LeaseLost,
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Etcd(e) => write!(f, "{e}"),
            StoreError::TimedOut => write!(f, "no answer in time"),
            StoreError::LeaseLost => write!(f, "this host's lease expired"),
        }
    }
}

impl std::error::Error for StoreError {}

impl From<etcd_client::Error> for StoreError {
    fn from(e: etcd_client::Error) -> Self {
        if e.to_string().contains("lease not found") {
            return StoreError::LeaseLost;
        }
        StoreError::Etcd(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Pause before trying the endpoints again after each failed once.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// One tenant's keys at one revision.
#[derive(Debug, Default)]
pub struct TenantSnapshot {
    pub revision: i64,
    /// `None`: etcd has no limit for the tenant.
    pub limit: Option<Limit>,
    /// This host's holding as etcd has it (a spare on a dead lease is gone).
    pub mine: Holding,
    /// Σ of the other hosts' holdings (see [`others_total`]).
    pub others: u64,
}

pub struct Store {
    /// One client per endpoint: calls stick to the one that last answered
    /// and move on to the next when it does not, so a lost etcd member
    /// costs one failed attempt, not a share of every call.
    clients: Vec<Client>,
    current: AtomicUsize,
    pub keys: Keys,
    timeout: Duration,
    lease_ttl: i64,
    pub lease: i64,
}

impl Store {
    pub async fn connect(config: &ClusterConfig, timeout: Duration) -> StoreResult<Store> {
        // A member cut off from the others answers "no leader" at once
        // instead of waiting for one.
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_require_leader(true);
        let mut clients = Vec::new();
        for endpoint in &config.etcd_endpoints {
            let options = Some(options.clone());
            clients.push(bounded(timeout, Client::connect([endpoint], options)).await?);
        }
        Ok(Store {
            clients,
            current: AtomicUsize::new(0),
            keys: Keys::new(&config.prefix, &config.host_id),
            timeout,
            lease_ttl: config.lease_ttl_secs as i64,
            lease: 0,
        })
    }

    /// Runs `op` on the current endpoint's client, bounded in time; on
    /// failure tries the next endpoint (at least twice in all, so a single
    /// etcd's leader election is ridden out too).
    async fn call<T, F, Fut>(&self, op: F) -> StoreResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let count = self.clients.len();
        let mut failure = StoreError::TimedOut;
        for attempt in 0..count.max(2) {
            let at = self.current.load(Ordering::Relaxed) % count;
            match bounded(self.timeout, op(self.clients[at].clone())).await {
                Ok(answer) => return Ok(answer),
                Err(StoreError::LeaseLost) => return Err(StoreError::LeaseLost),
                Err(e) => failure = e,
            }
            self.current.store((at + 1) % count, Ordering::Relaxed);
            if attempt + 1 >= count {
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
        Err(failure)
    }

    pub async fn grant_lease(&mut self) -> StoreResult<()> {
        let ttl = self.lease_ttl;
        let granted = self
            .call(|mut c| async move { c.lease_grant(ttl, None).await })
            .await?;
        self.lease = granted.id();
        Ok(())
    }

    /// Ends the lease: every spare and want key on it goes at once.
    pub async fn revoke_lease(&self) -> StoreResult<()> {
        let id = self.lease;
        self.call(|mut c| async move { c.lease_revoke(id).await.map(drop) })
            .await
    }

    /// Renews the lease; `Ok(false)` when it had already expired.
    pub async fn keep_alive(&mut self) -> StoreResult<bool> {
        let id = self.lease;
        let ttl = self
            .call(|mut c| async move {
                let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
                keeper.keep_alive().await?;
                Ok(stream.message().await?.map_or(0, |r| r.ttl()))
            })
            .await?;
        Ok(ttl > 0)
    }

    /// Every key-value under `prefix`, and the revision read at.
    pub async fn range(&self, prefix: String) -> StoreResult<(Vec<KeyValue>, i64)> {
        let mut got = self
            .call(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        Ok((got.take_kvs(), revision))
    }

    /// Runs a transaction; whether its comparisons held.
    async fn txn(&self, txn: Txn) -> StoreResult<TxnResponse> {
        self.call(|mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    /// The cluster's tenant limits (unreadable values are skipped).
    pub async fn limits(&self) -> StoreResult<(BTreeMap<String, Limit>, i64)> {
        let (kvs, revision) = self.range(self.keys.limits()).await?;
        let limits = kvs
            .iter()
            .filter_map(|kv| match self.keys.parse(kv.key()) {
                Some(Key::Limit { tenant }) => Some((tenant, keys::limit(kv.value())?)),
                _ => None,
            })
            .collect();
        Ok((limits, revision))
    }

    /// One tenant's limit and holdings, read in one transaction.
    pub async fn tenant(&self, tenant: &str) -> StoreResult<TenantSnapshot> {
        let prefixed = || Some(GetOptions::new().with_prefix());
        let txn = Txn::new().and_then([
            TxnOp::get(self.keys.limit(tenant), None),
            TxnOp::get(self.keys.allocations(tenant), prefixed()),
            TxnOp::get(self.keys.used_of(tenant), prefixed()),
        ]);
        let response = self.txn(txn).await?;
        let mut snapshot = TenantSnapshot {
            revision: response.header().map_or(0, |h| h.revision()),
            ..Default::default()
        };
        let mut hosts: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        for op in response.op_responses() {
            let TxnOpResponse::Get(got) = op else {
                continue;
            };
            for kv in got.kvs() {
                let n = keys::bytes(kv.value());
                match self.keys.parse(kv.key()) {
                    Some(Key::Limit { .. }) => snapshot.limit = keys::limit(kv.value()),
                    Some(Key::Claim { host, .. }) => hosts.entry(host).or_default().0 = n,
                    // Only a spare on this host's live lease is still ours.
                    Some(Key::Spare { host, .. })
                        if host != self.keys.host || kv.lease() == self.lease =>
                    {
                        hosts.entry(host).or_default().1 = n;
                    }
                    Some(Key::Used { host, .. }) => hosts.entry(host).or_default().2 = n,
                    _ => {}
                }
            }
        }
        let mine = hosts.remove(&self.keys.host).unwrap_or_default();
        snapshot.mine = Holding {
            claim: mine.0,
            spare: mine.1,
        };
        snapshot.others = others_total(hosts.values());
        Ok(snapshot)
    }

    /// Moves this host's holding of `tenant` from `current` to `target`, if
    /// nothing of the tenant's allocations or limit changed since
    /// `revision` (else `Ok(false)`: read again and retry) and the current
    /// spare, if any, is still on this host's lease.
    pub async fn set_holding(
        &self,
        tenant: &str,
        current: Holding,
        target: Holding,
        revision: i64,
    ) -> StoreResult<bool> {
        let keys = &self.keys;
        let mut compares = vec![
            Compare::mod_revision(keys.allocations(tenant), CompareOp::Less, revision + 1)
                .with_prefix(),
            Compare::mod_revision(keys.limit(tenant), CompareOp::Less, revision + 1),
        ];
        let mut ops = Vec::new();
        match target.claim {
            0 => ops.push(TxnOp::delete(keys.claim(tenant), None)),
            n => ops.push(TxnOp::put(keys.claim(tenant), n.to_string(), None)),
        }
        match target.spare {
            0 => ops.push(TxnOp::delete(keys.spare(tenant), None)),
            n => {
                let on_lease = PutOptions::new().with_lease(self.lease);
                ops.push(TxnOp::put(
                    keys.spare(tenant),
                    n.to_string(),
                    Some(on_lease),
                ));
            }
        }
        if current.spare > 0 {
            // A spare read at `revision` may since have expired with the
            // lease (a deletion no revision compare sees).
            compares.push(Compare::lease(
                keys.spare(tenant),
                CompareOp::Equal,
                self.lease,
            ));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        Ok(self.txn(txn).await?.succeeded())
    }

    /// Writes `tenant`'s limit unless etcd already has one (a config value
    /// seeds a tenant, it never overrides the cluster's).
    pub async fn seed_limit(&self, tenant: &str, limit: Limit) -> StoreResult<()> {
        let key = self.keys.limit(tenant);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, keys::limit_value(limit), None)]);
        self.txn(txn).await.map(drop)
    }

    /// Sets (`Some`) or removes (`None`) a tenant's cluster limit.
    pub async fn write_limit(&self, tenant: &str, limit: Option<Limit>) -> StoreResult<()> {
        let key = self.keys.limit(tenant);
        let op = match limit {
            Some(l) => TxnOp::put(key, keys::limit_value(l), None),
            None => TxnOp::delete(key, None),
        };
        self.txn(Txn::new().and_then([op])).await.map(drop)
    }

    /// Publishes what this host stores, per tenant, in one transaction.
    pub async fn publish_used(&self, used: &[(String, u64)]) -> StoreResult<()> {
        let ops: Vec<TxnOp> = used
            .iter()
            .map(|(tenant, n)| TxnOp::put(self.keys.used(tenant), n.to_string(), None))
            .collect();
        self.txn(Txn::new().and_then(ops)).await.map(drop)
    }

    /// Says (`Some(bytes)`, on the lease) or unsays that this host is
    /// starved for `tenant`, so that the others give back their spare.
    pub async fn want(&self, tenant: &str, bytes: Option<u64>) -> StoreResult<()> {
        let key = self.keys.want(tenant);
        let op = match bytes {
            Some(n) => {
                let on_lease = PutOptions::new().with_lease(self.lease);
                TxnOp::put(key, n.to_string(), Some(on_lease))
            }
            None => TxnOp::delete(key, None),
        };
        self.txn(Txn::new().and_then([op])).await.map(drop)
    }

    /// At registration: this host claims exactly the `used` bytes it stores
    /// of `tenant`, publishes them, and drops a previous life's spare and
    /// want — in one transaction, unconditionally (stored bytes are counted
    /// whatever the limit says), so no moment shows the host holding
    /// nothing while its data is on disk.
    pub async fn reclaim(&self, tenant: &str, used: u64) -> StoreResult<()> {
        let k = &self.keys;
        let claim = match used {
            0 => TxnOp::delete(k.claim(tenant), None),
            n => TxnOp::put(k.claim(tenant), n.to_string(), None),
        };
        let ops = vec![
            claim,
            TxnOp::put(k.used(tenant), used.to_string(), None),
            TxnOp::delete(k.spare(tenant), None),
            TxnOp::delete(k.want(tenant), None),
        ];
        self.txn(Txn::new().and_then(ops)).await.map(drop)
    }

    /// Forgets this host's keys of a tenant it no longer stores anything of.
    pub async fn forget(&self, tenant: &str) -> StoreResult<()> {
        let k = &self.keys;
        let ops: Vec<TxnOp> = [
            k.claim(tenant),
            k.spare(tenant),
            k.used(tenant),
            k.want(tenant),
        ]
        .into_iter()
        .map(|key| TxnOp::delete(key, None::<DeleteOptions>))
        .collect();
        self.txn(Txn::new().and_then(ops)).await.map(drop)
    }

    /// Watches every key of the cluster from `revision` on.
    pub async fn watch(&self, revision: i64) -> StoreResult<WatchStream> {
        let key = self.keys.all();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        self.call(|mut c| {
            let (key, options) = (key.clone(), options.clone());
            async move { c.watch(key, Some(options)).await }
        })
        .await
    }
}

async fn bounded<T>(
    timeout: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> StoreResult<T> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(StoreError::from),
        Err(_) => Err(StoreError::TimedOut),
    }
}
