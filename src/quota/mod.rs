//! The quota ledger: the single source of truth for usage and limits.
//!
//! Usage is kept per *folder* (a [`FolderRef`] interned as a [`FolderId`]).
//! Each folder belongs to one mailbox account — its quota root — and, when it
//! has a tenant, to that tenant's account. Account usage is the sum of its
//! folders' usage, maintained incrementally on every charge and rebuilt from
//! the folders whenever a run-time limit change can move quota roots.
//!
//! All mutable state sits behind one mutex: the critical sections are a few
//! additions, and a single lock is what makes "check, then charge" atomic, so
//! concurrent reservations can never jointly overshoot a limit.

mod escrow;
pub use escrow::{TenantHolding, WantShare};
mod overrides;
mod report;
mod rules;
mod shares;
mod state;
#[cfg(test)]
mod tests;

use overrides::{OverrideKey, load_overrides, save_overrides};
pub use report::{PartitionUsage, human_size};
use rules::{LimitRules, configured_mailboxes};
use state::State;

use std::fmt;
use std::hash::Hash;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Limit};
use crate::layout::FolderRef;

/// Run-time limit overrides, inside `control.state_dir`.
const LIMITS_FILE: &str = "limits.json";

// ---------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------

/// An interned [`FolderRef`]; cheap to copy and to charge.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct FolderId(pub u32);

/// What a reservation is for: metadata may use the grace above a full limit
/// (so a full mailbox can still expunge), message data may not.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ChargeKind {
    Data,
    Metadata,
}

/// A quota account, by display name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Scope {
    Mailbox(String),
    Tenant(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Mailbox(name) => write!(f, "mailbox {name}"),
            Scope::Tenant(name) => write!(f, "tenant {name}"),
        }
    }
}

/// Why a reservation was refused (→ `EDQUOT`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub scope: Scope,
    pub tenant: Option<String>,
    /// For a tenant refusal: the mailbox the refused bytes were for.
    pub mailbox: Option<String>,
    /// The hard limit.
    pub limit: u64,
    /// Extra room the refused reservation was allowed (metadata grace, else 0).
    pub grace: u64,
    pub used: u64,
    pub asked: u64,
    /// Cluster mode: `limit` is this host's share of the tenant's limit,
    /// not the limit itself (more may come from the cluster).
    pub share: bool,
}

impl Refusal {
    /// Bytes beyond what the account could take.
    pub fn over_by(&self) -> u64 {
        let wanted = self.used.saturating_add(self.asked);
        wanted.saturating_sub(self.limit.saturating_add(self.grace))
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.scope)?;
        if let (Scope::Mailbox(_), Some(tenant)) = (&self.scope, &self.tenant) {
            write!(f, " (tenant {tenant})")?;
        }
        if let (Scope::Tenant(_), Some(mailbox)) = (&self.scope, &self.mailbox) {
            write!(f, " (mailbox {mailbox})")?;
        }
        if self.share {
            write!(f, " share of the cluster limit held here {}", self.limit)?;
        } else {
            write!(f, " limit {}", self.limit)?;
        }
        if self.grace > 0 {
            write!(f, " (+{} metadata grace)", self.grace)?;
        }
        write!(
            f,
            " used {} asked {} over by {}",
            self.used,
            self.asked,
            self.over_by()
        )
    }
}

impl std::error::Error for Refusal {}

