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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::fs::{self, File};
use std::hash::Hash;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use dashmap::DashMap;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Limit, QuotaConfig, TenantConfig};
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
        write!(f, " limit {}", self.limit)?;
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
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct MailboxUsage {
    pub name: String,
    pub tenant: Option<String>,
    pub used: u64,
    pub limit: Option<u64>,
    /// Partition(s) the mailbox's folders live on, comma-separated.
    pub partition: Option<String>,
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
}

impl Ledger {
    /// Loads run-time overrides from `state_dir/limits.json` if present.
    pub fn new(config: &Config) -> Result<Ledger, String> {
        let state_dir = config.control.state_dir.clone();
        let rules = LimitRules {
            quota: config.quota.clone(),
            tenants: config.tenants.clone(),
            mailboxes: configured_mailboxes(config)?,
            overrides: load_overrides(&state_dir)?,
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
        self.reserve_net(&charges, &[], kind)
    }

    /// Checks `charges` (net of `credits`) and applies the charges.
    fn reserve_net(
        &self,
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
        let mut state = self.lock();
        state.check(charges, credits, grace)?;
        for &(folder, bytes) in charges {
            if bytes > 0 {
                state.charge(&[folder], bytes, self.warn_percent);
            }
        }
        Ok(())
    }

    /// Starts a transfer (a rename moving names between folders): checked
    /// on net growth (charges minus credits), then applied at once — `charges`
    /// added, `credits` taken off usage — so every report shows the
    /// outcome and no account shows more than the transfer leaves it. The
    /// credited bytes stay held against the limits until `end_transfer`, so
    /// nothing else can use that room before the names have really left.
    pub fn begin_transfer(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
        kind: ChargeKind,
    ) -> Result<Transfer, Refusal> {
        let grace = match kind {
            ChargeKind::Data => 0,
            ChargeKind::Metadata => self.metadata_grace,
        };
        let mut state = self.lock();
        if charges.iter().any(|&(_, bytes)| bytes > 0) {
            state.check(charges, credits, grace)?;
        }
        for &(folder, bytes) in charges {
            state.charge(&[folder], bytes, self.warn_percent);
        }
        let credits = credits
            .iter()
            .map(|&(folder, bytes)| (folder, state.credit_held(folder, bytes, self.warn_percent)))
            .collect();
        Ok(Transfer {
            charges: charges.to_vec(),
            credits,
        })
    }

    /// Ends a transfer: releases the held bytes, and undoes the transfer if
    /// the operation failed.
    pub fn end_transfer(&self, t: Transfer, done: bool) {
        let mut state = self.lock();
        for &(folder, bytes) in &t.credits {
            state.release_held(folder, bytes);
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
        log::info!("{scope}: limit {}", describe_override(limit));
        Ok(())
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

// ---------------------------------------------------------------------------
// Limit rules: config plus run-time overrides
// ---------------------------------------------------------------------------

struct LimitRules {
    quota: QuotaConfig,
    tenants: BTreeMap<String, TenantConfig>,
    /// `[mailboxes]`, keyed by parsed name.
    mailboxes: BTreeMap<FolderRef, Limit>,
    overrides: Overrides,
}

impl LimitRules {
    /// A limit set for exactly this mailbox: run-time override, then config.
    fn explicit_mailbox_limit(&self, root: &FolderRef) -> Option<Limit> {
        let overridden = self.overrides.mailboxes.get(root);
        overridden.or_else(|| self.mailboxes.get(root)).copied()
    }

    fn mailbox_limit(&self, root: &FolderRef) -> Limit {
        if let Some(limit) = self.explicit_mailbox_limit(root) {
            return limit;
        }
        let tenant = root.tenant.as_ref().and_then(|t| self.tenants.get(t));
        match tenant.and_then(|t| t.mailbox_limit) {
            Some(limit) => limit,
            None => self.quota.mailbox_limit,
        }
    }

    fn tenant_limit(&self, tenant: &str) -> Limit {
        if let Some(limit) = self.overrides.tenants.get(tenant) {
            return *limit;
        }
        match self.tenants.get(tenant).and_then(|t| t.limit) {
            Some(limit) => limit,
            None => self.quota.tenant_limit,
        }
    }

    /// The nearest enclosing folder with its own limit, else the top mailbox.
    fn quota_root(&self, folder: &FolderRef) -> FolderRef {
        let explicit = folder
            .quota_root_candidates()
            .into_iter()
            .find(|candidate| self.explicit_mailbox_limit(candidate).is_some());
        explicit.unwrap_or_else(|| folder.top())
    }

    /// Mailboxes and tenants named in config or overrides: accounts even
    /// before anything is charged to them, so reports show their limits.
    fn named_mailboxes(&self) -> BTreeSet<FolderRef> {
        let configured = self.mailboxes.keys();
        configured
            .chain(self.overrides.mailboxes.keys())
            .cloned()
            .collect()
    }

    fn named_tenants(&self) -> BTreeSet<String> {
        let configured = self.tenants.keys();
        configured
            .chain(self.overrides.tenants.keys())
            .cloned()
            .collect()
    }
}

fn configured_mailboxes(config: &Config) -> Result<BTreeMap<FolderRef, Limit>, String> {
    let mut parsed = BTreeMap::new();
    for (name, mailbox) in &config.mailboxes {
        let root = FolderRef::parse_display(name)
            .map_err(|e| format!("{}: mailboxes.{name:?}: {e}", config.source.display()))?;
        parsed.insert(root, mailbox.limit);
    }
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Run-time overrides and their file
// ---------------------------------------------------------------------------

/// Run-time limits. A present key with `None` means explicitly unlimited.
#[derive(Clone, Debug, Default, PartialEq)]
struct Overrides {
    mailboxes: BTreeMap<FolderRef, Limit>,
    tenants: BTreeMap<String, Limit>,
}

enum OverrideKey {
    Mailbox(FolderRef),
    Tenant(String),
}

impl OverrideKey {
    fn parse(scope: &Scope) -> Result<OverrideKey, String> {
        match scope {
            Scope::Mailbox(name) => FolderRef::parse_display(name)
                .map(OverrideKey::Mailbox)
                .map_err(|e| format!("mailbox {name:?}: {e}")),
            Scope::Tenant(name) => {
                validate_tenant(name).map(|()| OverrideKey::Tenant(name.clone()))
            }
        }
    }
}

fn validate_tenant(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("tenant name is empty".to_string());
    }
    Ok(())
}

impl Overrides {
    fn apply(&mut self, key: &OverrideKey, limit: Option<Limit>) {
        match (key, limit) {
            (OverrideKey::Mailbox(root), Some(limit)) => {
                self.mailboxes.insert(root.clone(), limit);
            }
            (OverrideKey::Mailbox(root), None) => {
                self.mailboxes.remove(root);
            }
            (OverrideKey::Tenant(tenant), Some(limit)) => {
                self.tenants.insert(tenant.clone(), limit);
            }
            (OverrideKey::Tenant(tenant), None) => {
                self.tenants.remove(tenant);
            }
        }
    }

    fn to_file(&self) -> LimitsFile {
        let mailboxes = self.mailboxes.iter();
        LimitsFile {
            mailboxes: mailboxes
                .map(|(root, limit)| (root.display(), *limit))
                .collect(),
            tenants: self.tenants.clone(),
        }
    }

    fn from_file(file: LimitsFile) -> Result<Overrides, String> {
        let mut overrides = Overrides::default();
        for (name, limit) in file.mailboxes {
            let root =
                FolderRef::parse_display(&name).map_err(|e| format!("mailboxes.{name:?}: {e}"))?;
            overrides.mailboxes.insert(root, limit);
        }
        for (tenant, limit) in file.tenants {
            validate_tenant(&tenant).map_err(|e| format!("tenants.{tenant:?}: {e}"))?;
            overrides.tenants.insert(tenant, limit);
        }
        Ok(overrides)
    }
}

/// The on-disk form: `{"mailboxes": {"user/john@example.org": 1048576},
/// "tenants": {"example.org": null}}` — `null` is an explicit "unlimited".
#[derive(Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LimitsFile {
    #[serde(default)]
    mailboxes: BTreeMap<String, Limit>,
    #[serde(default)]
    tenants: BTreeMap<String, Limit>,
}

fn load_overrides(state_dir: &Path) -> Result<Overrides, String> {
    let path = state_dir.join(LIMITS_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Overrides::default()),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    let file: LimitsFile = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a valid limits file: {e}", path.display()))?;
    Overrides::from_file(file).map_err(|e| format!("{}: {e}", path.display()))
}

/// Replaces the limits file atomically: a crash leaves the old or the new
/// file, never a torn one.
fn save_overrides(state_dir: &Path, overrides: &Overrides) -> Result<(), String> {
    let path = state_dir.join(LIMITS_FILE);
    let temporary = state_dir.join(format!("{LIMITS_FILE}.tmp.{}", std::process::id()));
    let mut text = serde_json::to_string_pretty(&overrides.to_file())
        .map_err(|e| format!("{}: cannot encode: {e}", path.display()))?;
    text.push('\n');
    let written = write_durably(state_dir, &temporary, &path, text.as_bytes());
    if written.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    written.map_err(|e| format!("{}: cannot save: {e}", path.display()))
}

fn write_durably(dir: &Path, temporary: &Path, target: &Path, bytes: &[u8]) -> io::Result<()> {
    // The daemon runs with umask 0: explicit modes, so nobody but root can
    // change the limits the next start will load.
    std::os::unix::fs::DirBuilderExt::mode(fs::DirBuilder::new().recursive(true), 0o755)
        .create(dir)?;
    let mut file = std::os::unix::fs::OpenOptionsExt::mode(
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true),
        0o644,
    )
    .open(temporary)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(temporary, target)?;
    // The rename itself is only durable once the directory is synced.
    File::open(dir)?.sync_all()
}

fn describe_override(limit: Option<Limit>) -> String {
    match limit {
        Some(Some(bytes)) => format!("set to {bytes} bytes"),
        Some(None) => "set to unlimited".to_string(),
        None => "override removed".to_string(),
    }
}

/// A transfer under way (see `Ledger::begin_transfer`); must be ended.
#[must_use = "a transfer must be ended with Ledger::end_transfer"]
pub struct Transfer {
    charges: Vec<(FolderId, u64)>,
    credits: Vec<(FolderId, u64)>,
}

// ---------------------------------------------------------------------------
// Accounts
// ---------------------------------------------------------------------------

struct Account {
    scope: Scope,
    tenant: Option<String>,
    used: u64,
    /// Bytes already taken off `used` by a transfer still under way: not
    /// reported, but counted against the limit until the transfer is done.
    held: u64,
    /// Cached effective limit; refreshed whenever limits change.
    limit: Limit,
    /// Whether the warn_percent crossing has been logged (re-armed below it).
    warned: bool,
}

impl Account {
    fn quota(&self) -> Option<(u64, u64)> {
        self.limit.map(|limit| (limit, self.used))
    }

    fn is_reportable(&self) -> bool {
        self.used > 0 || self.limit.is_some()
    }

    /// Logs once per upward crossing of the warning threshold.
    fn update_warning(&mut self, warn_percent: u8) {
        let above = match self.limit {
            // 0 disables warnings.
            Some(limit) if warn_percent > 0 => at_or_above_percent(self.used, limit, warn_percent),
            _ => false,
        };
        if above && !self.warned {
            let limit = self.limit.unwrap_or(0);
            log::warn!(
                "{} at {}% of limit {limit} (used {})",
                self.scope,
                whole_percent(self.used, limit),
                self.used
            );
        }
        self.warned = above;
    }
}

fn at_or_above_percent(used: u64, limit: u64, percent: u8) -> bool {
    if limit == 0 {
        return used > 0;
    }
    used as u128 * 100 >= percent as u128 * limit as u128
}

fn whole_percent(used: u64, limit: u64) -> u128 {
    if limit == 0 {
        return 100;
    }
    used as u128 * 100 / limit as u128
}

/// Accounts in a vector (folders refer to them by index) plus a name index.
struct Accounts<K> {
    list: Vec<Account>,
    index: HashMap<K, usize>,
}

impl<K: Eq + Hash> Accounts<K> {
    fn new() -> Self {
        Accounts {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn get<Q>(&self, key: &Q) -> Option<&Account>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.index.get(key).map(|&i| &self.list[i])
    }

    fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> Account) -> usize {
        let list = &mut self.list;
        *self.index.entry(key).or_insert_with(|| {
            list.push(make());
            list.len() - 1
        })
    }
}

// ---------------------------------------------------------------------------
// State behind the lock
// ---------------------------------------------------------------------------

struct Folder {
    name: FolderRef,
    usage: u64,
    /// This folder's share of its accounts' `held`.
    held: u64,
    /// Index into `State::mailboxes`: this folder's quota root.
    mailbox: usize,
    /// Index into `State::tenants`.
    tenant: Option<usize>,
    partition: Option<String>,
}

struct State {
    /// Indexed by `FolderId`.
    folders: Vec<Folder>,
    mailboxes: Accounts<FolderRef>,
    tenants: Accounts<String>,
    rules: LimitRules,
}

impl State {
    fn new(rules: LimitRules) -> State {
        State {
            folders: Vec::new(),
            mailboxes: Accounts::new(),
            tenants: Accounts::new(),
            rules,
        }
    }

    fn add_folder(&mut self, name: FolderRef) -> FolderId {
        let (mailbox, tenant) = self.accounts_of(&name);
        let id = FolderId(u32::try_from(self.folders.len()).expect("fewer than 2^32 folders"));
        self.folders.push(Folder {
            name,
            usage: 0,
            held: 0,
            mailbox,
            tenant,
            partition: None,
        });
        id
    }

    /// The (mailbox, tenant) account indexes a folder charges to.
    fn accounts_of(&mut self, folder: &FolderRef) -> (usize, Option<usize>) {
        let root = self.rules.quota_root(folder);
        let mailbox = self.mailbox_account(root);
        let tenant = folder.tenant.clone().map(|t| self.tenant_account(t));
        (mailbox, tenant)
    }

    fn mailbox_account(&mut self, root: FolderRef) -> usize {
        let rules = &self.rules;
        self.mailboxes.get_or_insert(root.clone(), || Account {
            scope: Scope::Mailbox(root.display()),
            tenant: root.tenant.clone(),
            used: 0,
            held: 0,
            limit: rules.mailbox_limit(&root),
            warned: false,
        })
    }

    fn tenant_account(&mut self, tenant: String) -> usize {
        let rules = &self.rules;
        self.tenants.get_or_insert(tenant.clone(), || Account {
            scope: Scope::Tenant(tenant.clone()),
            tenant: Some(tenant.clone()),
            used: 0,
            held: 0,
            limit: rules.tenant_limit(&tenant),
            warned: false,
        })
    }

    fn account(&self, scope: &Scope) -> Option<&Account> {
        match scope {
            Scope::Tenant(tenant) => self.tenants.get(tenant.as_str()),
            Scope::Mailbox(name) => {
                let root = FolderRef::parse_display(name).ok()?;
                self.mailboxes.get(&root)
            }
        }
    }

    /// Refuses if `charges` minus `credits` would take any touched account
    /// past its limit plus `grace`. Only accounts that grow are checked.
    /// Mailboxes are checked first: the more specific refusal is the more
    /// useful one to an operator.
    fn check(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
        grace: u64,
    ) -> Result<(), Refusal> {
        let additions = self.net_additions(charges, credits);
        for &(i, asked) in &additions.mailboxes {
            check_account(&self.mailboxes.list[i], asked, grace)?;
        }
        for &(i, asked) in &additions.tenants {
            check_account(&self.tenants.list[i], asked, grace).map_err(|mut r| {
                // Name the mailbox the bytes were for: operators ask "who".
                r.mailbox = charges
                    .iter()
                    .map(|(id, _)| &self.folders[id.0 as usize])
                    .find(|f| f.tenant == Some(i))
                    .map(|f| scope_name(&self.mailboxes.list[f.mailbox].scope));
                r
            })?;
        }
        Ok(())
    }

    /// Net growth of every account the charges touch, as (index, bytes),
    /// only where positive.
    fn net_additions(&self, charges: &[(FolderId, u64)], credits: &[(FolderId, u64)]) -> Additions {
        let mut mailboxes: Vec<(usize, i128)> = Vec::new();
        let mut tenants: Vec<(usize, i128)> = Vec::new();
        let mut add = |id: FolderId, bytes: i128, only_existing: bool| {
            let folder = &self.folders[id.0 as usize];
            accumulate_net(&mut mailboxes, folder.mailbox, bytes, only_existing);
            if let Some(tenant) = folder.tenant {
                accumulate_net(&mut tenants, tenant, bytes, only_existing);
            }
        };
        for &(id, bytes) in charges {
            add(id, bytes as i128, false);
        }
        for &(id, bytes) in credits {
            add(id, -(bytes as i128), true);
        }
        let positive = |v: Vec<(usize, i128)>| {
            v.into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(i, n)| (i, u64::try_from(n).unwrap_or(u64::MAX)))
                .collect()
        };
        Additions {
            mailboxes: positive(mailboxes),
            tenants: positive(tenants),
        }
    }

    fn charge(&mut self, charges: &[FolderId], bytes: u64, warn_percent: u8) {
        for id in charges {
            let folder = &mut self.folders[id.0 as usize];
            folder.usage = folder.usage.saturating_add(bytes);
            let (mailbox, tenant) = (folder.mailbox, folder.tenant);
            self.adjust_accounts(
                mailbox,
                tenant,
                |used| used.saturating_add(bytes),
                warn_percent,
            );
        }
    }

    fn refund(&mut self, charges: &[FolderId], bytes: u64, warn_percent: u8) {
        for id in charges {
            let folder = &mut self.folders[id.0 as usize];
            let taken = bytes.min(folder.usage);
            if taken < bytes {
                log::warn!(
                    "refund of {bytes} bytes to {} exceeds its usage {}; clamped at 0",
                    folder.name.display(),
                    folder.usage
                );
            }
            folder.usage -= taken;
            let (mailbox, tenant) = (folder.mailbox, folder.tenant);
            // Accounts lose exactly what the folder lost, so they stay sums.
            self.adjust_accounts(
                mailbox,
                tenant,
                |used| used.saturating_sub(taken),
                warn_percent,
            );
        }
    }

    /// Takes `bytes` off a folder's usage but keeps them held against its
    /// accounts' limits (see `Ledger::begin_transfer`). Returns what was
    /// taken (never more than the folder's usage).
    fn credit_held(&mut self, id: FolderId, bytes: u64, warn_percent: u8) -> u64 {
        let taken = bytes.min(self.folders[id.0 as usize].usage);
        self.refund(&[id], taken, warn_percent);
        self.adjust_held(id, |h| h + taken);
        taken
    }

    fn release_held(&mut self, id: FolderId, bytes: u64) {
        self.adjust_held(id, |h| h.saturating_sub(bytes));
    }

    fn adjust_held(&mut self, id: FolderId, adjust: impl Fn(u64) -> u64) {
        let folder = &mut self.folders[id.0 as usize];
        folder.held = adjust(folder.held);
        let (mailbox, tenant) = (folder.mailbox, folder.tenant);
        let tenant = tenant.map(|t| &mut self.tenants.list[t]);
        for account in std::iter::once(&mut self.mailboxes.list[mailbox]).chain(tenant) {
            account.held = adjust(account.held);
        }
    }

    fn adjust_accounts(
        &mut self,
        mailbox: usize,
        tenant: Option<usize>,
        adjust: impl Fn(u64) -> u64,
        warn_percent: u8,
    ) {
        let tenant = tenant.map(|t| &mut self.tenants.list[t]);
        for account in std::iter::once(&mut self.mailboxes.list[mailbox]).chain(tenant) {
            account.used = adjust(account.used);
            account.update_warning(warn_percent);
        }
    }

    /// Recreates every account from the rules and the folders' usage:
    /// after a limit change, roots may have moved and limits changed.
    fn rebuild_accounts(&mut self, warn_percent: u8) {
        let warned = self.warned_scopes();
        self.mailboxes = Accounts::new();
        self.tenants = Accounts::new();
        for root in self.rules.named_mailboxes() {
            if let Some(tenant) = root.tenant.clone() {
                self.tenant_account(tenant);
            }
            self.mailbox_account(root);
        }
        for tenant in self.rules.named_tenants() {
            self.tenant_account(tenant);
        }
        for i in 0..self.folders.len() {
            self.reattach_folder(i);
        }
        self.restore_warnings(&warned, warn_percent);
    }

    fn reattach_folder(&mut self, index: usize) {
        let name = self.folders[index].name.clone();
        let (mailbox, tenant) = self.accounts_of(&name);
        let folder = &mut self.folders[index];
        folder.mailbox = mailbox;
        folder.tenant = tenant;
        let (usage, held) = (folder.usage, folder.held);
        self.mailboxes.list[mailbox].used += usage;
        self.mailboxes.list[mailbox].held += held;
        if let Some(tenant) = tenant {
            self.tenants.list[tenant].used += usage;
            self.tenants.list[tenant].held += held;
        }
    }

    fn warned_scopes(&self) -> Vec<Scope> {
        let accounts = self.mailboxes.list.iter().chain(&self.tenants.list);
        accounts
            .filter(|a| a.warned)
            .map(|a| a.scope.clone())
            .collect()
    }

    /// Keeps "already warned" across a rebuild, then re-evaluates: a lowered
    /// limit is a crossing worth logging, a raised one re-arms the warning.
    fn restore_warnings(&mut self, warned: &[Scope], warn_percent: u8) {
        let accounts = self.mailboxes.list.iter_mut().chain(&mut self.tenants.list);
        for account in accounts {
            account.warned = warned.contains(&account.scope);
            account.update_warning(warn_percent);
        }
    }

    fn reset_usage(&mut self) {
        for folder in &mut self.folders {
            folder.usage = 0;
        }
        let accounts = self.mailboxes.list.iter_mut().chain(&mut self.tenants.list);
        for account in accounts {
            account.used = 0;
            account.warned = false;
        }
    }

    fn report(&self) -> Report {
        let mut tenants: Vec<TenantUsage> = reportable(&self.tenants.list)
            .map(|(_, account)| TenantUsage {
                name: scope_name(&account.scope),
                used: account.used,
                limit: account.limit,
            })
            .collect();
        let partitions = self.partitions_by_mailbox();
        let mut mailboxes: Vec<MailboxUsage> = reportable(&self.mailboxes.list)
            .map(|(i, account)| MailboxUsage {
                name: scope_name(&account.scope),
                tenant: account.tenant.clone(),
                used: account.used,
                limit: account.limit,
                partition: partitions.get(&i).map(|set| join(set)),
            })
            .collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        mailboxes.sort_by(|a, b| a.name.cmp(&b.name));
        Report { tenants, mailboxes }
    }

    /// Distinct partitions of each mailbox account's folders.
    fn partitions_by_mailbox(&self) -> HashMap<usize, BTreeSet<&str>> {
        let mut partitions: HashMap<usize, BTreeSet<&str>> = HashMap::new();
        for folder in &self.folders {
            if let Some(partition) = &folder.partition {
                partitions
                    .entry(folder.mailbox)
                    .or_default()
                    .insert(partition);
            }
        }
        partitions
    }
}

/// Total bytes each touched account would gain, as (account index, bytes).
#[derive(Default)]
struct Additions {
    mailboxes: Vec<(usize, u64)>,
    tenants: Vec<(usize, u64)>,
}

fn check_account(account: &Account, asked: u64, grace: u64) -> Result<(), Refusal> {
    let Some(limit) = account.limit else {
        return Ok(());
    };
    let fits = account
        .used
        .checked_add(account.held)
        .and_then(|n| n.checked_add(asked))
        .is_some_and(|total| total <= limit.saturating_add(grace));
    if fits {
        return Ok(());
    }
    Err(Refusal {
        scope: account.scope.clone(),
        tenant: account.tenant.clone(),
        mailbox: None,
        limit,
        grace,
        used: account.used,
        asked,
    })
}

/// Credits only offset accounts the charges touch (`only_existing`).
fn accumulate_net(
    totals: &mut Vec<(usize, i128)>,
    account: usize,
    bytes: i128,
    only_existing: bool,
) {
    // A handful of accounts at most: a linear scan beats a map here.
    match totals.iter_mut().find(|(i, _)| *i == account) {
        Some((_, total)) => *total += bytes,
        None if !only_existing => totals.push((account, bytes)),
        None => {}
    }
}

fn reportable(accounts: &[Account]) -> impl Iterator<Item = (usize, &Account)> {
    accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_reportable())
}

fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Mailbox(name) | Scope::Tenant(name) => name.clone(),
    }
}

fn join(partitions: &BTreeSet<&str>) -> String {
    partitions.iter().copied().collect::<Vec<_>>().join(",")
}

// ---------------------------------------------------------------------------
// Human-readable report
// ---------------------------------------------------------------------------

impl Report {
    /// Two aligned tables (tenants, then mailboxes): name, used, limit,
    /// percent, partition.
    pub fn to_table(&self) -> String {
        let tenants = self
            .tenants
            .iter()
            .map(|t| row(&t.name, t.used, t.limit, None));
        let mailboxes = self
            .mailboxes
            .iter()
            .map(|m| row(&m.name, m.used, m.limit, m.partition.as_deref()));
        let mut out = render_table("TENANT", tenants.collect());
        out.push('\n');
        out.push_str(&render_table("MAILBOX", mailboxes.collect()));
        out
    }
}

type Row = [String; 5];

fn row(name: &str, used: u64, limit: Option<u64>, partition: Option<&str>) -> Row {
    [
        name.to_string(),
        human_bytes(used),
        limit.map_or_else(|| "none".to_string(), human_bytes),
        percent(used, limit),
        partition.unwrap_or("-").to_string(),
    ]
}

fn render_table(kind: &str, rows: Vec<Row>) -> String {
    let header = [kind, "USED", "LIMIT", "PERCENT", "PARTITION"].map(String::from);
    let all: Vec<&Row> = std::iter::once(&header).chain(&rows).collect();
    let widths: Vec<usize> = (0..5)
        .map(|c| all.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for r in all {
        // Names and partitions read left-aligned, numbers right-aligned.
        let line = format!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:>w3$}  {}",
            r[0],
            r[1],
            r[2],
            r[3],
            r[4],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
        );
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn percent(used: u64, limit: Option<u64>) -> String {
    match limit {
        None => "-".to_string(),
        // Nothing more fits: as full as it gets.
        Some(0) => "100.0%".to_string(),
        Some(limit) => format!("{:.1}%", used as f64 * 100.0 / limit as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ControlConfig, LayoutConfig, MailboxConfig, MountConfig};
    use std::sync::Arc;
    use std::thread;

    const JOHN: &str = "user/john@example.org";
    const JANE: &str = "user/jane@example.org";
    const ARCHIVE: &str = "user/john/Archive@example.org";
    const TENANT: &str = "example.org";

    fn config(state_dir: &Path) -> Config {
        Config {
            source: PathBuf::from("/etc/spoolfs.toml"),
            default_partition: "fast".to_string(),
            partitions: Vec::new(),
            routes: Vec::new(),
            mount: MountConfig {
                threads: 1,
                allow_other: false,
                ttl_secs: 1,
                passthrough: false,
                held_descriptors: None,
            },
            layout: LayoutConfig::None,
            quota: QuotaConfig {
                mailbox_limit: None,
                tenant_limit: None,
                warn_percent: 90,
                metadata_grace: 0,
            },
            tenants: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            control: ControlConfig {
                admin_uids: Vec::new(),
                state_dir: state_dir.to_path_buf(),
            },
        }
    }

    fn folder_ref(display: &str) -> FolderRef {
        FolderRef::parse_display(display).unwrap()
    }

    /// A ledger with the given mailbox and tenant default limits.
    fn new_ledger(dir: &Path, mailbox_limit: Limit, tenant_limit: Limit) -> Ledger {
        let mut config = config(dir);
        config.quota.mailbox_limit = mailbox_limit;
        config.quota.tenant_limit = tenant_limit;
        Ledger::new(&config).unwrap()
    }

    fn mailbox(name: &str) -> Scope {
        Scope::Mailbox(name.to_string())
    }

    fn tenant(name: &str) -> Scope {
        Scope::Tenant(name.to_string())
    }

    fn id(ledger: &Ledger, display: &str) -> FolderId {
        ledger.folder(&folder_ref(display))
    }

    #[test]
    fn reserving_exactly_the_limit_succeeds_one_byte_more_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), None);
        let john = id(&ledger, JOHN);
        ledger.reserve(&[john], 1000, ChargeKind::Data).unwrap();
        let refusal = ledger.reserve(&[john], 1, ChargeKind::Data).unwrap_err();
        assert_eq!(refusal.scope, mailbox(JOHN));
        assert_eq!(refusal.tenant.as_deref(), Some(TENANT));
        assert_eq!(
            (refusal.limit, refusal.used, refusal.asked),
            (1000, 1000, 1)
        );
        assert_eq!(refusal.over_by(), 1);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 1000);
        assert_eq!(ledger.usage(&tenant(TENANT)), 1000);
    }

    #[test]
    fn tenant_limit_refuses_when_the_mailbox_has_room() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), Some(1500));
        let (john, jane) = (id(&ledger, JOHN), id(&ledger, JANE));
        ledger.reserve(&[john], 800, ChargeKind::Data).unwrap();
        let refusal = ledger.reserve(&[jane], 800, ChargeKind::Data).unwrap_err();
        assert_eq!(refusal.scope, tenant(TENANT));
        assert_eq!(
            (refusal.limit, refusal.used, refusal.asked),
            (1500, 800, 800)
        );
        assert_eq!(ledger.usage(&mailbox(JANE)), 0);
    }

    /// Tenant limit 1500 reached: john 600 (limit 1000), jane 900.
    fn full_tenant() -> (tempfile::TempDir, Ledger, FolderId, FolderId) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), Some(1500));
        let (john, jane) = (id(&ledger, JOHN), id(&ledger, JANE));
        ledger.reserve(&[john], 600, ChargeKind::Data).unwrap();
        ledger.reserve(&[jane], 900, ChargeKind::Data).unwrap();
        (dir, ledger, john, jane)
    }

    #[test]
    fn transfers_are_checked_on_net_growth() {
        let (_dir, ledger, john, jane) = full_tenant();
        // The tenant is full, but moving 300 from jane to john does not grow it.
        let t = ledger
            .begin_transfer(&[(john, 300)], &[(jane, 300)], ChargeKind::Data)
            .unwrap();
        ledger.end_transfer(t, true);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 900);
        assert_eq!(ledger.usage(&mailbox(JANE)), 600);
        assert_eq!(ledger.usage(&tenant(TENANT)), 1500);
        // john's own limit still holds: 200 more would take him to 1100.
        let r = ledger
            .begin_transfer(&[(john, 200)], &[(jane, 200)], ChargeKind::Data)
            .err()
            .unwrap();
        assert_eq!((r.scope, r.asked), (mailbox(JOHN), 200));
        assert_eq!(
            ledger.usage(&mailbox(JANE)),
            600,
            "a refusal changes nothing"
        );
        // A replaced file in the target is a credit too: john takes 200,
        // loses 150 → net 50 fits (900 + 50 ≤ 1000).
        let t = ledger
            .begin_transfer(
                &[(john, 200)],
                &[(jane, 200), (john, 150)],
                ChargeKind::Data,
            )
            .unwrap();
        ledger.end_transfer(t, true);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 950);
        // Credits only offset accounts the charges touch.
        let other = id(&ledger, "user/x@other.org");
        let t = ledger
            .begin_transfer(&[(other, 10)], &[(jane, 10)], ChargeKind::Data)
            .unwrap();
        ledger.end_transfer(t, true);
        assert_eq!(ledger.usage(&tenant("other.org")), 10);
    }

    #[test]
    fn a_transfer_under_way_shows_its_outcome_but_holds_the_room() {
        let (_dir, ledger, john, jane) = full_tenant();
        let t = ledger
            .begin_transfer(&[(john, 300)], &[(jane, 300)], ChargeKind::Data)
            .unwrap();
        // Reports show the outcome: the tenant never looks over its limit.
        assert_eq!(ledger.usage(&mailbox(JOHN)), 900);
        assert_eq!(ledger.usage(&mailbox(JANE)), 600);
        assert_eq!(ledger.usage(&tenant(TENANT)), 1500);
        // But jane's 300 are not free until the rename is done.
        let r = ledger.reserve(&[jane], 1, ChargeKind::Data).unwrap_err();
        assert_eq!(r.scope, tenant(TENANT));
        // The rename failed: everything is as before.
        ledger.end_transfer(t, false);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 600);
        assert_eq!(ledger.usage(&mailbox(JANE)), 900);
        assert!(
            ledger.reserve(&[jane], 1, ChargeKind::Data).is_err(),
            "tenant full"
        );
        ledger.refund(&[john], 100);
        ledger.reserve(&[jane], 100, ChargeKind::Data).unwrap();
        assert_eq!(ledger.usage(&mailbox(JANE)), 1000);
    }

    #[test]
    fn tenant_refusal_names_the_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, Some(100));
        let jane = id(&ledger, JANE);
        let r = ledger.reserve(&[jane], 101, ChargeKind::Data).unwrap_err();
        assert_eq!(r.scope, tenant(TENANT));
        assert_eq!(r.mailbox.as_deref(), Some(JANE));
        assert!(
            r.to_string()
                .starts_with("tenant example.org (mailbox user/jane@example.org) limit 100"),
            "{r}"
        );
    }

    #[test]
    fn mailbox_refusal_is_reported_before_tenant_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), Some(1000));
        let john = id(&ledger, JOHN);
        let refusal = ledger.reserve(&[john], 2000, ChargeKind::Data).unwrap_err();
        assert_eq!(refusal.scope, mailbox(JOHN));
    }

    #[test]
    fn metadata_may_use_the_grace_message_data_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.quota.mailbox_limit = Some(1000);
        config.quota.metadata_grace = 100;
        let ledger = Ledger::new(&config).unwrap();
        let john = id(&ledger, JOHN);
        ledger.reserve(&[john], 1000, ChargeKind::Data).unwrap();
        assert!(ledger.reserve(&[john], 1, ChargeKind::Data).is_err());
        ledger.reserve(&[john], 100, ChargeKind::Metadata).unwrap();
        let refusal = ledger
            .reserve(&[john], 1, ChargeKind::Metadata)
            .unwrap_err();
        assert_eq!(
            (refusal.limit, refusal.grace, refusal.over_by()),
            (1000, 100, 1)
        );
        assert_eq!(ledger.usage(&mailbox(JOHN)), 1100);
    }

    #[test]
    fn each_occurrence_of_a_folder_is_charged() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(350), None);
        let john = id(&ledger, JOHN);
        ledger
            .reserve(&[john, john], 100, ChargeKind::Data)
            .unwrap();
        assert_eq!(ledger.usage(&mailbox(JOHN)), 200);
        let refusal = ledger
            .reserve(&[john, john], 100, ChargeKind::Data)
            .unwrap_err();
        assert_eq!(refusal.asked, 200);
        assert_eq!(ledger.usage(&tenant(TENANT)), 200);
    }

    #[test]
    fn a_refusal_in_one_account_charges_no_account() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), None);
        let (john, jane) = (id(&ledger, JOHN), id(&ledger, JANE));
        ledger.charge_unchecked(&[john], 950);
        let refusal = ledger
            .reserve(&[jane, john], 100, ChargeKind::Data)
            .unwrap_err();
        assert_eq!(refusal.scope, mailbox(JOHN));
        assert_eq!(ledger.usage(&mailbox(JANE)), 0);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 950);
        assert_eq!(ledger.usage(&tenant(TENANT)), 950);
    }

    #[test]
    fn zero_bytes_are_never_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(0), None);
        let john = id(&ledger, JOHN);
        ledger.reserve(&[john], 0, ChargeKind::Data).unwrap();
        assert!(ledger.reserve(&[john], 1, ChargeKind::Data).is_err());
    }

    #[test]
    fn refunds_lower_usage_and_never_go_below_zero() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        let (john, jane) = (id(&ledger, JOHN), id(&ledger, JANE));
        ledger.charge_unchecked(&[john], 500);
        ledger.charge_unchecked(&[jane], 70);
        ledger.refund(&[john], 200);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 300);
        ledger.refund(&[john], 1000);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 0);
        // Only what the folder actually had leaves the tenant.
        assert_eq!(ledger.usage(&tenant(TENANT)), 70);
    }

    #[test]
    fn configured_limit_on_a_subfolder_makes_it_its_own_account() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.quota.mailbox_limit = Some(10_000);
        config
            .mailboxes
            .insert(ARCHIVE.to_string(), MailboxConfig { limit: Some(500) });
        let ledger = Ledger::new(&config).unwrap();
        let archive = id(&ledger, ARCHIVE);
        let nested = id(&ledger, "user/john/Archive/2023@example.org");
        let sent = id(&ledger, "user/john/Sent@example.org");
        ledger
            .reserve(&[archive, nested], 200, ChargeKind::Data)
            .unwrap();
        ledger.reserve(&[sent], 700, ChargeKind::Data).unwrap();
        assert_eq!(ledger.usage(&mailbox(ARCHIVE)), 400);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 700);
        assert_eq!(ledger.usage(&tenant(TENANT)), 1100);
        let refusal = ledger
            .reserve(&[nested], 101, ChargeKind::Data)
            .unwrap_err();
        assert_eq!(refusal.scope, mailbox(ARCHIVE));
        assert_eq!(ledger.effective_limit(&mailbox(JOHN)), Some(10_000));
    }

    #[test]
    fn run_time_limit_on_a_subfolder_moves_its_usage_and_back() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        let inbox = id(&ledger, JOHN);
        let nested = id(&ledger, "user/john/Archive/2023@example.org");
        ledger.charge_unchecked(&[inbox], 100);
        ledger.charge_unchecked(&[nested], 300);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 400);

        ledger
            .set_limit(&mailbox(ARCHIVE), Some(Some(350)))
            .unwrap();
        assert_eq!(ledger.usage(&mailbox(ARCHIVE)), 300);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 100);
        assert!(ledger.reserve(&[nested], 51, ChargeKind::Data).is_err());
        ledger
            .reserve(&[inbox], 1_000_000, ChargeKind::Data)
            .unwrap();

        ledger.set_limit(&mailbox(ARCHIVE), None).unwrap();
        assert_eq!(ledger.usage(&mailbox(ARCHIVE)), 0);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 1_000_400);
        let names: Vec<String> = ledger
            .report()
            .mailboxes
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert_eq!(names, vec![JOHN.to_string()]);
    }

    #[test]
    fn explicit_unlimited_override_still_makes_a_root() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(100), None);
        let nested = id(&ledger, ARCHIVE);
        ledger.set_limit(&mailbox(ARCHIVE), Some(None)).unwrap();
        ledger.reserve(&[nested], 1000, ChargeKind::Data).unwrap();
        assert_eq!(ledger.effective_limit(&mailbox(ARCHIVE)), None);
        assert_eq!(ledger.usage(&mailbox(JOHN)), 0);
    }

    #[test]
    fn tenant_mailbox_limit_is_the_default_for_its_mailboxes() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config.quota.mailbox_limit = Some(1000);
        let small = TenantConfig {
            limit: None,
            mailbox_limit: Some(Some(100)),
        };
        let unlimited = TenantConfig {
            limit: Some(None),
            mailbox_limit: Some(None),
        };
        config.tenants.insert(TENANT.to_string(), small);
        config.tenants.insert("free.org".to_string(), unlimited);
        let ledger = Ledger::new(&config).unwrap();
        assert_eq!(ledger.effective_limit(&mailbox(JOHN)), Some(100));
        assert_eq!(
            ledger.effective_limit(&mailbox("user/bob@other.org")),
            Some(1000)
        );
        assert_eq!(ledger.effective_limit(&mailbox("user/bob@free.org")), None);
        let john = id(&ledger, JOHN);
        assert!(ledger.reserve(&[john], 101, ChargeKind::Data).is_err());
    }

    #[test]
    fn run_time_override_beats_config() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        config
            .mailboxes
            .insert(JOHN.to_string(), MailboxConfig { limit: Some(500) });
        let limited = TenantConfig {
            limit: Some(Some(5000)),
            mailbox_limit: None,
        };
        config.tenants.insert(TENANT.to_string(), limited);
        let ledger = Ledger::new(&config).unwrap();
        ledger.set_limit(&mailbox(JOHN), Some(Some(50))).unwrap();
        ledger.set_limit(&tenant(TENANT), Some(None)).unwrap();
        assert_eq!(ledger.effective_limit(&mailbox(JOHN)), Some(50));
        assert_eq!(ledger.effective_limit(&tenant(TENANT)), None);
        ledger.set_limit(&tenant(TENANT), None).unwrap();
        assert_eq!(ledger.effective_limit(&tenant(TENANT)), Some(5000));
    }

    #[test]
    fn run_time_limits_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path());
        let first = Ledger::new(&config).unwrap();
        first.set_limit(&mailbox(JOHN), Some(Some(123))).unwrap();
        first.set_limit(&tenant(TENANT), Some(None)).unwrap();
        first
            .set_limit(&tenant("other.org"), Some(Some(7)))
            .unwrap();
        drop(first);

        let second = Ledger::new(&config).unwrap();
        assert_eq!(second.effective_limit(&mailbox(JOHN)), Some(123));
        assert_eq!(second.effective_limit(&tenant("other.org")), Some(7));
        second.set_limit(&mailbox(JOHN), None).unwrap();

        let third = Ledger::new(&config).unwrap();
        assert_eq!(third.effective_limit(&mailbox(JOHN)), None);
        assert_eq!(third.effective_limit(&tenant("other.org")), Some(7));
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only limits.json, no temporary file");
    }

    #[test]
    fn explicit_unlimited_is_persisted_as_null() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, Some(10));
        ledger.set_limit(&tenant(TENANT), Some(None)).unwrap();
        let text = fs::read_to_string(dir.path().join(LIMITS_FILE)).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(json["tenants"][TENANT], serde_json::Value::Null);
        let restarted = new_ledger(dir.path(), None, Some(10));
        assert_eq!(restarted.effective_limit(&tenant(TENANT)), None);
    }

    #[test]
    fn a_corrupt_limits_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LIMITS_FILE);
        fs::write(&path, "{ not json").unwrap();
        let error = Ledger::new(&config(dir.path())).err().unwrap();
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn a_bad_mailbox_name_in_the_limits_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LIMITS_FILE);
        fs::write(&path, r#"{"mailboxes": {"": 5}, "tenants": {}}"#).unwrap();
        let error = Ledger::new(&config(dir.path())).err().unwrap();
        assert!(error.contains(&path.display().to_string()), "{error}");
    }

    #[test]
    fn invalid_names_are_rejected_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        assert!(ledger.set_limit(&tenant(""), Some(Some(1))).is_err());
        assert!(ledger.set_limit(&mailbox(""), Some(Some(1))).is_err());
        assert!(!dir.path().join(LIMITS_FILE).exists());
    }

    #[test]
    fn concurrent_reservations_never_overshoot() {
        const LIMIT: u64 = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let ledger = Arc::new(new_ledger(dir.path(), None, Some(LIMIT)));
        let workers: Vec<_> = (0..8u64)
            .map(|worker| {
                let ledger = Arc::clone(&ledger);
                thread::spawn(move || reserve_randomly(&ledger, worker))
            })
            .collect();
        let granted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let used = ledger.usage(&tenant(TENANT));
        assert!(used <= LIMIT);
        assert_eq!(used, granted);
        let by_mailbox: u64 = ledger.report().mailboxes.iter().map(|m| m.used).sum();
        assert_eq!(by_mailbox, granted);
    }

    /// Reserves random sizes in random mailboxes of one tenant, refunding
    /// some at once so the limit stays contested; returns the bytes kept.
    fn reserve_randomly(ledger: &Ledger, worker: u64) -> u64 {
        let mut random = XorShift(0x9E37_79B9_7F4A_7C15 ^ (worker + 1));
        let mut kept = 0;
        for _ in 0..5_000 {
            let name = format!("user/u{}@{TENANT}", random.next() % 16);
            let folder = ledger.folder(&folder_ref(&name));
            let bytes = random.next() % 4096;
            if ledger.reserve(&[folder], bytes, ChargeKind::Data).is_err() {
                continue;
            }
            if random.next().is_multiple_of(2) {
                ledger.refund(&[folder], bytes);
            } else {
                kept += bytes;
            }
        }
        kept
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn interning_is_stable_and_reversible() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        let first = id(&ledger, ARCHIVE);
        assert_eq!(id(&ledger, ARCHIVE), first);
        assert_ne!(id(&ledger, JOHN), first);
        assert_eq!(ledger.folder_ref(first), folder_ref(ARCHIVE));
    }

    #[test]
    fn statfs_shows_the_tighter_of_mailbox_and_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(1000), Some(1500));
        let (john, jane) = (id(&ledger, JOHN), id(&ledger, JANE));
        ledger.charge_unchecked(&[john], 100);
        assert_eq!(ledger.statfs_quota(john), Some((1000, 100)));
        ledger.charge_unchecked(&[jane], 1000);
        // Mailbox has 900 left, tenant only 400.
        assert_eq!(ledger.statfs_quota(john), Some((1500, 1100)));
        assert_eq!(ledger.tenant_quota(TENANT), Some((1500, 1100)));
        let free = new_ledger(dir.path(), None, None);
        assert_eq!(free.statfs_quota(id(&free, JOHN)), None);
        assert_eq!(free.tenant_quota(TENANT), None);
    }

    #[test]
    fn report_json_has_exactly_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, Some(5000));
        let john = id(&ledger, JOHN);
        ledger.set_partition(john, "fast");
        ledger.charge_unchecked(&[john], 42);
        ledger.set_limit(&mailbox(JANE), Some(Some(1024))).unwrap();
        let json = serde_json::to_string(&ledger.report()).unwrap();
        let expected = concat!(
            r#"{"tenants":[{"name":"example.org","used":42,"limit":5000}],"#,
            r#""mailboxes":["#,
            r#"{"name":"user/jane@example.org","tenant":"example.org","used":0,"limit":1024,"partition":null},"#,
            r#"{"name":"user/john@example.org","tenant":"example.org","used":42,"limit":null,"partition":"fast"}"#,
            r#"]}"#
        );
        assert_eq!(json, expected);
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ledger.report());
    }

    #[test]
    fn report_leaves_out_unlimited_unused_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        id(&ledger, JOHN);
        let report = ledger.report();
        assert!(report.tenants.is_empty() && report.mailboxes.is_empty());
    }

    #[test]
    fn report_lists_every_partition_of_a_mailbox() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), None, None);
        let (inbox, archive) = (id(&ledger, JOHN), id(&ledger, ARCHIVE));
        ledger.set_partition(inbox, "fast");
        ledger.set_partition(archive, "slow");
        ledger.charge_unchecked(&[inbox], 1);
        let partition = ledger.report().mailboxes[0].partition.clone();
        assert_eq!(partition.as_deref(), Some("fast,slow"));
    }

    #[test]
    fn table_shows_human_sizes_and_percentages() {
        let report = Report {
            tenants: vec![TenantUsage {
                name: TENANT.into(),
                used: 1536,
                limit: None,
            }],
            mailboxes: vec![MailboxUsage {
                name: JOHN.into(),
                tenant: Some(TENANT.into()),
                used: 512 * 1024 * 1024,
                limit: Some(1024 * 1024 * 1024),
                partition: Some("fast".into()),
            }],
        };
        let table = report.to_table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("TENANT") && lines[0].ends_with("PARTITION"));
        assert!(lines[1].contains("1.5 KiB") && lines[1].contains("none"));
        let john = lines.iter().find(|l| l.starts_with(JOHN)).unwrap();
        for part in ["512.0 MiB", "1.0 GiB", "50.0%", "fast"] {
            assert!(john.contains(part), "{john}");
        }
    }

    #[test]
    fn refusal_reads_as_one_operator_line() {
        let refusal = Refusal {
            scope: mailbox(JOHN),
            tenant: Some(TENANT.into()),
            mailbox: None,
            limit: 1_048_576,
            grace: 0,
            used: 1_048_000,
            asked: 4096,
        };
        assert_eq!(
            refusal.to_string(),
            "mailbox user/john@example.org (tenant example.org) limit 1048576 \
             used 1048000 asked 4096 over by 3520"
        );
    }

    #[test]
    fn warning_fires_once_per_upward_crossing() {
        let mut account = Account {
            scope: mailbox(JOHN),
            tenant: None,
            used: 89,
            held: 0,
            limit: Some(100),
            warned: false,
        };
        account.update_warning(90);
        assert!(!account.warned);
        account.used = 90;
        account.update_warning(90);
        assert!(account.warned);
        account.used = 10;
        account.update_warning(90);
        assert!(!account.warned, "re-armed below the threshold");
    }

    #[test]
    fn reset_usage_zeroes_everything() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = new_ledger(dir.path(), Some(100), None);
        let john = id(&ledger, JOHN);
        ledger.charge_unchecked(&[john], 100);
        ledger.reset_usage();
        assert_eq!(ledger.usage(&mailbox(JOHN)), 0);
        assert_eq!(ledger.usage(&tenant(TENANT)), 0);
        ledger.reserve(&[john], 100, ChargeKind::Data).unwrap();
    }

    #[test]
    fn ledger_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ledger>();
    }
}
