//! This host's shares of cluster-wide tenant limits (cluster mode only).
//!
//! In a cluster a tenant's limit spans several hosts. Each host may hold,
//! locally, only the share of it the cluster agent (`src/cluster/`) has
//! claimed for it in etcd; the ledger checks growth against that share in
//! memory, under its one lock, exactly as it checks a limit. The agent
//! grows a share before the host runs out, so the write path waits on the
//! network only when a write needs more than the host holds.

use std::collections::HashMap;

use super::state::{Account, check_bound};
use super::{Refusal, Scope};

#[derive(Default)]
pub(super) struct Shares {
    /// False until the agent has registered this host's usage in etcd and
    /// learned the cluster's limits: until then no tenant may grow (a limit
    /// set on another host would not be known yet).
    pub(super) registered: bool,
    /// Bytes of each tenant's limit this host may hold, by tenant name.
    pub(super) held: HashMap<String, u64>,
}

impl Shares {
    /// Refuses growth of a tenant beyond this host's share of its limit.
    /// Tenants without a limit need no share once registered.
    pub(super) fn check(&self, account: &Account, asked: u64, grace: u64) -> Result<(), Refusal> {
        if self.registered && account.limit.is_none() {
            return Ok(());
        }
        let share = if self.registered {
            self.share_of(&account.scope)
        } else {
            0
        };
        check_bound(account, share, true, asked, grace)
    }

    fn share_of(&self, scope: &Scope) -> u64 {
        match scope {
            Scope::Tenant(name) => self.held.get(name.as_str()).copied().unwrap_or(0),
            Scope::Mailbox(_) => 0,
        }
    }
}