/// Usage of every tenant and mailbox account, for people and scripts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Report {
    pub tenants: Vec<TenantUsage>,
    pub mailboxes: Vec<MailboxUsage>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct TenantUsage {
    pub name: String,
    pub used: u64,
    pub limit: Option<u64>,
    /// used / limit in percent, one decimal; `None` without a limit.
    #[serde(default)]
    pub percent: Option<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MailboxUsage {
    pub name: String,
    pub tenant: Option<String>,
    pub used: u64,
    pub limit: Option<u64>,
    /// Partition(s) the mailbox's folders live on, comma-separated.
    pub partition: Option<String>,
    /// used / limit in percent, one decimal; `None` without a limit.
    #[serde(default)]
    pub percent: Option<f64>,
    /// Every partition the mailbox's folders live on, with their bytes.
    #[serde(default)]
    pub partitions: Vec<PartitionUsage>,
}

// ---------------------------------------------------------------------------
// The ledger
// ---------------------------------------------------------------------------

pub struct Ledger {
    /// Read-mostly intern table, so the hot path (`folder()` on a known
    /// folder) never takes the state lock.
    ids: DashMap<FolderRef, FolderId>,
    state: Mutex<State>,
    /// Serialises `set_limit`, so the file on disk always matches the newest
    /// in-memory overrides while the disk I/O stays outside the state lock.
    persisting: Mutex<()>,
    state_dir: PathBuf,
    metadata_grace: u64,
    warn_percent: u8,
    /// Runs after a run-time limit change may have moved quota roots (the
    /// filesystem recounts files with names in several folders).
    roots_changed: Mutex<Option<RootsChanged>>,
    /// Signalled whenever a cluster share grows (see `escrow.rs`).
    share_grown: Condvar,
    /// Cluster mode: how a write short of this host's share asks for more.
    escrow: OnceLock<escrow::Escrow>,
}

/// See [`Ledger::on_roots_changed`].
pub type RootsChanged = Box<dyn Fn() + Send + Sync>;

impl Ledger {
    /// Loads run-time overrides from `state_dir/limits.json` if present.
    pub fn new(config: &Config) -> Result<Ledger, String> {
        let state_dir = config.control.state_dir.clone();
        let rules = LimitRules {
            quota: config.quota.clone(),
            tenants: config.tenants.clone(),
            mailboxes: configured_mailboxes(config)?,
            overrides: load_overrides(&state_dir)?,
            cluster: Default::default(),
        };
        let mut state = State::new(rules);
        state.rebuild_accounts(config.quota.warn_percent);
        Ok(Ledger {
            ids: DashMap::new(),
            state: Mutex::new(state),
            persisting: Mutex::new(()),
            state_dir,
            metadata_grace: config.quota.metadata_grace,
            warn_percent: config.quota.warn_percent,
            roots_changed: Mutex::new(None),
            share_grown: Condvar::new(),
            escrow: OnceLock::new(),
        })
    }

    /// Interns a folder; lock-free when it is already known.
    pub fn folder(&self, folder: &FolderRef) -> FolderId {
        if let Some(id) = self.ids.get(folder) {
            return *id;
        }
        let mut state = self.lock();
        // Re-check under the lock: another thread may have interned it since.
        if let Some(id) = self.ids.get(folder) {
            return *id;
        }
        let id = state.add_folder(folder.clone());
        self.ids.insert(folder.clone(), id);
        id
    }

    /// Panics on an id this ledger did not hand out (a programming error).
    pub fn folder_ref(&self, id: FolderId) -> FolderRef {
        self.lock().folders[id.0 as usize].name.clone()
    }

    /// All-or-nothing: charges `bytes` once per occurrence in `charges`
    /// unless that would take any touched account over its limit.
    pub fn reserve(
        &self,
        charges: &[FolderId],
        bytes: u64,
        kind: ChargeKind,
    ) -> Result<(), Refusal> {
        // Nothing grows, so nothing can overshoot — even an account already
        // over its limit (after a limit was lowered) may take an empty file.
        if bytes == 0 || charges.is_empty() {
            return Ok(());
        }
        let charges: Vec<(FolderId, u64)> = charges.iter().map(|&f| (f, bytes)).collect();
        self.charge_waiting(&charges, &[], kind).map(drop)
    }

    /// Under the lock: refuses if `charges` minus `credits` would take any
    /// account past its limit (plus grace for metadata), else applies the
    /// charges. Nothing grows when every charge is 0: nothing is checked.
    fn charge_checked(
        &self,
        state: &mut State,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
        kind: ChargeKind,
    ) -> Result<(), Refusal> {
        if charges.iter().all(|&(_, bytes)| bytes == 0) {
            return Ok(());
        }
        let grace = match kind {
            ChargeKind::Data => 0,
            ChargeKind::Metadata => self.metadata_grace,
        };
        state.check(charges, credits, grace)?;
        for &(folder, bytes) in charges.iter().filter(|&&(_, bytes)| bytes > 0) {
            state.charge(&[folder], bytes, self.warn_percent);
        }
        Ok(())
    }

    /// Starts a transfer (a rename moving names between folders): checked
    /// on net growth (charges minus credits), then applied at once — `charges`
    /// added, `credits` taken off usage — so every report shows the
    /// outcome and no account shows more than the transfer leaves it. The
    /// credited bytes stay held against the limits until the transfer ends,
    /// so nothing else can use that room before the names have really left —
    /// except at an account the transfer also charges (a tenant when mail
    /// moves between two of its mailboxes), where the charge already counts
    /// them.
    /// The returned guard is undone when dropped unless committed, so no
    /// error path can leave bytes held.
    pub fn begin_transfer(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
        kind: ChargeKind,
    ) -> Result<Transfer<'_>, Refusal> {
        let mut state = self.charge_waiting(charges, credits, kind)?;
        let credits: Vec<_> = credits
            .iter()
            .map(|&(folder, bytes)| (folder, state.credit(folder, bytes, self.warn_percent)))
            .collect();
        let holds = state.holds_for(charges, &credits);
        for (&(folder, _), &held) in credits.iter().zip(&holds) {
            state.hold(folder, held);
        }
        Ok(Transfer {
            ledger: self,
            charges: charges.to_vec(),
            credits,
            holds,
            committed: false,
        })
    }

    /// Ends a transfer: releases the held bytes, and undoes the transfer if
    /// the operation failed.
    fn end_transfer(&self, t: &Transfer, done: bool) {
        let mut state = self.lock();
        for (&(folder, bytes), &held) in t.credits.iter().zip(&t.holds) {
            state.release(folder, held);
            if !done {
                state.charge(&[folder], bytes, self.warn_percent);
            }
        }
        if !done {
            for &(folder, bytes) in &t.charges {
                state.refund(&[folder], bytes, self.warn_percent);
            }
        }
    }

    /// Gives bytes back; usage never goes below zero.
    pub fn refund(&self, charges: &[FolderId], bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.lock().refund(charges, bytes, self.warn_percent);
    }

    /// Charges without checking limits: the start-up scan and settling
    /// record what is already on disk, which cannot be refused.
    pub fn charge_unchecked(&self, charges: &[FolderId], bytes: u64) {
        if bytes == 0 {
            return;
        }
        self.lock().charge(charges, bytes, self.warn_percent);
    }

    /// Changes a limit at run time: `Some(Some(n))` sets it, `Some(None)`
    /// makes it unlimited, `None` removes the override. Persisted before
    /// returning, so the change survives a restart.
    pub fn set_limit(&self, scope: &Scope, limit: Option<Limit>) -> Result<(), String> {
        let key = OverrideKey::parse(scope)?;
        let _serialised = self.persisting.lock().unwrap_or_else(|e| e.into_inner());
        let mut overrides = self.lock().rules.overrides.clone();
        overrides.apply(&key, limit);
        save_overrides(&self.state_dir, &overrides)?;
        let mut state = self.lock();
        state.rules.overrides = overrides;
        // An explicit mailbox limit can make (or unmake) a quota root.
        state.rebuild_accounts(self.warn_percent);
        drop(state);
        if let Some(f) = &*self.roots_changed.lock().unwrap_or_else(|e| e.into_inner()) {
            f();
        }
        // The control interface logs the change, with who asked.
        Ok(())
    }

    /// Sets what runs after a run-time limit change may have moved quota
    /// roots (see [`Ledger::roots`]).
    pub fn on_roots_changed(&self, f: RootsChanged) {
        *self.roots_changed.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
    }

    /// The quota root (mailbox account) of each folder, as numbers equal
    /// for folders of one root; valid until a run-time limit change.
    pub fn roots(&self, folders: &[FolderId]) -> Vec<usize> {
        let state = self.lock();
        folders
            .iter()
            .map(|f| state.folders[f.0 as usize].mailbox)
            .collect()
    }

    /// The limit that applies to `scope` as an account (for a mailbox name
    /// that is not a quota root: the limit it would have if it were one).
    pub fn effective_limit(&self, scope: &Scope) -> Limit {
        let state = self.lock();
        match scope {
            Scope::Tenant(tenant) => state.rules.tenant_limit(tenant),
            Scope::Mailbox(name) => match FolderRef::parse_display(name) {
                Ok(root) => state.rules.mailbox_limit(&root),
                // Not a mailbox name at all: only the global default can apply.
                Err(_) => state.rules.quota.mailbox_limit,
            },
        }
    }

    /// Bytes charged to `scope`; 0 for names that are not accounts.
    pub fn usage(&self, scope: &Scope) -> u64 {
        let state = self.lock();
        state.account(scope).map_or(0, |account| account.used)
    }

    /// For `statfs` on a folder's directory: of its mailbox and tenant
    /// limits, the one with the least room left, as (limit, used).
    pub fn statfs_quota(&self, folder: FolderId) -> Option<(u64, u64)> {
        let state = self.lock();
        let entry = &state.folders[folder.0 as usize];
        let mailbox = state.mailboxes.list[entry.mailbox].quota();
        let tenant = entry.tenant.and_then(|t| state.tenants.list[t].quota());
        [mailbox, tenant]
            .into_iter()
            .flatten()
            .min_by_key(|(limit, used)| limit.saturating_sub(*used))
    }

    /// A tenant's (limit, used); None when unlimited.
    pub fn tenant_quota(&self, tenant: &str) -> Option<(u64, u64)> {
        let state = self.lock();
        let used = state.tenants.get(tenant).map_or(0, |account| account.used);
        state.rules.tenant_limit(tenant).map(|limit| (limit, used))
    }

    /// Records the partition a folder lives on, shown in reports for its
    /// mailbox account.
    pub fn set_partition(&self, folder: FolderId, partition: &str) {
        let mut state = self.lock();
        let entry = &mut state.folders[folder.0 as usize];
        if entry.partition.as_deref() != Some(partition) {
            entry.partition = Some(partition.to_string());
        }
    }

    /// Every tenant and mailbox account that has usage or a limit, by name.
    pub fn report(&self) -> Report {
        self.lock().report()
    }

    /// Zeroes all usage, before a rescan.
    pub fn reset_usage(&self) {
        self.lock().reset_usage();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere cannot leave half-applied arithmetic behind that is
        // worse than refusing every later filesystem call, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transfer under way (see `Ledger::begin_transfer`): committed once the
/// operation it covers has happened, undone when dropped otherwise.
#[must_use = "a transfer is undone when dropped; commit it once the operation is done"]
pub struct Transfer<'a> {
    ledger: &'a Ledger,
    charges: Vec<(FolderId, u64)>,
    credits: Vec<(FolderId, u64)>,
    /// What each credit holds until the transfer ends (`State::holds_for`).
    holds: Vec<state::Held>,
    committed: bool,
}

impl Transfer<'_> {
    /// The operation happened: the transfer stands and the held bytes are
    /// released.
    pub fn commit(mut self) {
        self.committed = true;
        self.ledger.end_transfer(&self, true);
    }
}

impl Drop for Transfer<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.ledger.end_transfer(self, false);
        }
    }
}
