//! Registration: before any tenant may grow, the agent learns the
//! cluster's limits, takes a lease, claims exactly what this host stores
//! (rebuilt from disk by the start-up scan) and forgets what a previous
//! life of it held; and, after etcd was lost, reads anew what it may have
//! missed.

use std::collections::BTreeSet;
use std::time::Instant;

use super::{Agent, Tenant};
use crate::cluster::keys::Key;
use crate::cluster::plan::Holding;
use crate::cluster::store::StoreResult;
use crate::quota::TenantHolding;

impl Agent {
    /// Before any tenant may grow: learn the limits, take a lease, claim
    /// exactly what this host stores (rebuilt from disk by the scan) and
    /// forget what a previous life of it held.
    pub(super) async fn register(&mut self) -> StoreResult<()> {
        self.connect().await?;
        self.store
            .as_mut()
            .expect("connected")
            .grant_lease()
            .await?;
        let now = Instant::now();
        let holdings = self.ledger.tenant_holdings();
        let (mine, _) = self
            .store()
            .range(self.store().keys.all_allocations())
            .await?;
        let stored: BTreeSet<&str> = holdings.iter().map(|h| h.tenant.as_str()).collect();
        let host = self.config.host_id.clone();
        let forgotten: BTreeSet<String> = mine
            .iter()
            .filter_map(|kv| match self.store().keys.parse(kv.key()) {
                Some(Key::Claim { tenant, host: h }) if h == host => Some(tenant),
                _ => None,
            })
            .filter(|tenant| !stored.contains(tenant.as_str()))
            .collect();
        for tenant in &forgotten {
            self.store().forget(tenant).await?;
        }
        self.refresh().await?;
        for holding in &holdings {
            self.seed(holding).await?;
            let claim = Holding {
                claim: holding.used,
                spare: 0,
            };
            // Stored bytes are claimed unconditionally, and in one step:
            // a crash or a lost race in between must not leave them
            // counted nowhere for the other hosts to hand out.
            self.store().reclaim(&holding.tenant, holding.used).await?;
            self.ledger.set_share(&holding.tenant, holding.used);
            let mut tenant = Tenant::new(now);
            tenant.held = claim;
            tenant.used = holding.used;
            self.tenants.insert(holding.tenant.clone(), tenant);
        }
        self.publish().await;
        Ok(())
    }

    /// Reads the limits and starving hosts anew and restarts the watch
    /// (at start, and after etcd was lost: events may have been missed).
    pub(super) async fn refresh(&mut self) -> StoreResult<()> {
        let (limits, revision) = self.store().limits().await?;
        self.ledger.set_cluster_limits(limits.clone());
        self.limits = limits;
        let prefix = format!("{}/want/", self.config.prefix);
        let (wants, _) = self.store().range(prefix).await?;
        for tenant in self.tenants.values_mut() {
            tenant.starving_hosts.clear();
        }
        for kv in &wants {
            if let Some(Key::Want { tenant, host }) = self.store().keys.parse(kv.key())
                && host != self.config.host_id
            {
                let now = Instant::now();
                let t = self
                    .tenants
                    .entry(tenant)
                    .or_insert_with(|| Tenant::new(now));
                t.starving_hosts.insert(host);
            }
        }
        self.watch = Some(self.store().watch(revision + 1).await?);
        self.stale = false;
        self.back();
        Ok(())
    }

    /// Writes a tenant's configured limit to etcd if etcd has none.
    pub(super) async fn seed(&mut self, holding: &TenantHolding) -> StoreResult<()> {
        if self.limits.contains_key(&holding.tenant) {
            return Ok(());
        }
        let Some(limit) = self.ledger.local_tenant_limit(&holding.tenant) else {
            return Ok(());
        };
        self.store()
            .seed_limit(&holding.tenant, Some(limit))
            .await?;
        let snapshot = self.store().tenant(&holding.tenant).await?;
        if let Some(limit) = snapshot.limit {
            self.limits.insert(holding.tenant.clone(), limit);
            self.ledger.set_cluster_limit(&holding.tenant, Some(limit));
        }
        Ok(())
    }
}
