//! The ledger's side of cluster mode: this host's shares of tenant limits,
//! the cluster's limits, and the bounded wait of a write that needs more
//! share than the host holds. The cluster agent (`src/cluster/`) is the
//! only caller of the setters; the write path only ever waits here, never
//! on the network itself.

use std::collections::BTreeMap;
use std::sync::MutexGuard;
use std::time::{Duration, Instant};

use super::shares::Shares;
use super::state::State;
use super::{ChargeKind, FolderId, Ledger, Refusal, Scope};
use crate::config::Limit;

/// Asks the cluster agent for more of a tenant's limit: (tenant, bytes
/// this host needs to hold in total). Must not block.
pub type WantShare = Box<dyn Fn(&str, u64) + Send + Sync>;

pub(super) struct Escrow {
    /// How long a write short of share waits for more before `EDQUOT`.
    wait: Duration,
    want: WantShare,
}

/// A tenant as the cluster agent sees it on this host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantHolding {
    pub tenant: String,
    /// Bytes stored here, plus bytes a transfer under way still holds.
    pub used: u64,
    pub limit: Limit,
}

impl Ledger {
    /// Checks and applies a charge; in cluster mode a refusal for want of
    /// share asks the agent for more and waits (bounded) for it to come.
    pub(super) fn charge_waiting(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
        kind: ChargeKind,
    ) -> Result<MutexGuard<'_, State>, Refusal> {
        let mut state = self.lock();
        let mut deadline: Option<Instant> = None;
        loop {
            let refusal = match self.charge_checked(&mut state, charges, credits, kind) {
                Ok(()) => return Ok(state),
                Err(r) => r,
            };
            let (Some(escrow), Scope::Tenant(tenant), true) =
                (self.escrow.get(), &refusal.scope, refusal.share)
            else {
                return Err(refusal);
            };
            let now = Instant::now();
            let until = *deadline.get_or_insert(now + escrow.wait);
            if now >= until {
                return Err(refusal);
            }
            (escrow.want)(tenant, refusal.used.saturating_add(refusal.asked));
            state = match self.share_grown.wait_timeout(state, until - now) {
                Ok((guard, _)) => guard,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Turns cluster mode on: from now on every tenant's growth is checked
    /// against this host's share, and no tenant grows until
    /// [`Ledger::shares_registered`].
    pub fn enable_shares(&self, wait: Duration, want: WantShare) {
        self.lock().shares.get_or_insert_with(Shares::default);
        let _ = self.escrow.set(Escrow { wait, want });
    }

    /// The agent has registered this host's usage and learned the limits.
    pub fn shares_registered(&self) {
        if let Some(shares) = self.lock().shares.as_mut() {
            shares.registered = true;
        }
        self.share_grown.notify_all();
    }

    /// Sets this host's share of `tenant`'s limit, never below what the
    /// tenant already holds here (a share only bounds growth). Returns the
    /// share set. Shrink here *before* giving bytes back in etcd, grow
    /// here only *after* etcd granted them: never more is held than owned.
    pub fn set_share(&self, tenant: &str, bytes: u64) -> u64 {
        let mut state = self.lock();
        let holding = state
            .tenants
            .get(tenant)
            .map_or(0, |a| a.used.saturating_add(a.held));
        let set = bytes.max(holding);
        let Some(shares) = state.shares.as_mut() else {
            return set;
        };
        let old = shares.held.insert(tenant.to_string(), set).unwrap_or(0);
        drop(state);
        if set > old {
            self.share_grown.notify_all();
        }
        set
    }

    /// Replaces the cluster's tenant limits (etcd's `limit/` keys).
    pub fn set_cluster_limits(&self, limits: BTreeMap<String, Limit>) {
        let mut state = self.lock();
        state.rules.cluster = limits;
        state.rebuild_accounts(self.warn_percent);
    }

    /// One tenant's cluster limit changed (`None`: etcd has none).
    pub fn set_cluster_limit(&self, tenant: &str, limit: Option<Limit>) {
        let mut state = self.lock();
        let cluster = &mut state.rules.cluster;
        let unchanged = match limit {
            Some(l) => cluster.insert(tenant.to_string(), l) == Some(l),
            None => cluster.remove(tenant).is_none(),
        };
        if !unchanged {
            state.rebuild_accounts(self.warn_percent);
        }
    }

    /// The limit this host would seed etcd with for a tenant etcd has no
    /// limit for: the configuration's, or a local run-time override.
    pub fn local_tenant_limit(&self, tenant: &str) -> Limit {
        let state = self.lock();
        let rules = &state.rules;
        match rules.overrides.tenants.get(tenant) {
            Some(limit) => *limit,
            None => match rules.tenants.get(tenant).and_then(|t| t.limit) {
                Some(limit) => limit,
                None => rules.quota.tenant_limit,
            },
        }
    }

    /// Every tenant with usage or a limit here, as the agent sees it.
    pub fn tenant_holdings(&self) -> Vec<TenantHolding> {
        let state = self.lock();
        state
            .tenants
            .list
            .iter()
            .filter_map(|account| match &account.scope {
                Scope::Tenant(name) => Some(TenantHolding {
                    tenant: name.clone(),
                    used: account.used.saturating_add(account.held),
                    limit: account.limit,
                }),
                Scope::Mailbox(_) => None,
            })
            .collect()
    }
}
