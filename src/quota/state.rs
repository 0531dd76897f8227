//! Accounts and the state behind the ledger's lock.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use super::report::{by_partition, percent_value};
use super::rules::LimitRules;
use super::shares::Shares;
use super::{FolderId, MailboxUsage, Refusal, Report, Scope, TenantUsage};
use crate::config::Limit;
use crate::layout::FolderRef;

pub(super) struct Account {
    pub(super) scope: Scope,
    pub(super) tenant: Option<String>,
    pub(super) used: u64,
    /// Bytes already taken off `used` by a transfer still under way: not
    /// reported, but counted against the limit until the transfer is done.
    pub(super) held: u64,
    /// Cached effective limit; refreshed whenever limits change.
    pub(super) limit: Limit,
    /// Whether the warn_percent crossing has been logged (re-armed below it).
    pub(super) warned: bool,
}

impl Account {
    pub(super) fn quota(&self) -> Option<(u64, u64)> {
        self.limit.map(|limit| (limit, self.used))
    }

    pub(super) fn is_reportable(&self) -> bool {
        self.used > 0 || self.limit.is_some()
    }

    /// Logs once per upward crossing of the warning threshold.
    pub(super) fn update_warning(&mut self, warn_percent: u8) {
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

pub(super) fn at_or_above_percent(used: u64, limit: u64, percent: u8) -> bool {
    if limit == 0 {
        return used > 0;
    }
    used as u128 * 100 >= percent as u128 * limit as u128
}

pub(super) fn whole_percent(used: u64, limit: u64) -> u128 {
    if limit == 0 {
        return 100;
    }
    used as u128 * 100 / limit as u128
}

/// Accounts in a vector (folders refer to them by index) plus a name index.
pub(super) struct Accounts<K> {
    pub(super) list: Vec<Account>,
    pub(super) index: HashMap<K, usize>,
}

impl<K: Eq + Hash> Accounts<K> {
    pub(super) fn new() -> Self {
        Accounts {
            list: Vec::new(),
            index: HashMap::new(),
        }
    }

    pub(super) fn get<Q>(&self, key: &Q) -> Option<&Account>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        self.index.get(key).map(|&i| &self.list[i])
    }

    pub(super) fn get_or_insert(&mut self, key: K, make: impl FnOnce() -> Account) -> usize {
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

/// Bytes a transfer holds at one folder, against its mailbox account and
/// against its tenant account (see `State::holds_for`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Held {
    pub(super) mailbox: u64,
    pub(super) tenant: u64,
}

pub(super) struct Folder {
    pub(super) name: FolderRef,
    pub(super) usage: u64,
    /// This folder's share of its accounts' `held`.
    pub(super) held: Held,
    /// Index into `State::mailboxes`: this folder's quota root.
    pub(super) mailbox: usize,
    /// Index into `State::tenants`.
    pub(super) tenant: Option<usize>,
    pub(super) partition: Option<String>,
}

pub(super) struct State {
    /// Indexed by `FolderId`.
    pub(super) folders: Vec<Folder>,
    pub(super) mailboxes: Accounts<FolderRef>,
    pub(super) tenants: Accounts<String>,
    pub(super) rules: LimitRules,
    /// Cluster mode: this host's shares of tenant limits.
    pub(super) shares: Option<Shares>,
}

impl State {
    pub(super) fn new(rules: LimitRules) -> State {
        State {
            folders: Vec::new(),
            mailboxes: Accounts::new(),
            tenants: Accounts::new(),
            rules,
            shares: None,
        }
    }

    pub(super) fn add_folder(&mut self, name: FolderRef) -> FolderId {
        let (mailbox, tenant) = self.accounts_of(&name);
        let id = FolderId(u32::try_from(self.folders.len()).expect("fewer than 2^32 folders"));
        self.folders.push(Folder {
            name,
            usage: 0,
            held: Held::default(),
            mailbox,
            tenant,
            partition: None,
        });
        id
    }

    /// The (mailbox, tenant) account indexes a folder charges to.
    pub(super) fn accounts_of(&mut self, folder: &FolderRef) -> (usize, Option<usize>) {
        let root = self.rules.quota_root(folder);
        let mailbox = self.mailbox_account(root);
        let tenant = folder.tenant.clone().map(|t| self.tenant_account(t));
        (mailbox, tenant)
    }

    pub(super) fn mailbox_account(&mut self, root: FolderRef) -> usize {
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

    pub(super) fn tenant_account(&mut self, tenant: String) -> usize {
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

    pub(super) fn account(&self, scope: &Scope) -> Option<&Account> {
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
    pub(super) fn check(
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
            let account = &self.tenants.list[i];
            let checked = check_account(account, asked, grace).and_then(|()| match &self.shares {
                Some(shares) => shares.check(account, asked, grace),
                None => Ok(()),
            });
            checked.map_err(|mut r| {
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
    pub(super) fn net_additions(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
    ) -> Additions {
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

    pub(super) fn charge(&mut self, charges: &[FolderId], bytes: u64, warn_percent: u8) {
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

    pub(super) fn refund(&mut self, charges: &[FolderId], bytes: u64, warn_percent: u8) {
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

    /// Takes `bytes` off a folder's usage (see `Ledger::begin_transfer`).
    /// Returns what was taken (never more than the folder's usage).
    pub(super) fn credit(&mut self, id: FolderId, bytes: u64, warn_percent: u8) -> u64 {
        let taken = bytes.min(self.folders[id.0 as usize].usage);
        self.refund(&[id], taken, warn_percent);
        taken
    }

    /// What each credited folder of a transfer must hold against its
    /// accounts' limits: what the account is credited beyond what the same
    /// transfer charges it. A folder moving between two mailboxes of one
    /// tenant holds nothing at the tenant, which the charge already counts;
    /// counting it twice would refuse the tenant's other writers meanwhile.
    pub(super) fn holds_for(
        &self,
        charges: &[(FolderId, u64)],
        credits: &[(FolderId, u64)],
    ) -> Vec<Held> {
        let (mut mailbox_room, mut tenant_room) = (Vec::new(), Vec::new());
        for &(id, bytes) in charges {
            let folder = &self.folders[id.0 as usize];
            accumulate(&mut mailbox_room, folder.mailbox, bytes);
            if let Some(t) = folder.tenant {
                accumulate(&mut tenant_room, t, bytes);
            }
        }
        credits
            .iter()
            .map(|&(id, taken)| {
                let folder = &self.folders[id.0 as usize];
                let offset = take_room(&mut mailbox_room, folder.mailbox, taken);
                let tenant = match folder.tenant {
                    Some(t) => taken - take_room(&mut tenant_room, t, taken),
                    None => 0,
                };
                Held {
                    mailbox: taken - offset,
                    tenant,
                }
            })
            .collect()
    }

    pub(super) fn hold(&mut self, id: FolderId, held: Held) {
        self.adjust_held(id, held, |h, n| h + n);
    }

    pub(super) fn release(&mut self, id: FolderId, held: Held) {
        self.adjust_held(id, held, u64::saturating_sub);
    }

    fn adjust_held(&mut self, id: FolderId, by: Held, adjust: impl Fn(u64, u64) -> u64) {
        let folder = &mut self.folders[id.0 as usize];
        folder.held.mailbox = adjust(folder.held.mailbox, by.mailbox);
        folder.held.tenant = adjust(folder.held.tenant, by.tenant);
        let account = &mut self.mailboxes.list[folder.mailbox];
        account.held = adjust(account.held, by.mailbox);
        if let Some(t) = folder.tenant {
            let account = &mut self.tenants.list[t];
            account.held = adjust(account.held, by.tenant);
        }
    }

    pub(super) fn adjust_accounts(
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
    pub(super) fn rebuild_accounts(&mut self, warn_percent: u8) {
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

    pub(super) fn reattach_folder(&mut self, index: usize) {
        let name = self.folders[index].name.clone();
        let (mailbox, tenant) = self.accounts_of(&name);
        let folder = &mut self.folders[index];
        folder.mailbox = mailbox;
        folder.tenant = tenant;
        let (usage, held) = (folder.usage, folder.held);
        self.mailboxes.list[mailbox].used += usage;
        self.mailboxes.list[mailbox].held += held.mailbox;
        if let Some(tenant) = tenant {
            self.tenants.list[tenant].used += usage;
            self.tenants.list[tenant].held += held.tenant;
        }
    }

    pub(super) fn warned_scopes(&self) -> Vec<Scope> {
        let accounts = self.mailboxes.list.iter().chain(&self.tenants.list);
        accounts
            .filter(|a| a.warned)
            .map(|a| a.scope.clone())
            .collect()
    }

    /// Keeps "already warned" across a rebuild, then re-evaluates: a lowered
    /// limit is a crossing worth logging, a raised one re-arms the warning.
    pub(super) fn restore_warnings(&mut self, warned: &[Scope], warn_percent: u8) {
        let accounts = self.mailboxes.list.iter_mut().chain(&mut self.tenants.list);
        for account in accounts {
            account.warned = warned.contains(&account.scope);
            account.update_warning(warn_percent);
        }
    }

    pub(super) fn reset_usage(&mut self) {
        for folder in &mut self.folders {
            folder.usage = 0;
        }
        let accounts = self.mailboxes.list.iter_mut().chain(&mut self.tenants.list);
        for account in accounts {
            account.used = 0;
            account.warned = false;
        }
    }

    pub(super) fn report(&self) -> Report {
        let mut tenants: Vec<TenantUsage> = reportable(&self.tenants.list)
            .map(|(_, account)| TenantUsage {
                name: scope_name(&account.scope),
                used: account.used,
                limit: account.limit,
                percent: percent_value(account.used, account.limit),
            })
            .collect();
        let partitions = self.partitions_by_mailbox();
        let mut mailboxes: Vec<MailboxUsage> = reportable(&self.mailboxes.list)
            .map(|(i, account)| MailboxUsage {
                name: scope_name(&account.scope),
                tenant: account.tenant.clone(),
                used: account.used,
                limit: account.limit,
                partition: partitions.get(&i).map(|bytes| join(bytes.keys())),
                percent: percent_value(account.used, account.limit),
                partitions: partitions.get(&i).map_or_else(Vec::new, by_partition),
            })
            .collect();
        tenants.sort_by(|a, b| a.name.cmp(&b.name));
        mailboxes.sort_by(|a, b| a.name.cmp(&b.name));
        Report { tenants, mailboxes }
    }

    /// Distinct partitions of each mailbox account's folders, with the
    /// bytes of the folders recorded on each.
    pub(super) fn partitions_by_mailbox(&self) -> HashMap<usize, BTreeMap<&str, u64>> {
        let mut partitions: HashMap<usize, BTreeMap<&str, u64>> = HashMap::new();
        for folder in &self.folders {
            if let Some(partition) = &folder.partition {
                *partitions
                    .entry(folder.mailbox)
                    .or_default()
                    .entry(partition)
                    .or_default() += folder.usage;
            }
        }
        partitions
    }
}

/// Total bytes each touched account would gain, as (account index, bytes).
#[derive(Default)]
pub(super) struct Additions {
    pub(super) mailboxes: Vec<(usize, u64)>,
    pub(super) tenants: Vec<(usize, u64)>,
}

pub(super) fn check_account(account: &Account, asked: u64, grace: u64) -> Result<(), Refusal> {
    match account.limit {
        Some(limit) => check_bound(account, limit, false, asked, grace),
        None => Ok(()),
    }
}

/// Refuses `asked` more bytes (plus `grace`) if they take `account` past
/// `bound`: its limit, or (`share`) this host's share of a cluster limit.
pub(super) fn check_bound(
    account: &Account,
    bound: u64,
    share: bool,
    asked: u64,
    grace: u64,
) -> Result<(), Refusal> {
    let fits = account
        .used
        .checked_add(account.held)
        .and_then(|n| n.checked_add(asked))
        .is_some_and(|total| total <= bound.saturating_add(grace));
    if fits {
        return Ok(());
    }
    Err(Refusal {
        scope: account.scope.clone(),
        tenant: account.tenant.clone(),
        mailbox: None,
        limit: bound,
        grace,
        // What stands against the bound: the bytes a transfer under way
        // still holds count too (a cluster host asks for this much more).
        used: account.used.saturating_add(account.held),
        asked,
        share,
    })
}

/// Adds `bytes` to `account`'s entry in a short list.
fn accumulate(room: &mut Vec<(usize, u64)>, account: usize, bytes: u64) {
    match room.iter_mut().find(|(i, _)| *i == account) {
        Some((_, total)) => *total += bytes,
        None => room.push((account, bytes)),
    }
}

/// Takes up to `want` from `account`'s entry; returns what it took.
fn take_room(room: &mut [(usize, u64)], account: usize, want: u64) -> u64 {
    match room.iter_mut().find(|(i, _)| *i == account) {
        Some((_, left)) => {
            let took = want.min(*left);
            *left -= took;
            took
        }
        None => 0,
    }
}

/// Credits only offset accounts the charges touch (`only_existing`).
pub(super) fn accumulate_net(
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

pub(super) fn reportable(accounts: &[Account]) -> impl Iterator<Item = (usize, &Account)> {
    accounts
        .iter()
        .enumerate()
        .filter(|(_, a)| a.is_reportable())
}

pub(super) fn scope_name(scope: &Scope) -> String {
    match scope {
        Scope::Mailbox(name) | Scope::Tenant(name) => name.clone(),
    }
}

pub(super) fn join<'a>(partitions: impl Iterator<Item = &'a &'a str>) -> String {
    partitions.copied().collect::<Vec<_>>().join(",")
}
