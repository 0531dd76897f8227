//! The etcd side of the escrow: every read and transaction the agent makes,
//! each bounded in time so an unreachable etcd costs the agent a timeout,
//! never a hang. Only the agent's thread calls these.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions, WatchStream,
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
    client: Client,
    pub keys: Keys,
    timeout: Duration,
    lease_ttl: i64,
    pub lease: i64,
}

impl Store {
    pub async fn connect(config: &ClusterConfig, timeout: Duration) -> StoreResult<Store> {
        let options = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout);
        let client = bounded(timeout, async {
            Client::connect(&config.etcd_endpoints, Some(options)).await
        })
        .await?;
        Ok(Store {
            client,
            keys: Keys::new(&config.prefix, &config.host_id),
            timeout,
            lease_ttl: config.lease_ttl_secs as i64,
            lease: 0,
        })
    }

    pub async fn grant_lease(&mut self) -> StoreResult<()> {
        let (ttl, mut c) = (self.lease_ttl, self.client.clone());
        let granted = bounded(self.timeout, async move { c.lease_grant(ttl, None).await }).await?;
        self.lease = granted.id();
        Ok(())
    }

    /// Renews the lease; `Ok(false)` when it had already expired.
    pub async fn keep_alive(&mut self) -> StoreResult<bool> {
        let (id, mut c) = (self.lease, self.client.clone());
        let ttl = bounded(self.timeout, async move {
            let (mut keeper, mut stream) = c.lease_keep_alive(id).await?;
            keeper.keep_alive().await?;
            Ok(stream.message().await?.map_or(0, |r| r.ttl()))
        })
        .await?;
        Ok(ttl > 0)
    }

    /// Every key-value under `prefix`, and the revision read at.
    pub async fn range(&self, prefix: String) -> StoreResult<(Vec<KeyValue>, i64)> {
        let mut c = self.client.clone();
        let mut got = bounded(self.timeout, async move {
            c.get(prefix, Some(GetOptions::new().with_prefix())).await
        })
        .await?;
        let revision = got.header().map_or(0, |h| h.revision());
        Ok((got.take_kvs(), revision))
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
        let mut c = self.client.clone();
        let response = bounded(self.timeout, async move { c.txn(txn).await }).await?;
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
        let mut c = self.client.clone();
        let response = bounded(self.timeout, async move { c.txn(txn).await }).await?;
        Ok(response.succeeded())
    }

    /// Writes `tenant`'s limit unless etcd already has one (a config value
    /// seeds a tenant, it never overrides the cluster's).
    pub async fn seed_limit(&self, tenant: &str, limit: Limit) -> StoreResult<()> {
        let key = self.keys.limit(tenant);
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key, keys::limit_value(limit), None)]);
        let mut c = self.client.clone();
        bounded(self.timeout, async move { c.txn(txn).await }).await?;
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) a tenant's cluster limit.
    pub async fn write_limit(&self, tenant: &str, limit: Option<Limit>) -> StoreResult<()> {
        let (key, mut c) = (self.keys.limit(tenant), self.client.clone());
        bounded(self.timeout, async move {
            match limit {
                Some(l) => c.put(key, keys::limit_value(l), None).await.map(drop),
                None => c.delete(key, None).await.map(drop),
            }
        })
        .await
    }

    /// Publishes what this host stores, per tenant, in one transaction.
    pub async fn publish_used(&self, used: &[(String, u64)]) -> StoreResult<()> {
        let ops: Vec<TxnOp> = used
            .iter()
            .map(|(tenant, n)| TxnOp::put(self.keys.used(tenant), n.to_string(), None))
            .collect();
        let mut c = self.client.clone();
        bounded(self.timeout, async move {
            c.txn(Txn::new().and_then(ops)).await.map(drop)
        })
        .await
    }

    /// Says (`Some(bytes)`, on the lease) or unsays that this host is
    /// starved for `tenant`, so that the others give back their spare.
    pub async fn want(&self, tenant: &str, bytes: Option<u64>) -> StoreResult<()> {
        let (key, lease, mut c) = (self.keys.want(tenant), self.lease, self.client.clone());
        bounded(self.timeout, async move {
            match bytes {
                Some(n) => {
                    let on_lease = PutOptions::new().with_lease(lease);
                    c.put(key, n.to_string(), Some(on_lease)).await.map(drop)
                }
                None => c.delete(key, None).await.map(drop),
            }
        })
        .await
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
        let mut c = self.client.clone();
        bounded(self.timeout, async move {
            c.txn(Txn::new().and_then(ops)).await.map(drop)
        })
        .await
    }

    /// Watches every key of the cluster from `revision` on.
    pub async fn watch(&self, revision: i64) -> StoreResult<WatchStream> {
        let (key, mut c) = (self.keys.all(), self.client.clone());
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision);
        bounded(
            self.timeout,
            async move { c.watch(key, Some(options)).await },
        )
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
