//! Limit rules: the configuration plus run-time overrides decide each
//! mailbox's quota root and limit and each tenant's limit.

use std::collections::{BTreeMap, BTreeSet};

use super::overrides::Overrides;
use crate::config::{Config, Limit, QuotaConfig, TenantConfig};
use crate::layout::FolderRef;

pub(super) struct LimitRules {
    pub(super) quota: QuotaConfig,
    pub(super) tenants: BTreeMap<String, TenantConfig>,
    /// `[mailboxes]`, keyed by parsed name.
    pub(super) mailboxes: BTreeMap<FolderRef, Limit>,
    pub(super) overrides: Overrides,
    /// Cluster mode: tenant limits as etcd has them (one truth for every
    /// host); they win over the configuration and local overrides, which
    /// only seed a tenant etcd has no limit for.
    pub(super) cluster: BTreeMap<String, Limit>,
}

impl LimitRules {
    /// A limit set for exactly this mailbox: run-time override, then config.
    pub(super) fn explicit_mailbox_limit(&self, root: &FolderRef) -> Option<Limit> {
        let overridden = self.overrides.mailboxes.get(root);
        overridden.or_else(|| self.mailboxes.get(root)).copied()
    }

    pub(super) fn mailbox_limit(&self, root: &FolderRef) -> Limit {
        if let Some(limit) = self.explicit_mailbox_limit(root) {
            return limit;
        }
        let tenant = root.tenant.as_ref().and_then(|t| self.tenants.get(t));
        match tenant.and_then(|t| t.mailbox_limit) {
            Some(limit) => limit,
            None => self.quota.mailbox_limit,
        }
    }

    pub(super) fn tenant_limit(&self, tenant: &str) -> Limit {
        if let Some(limit) = self.cluster.get(tenant) {
            return *limit;
        }
        if let Some(limit) = self.overrides.tenants.get(tenant) {
            return *limit;
        }
        match self.tenants.get(tenant).and_then(|t| t.limit) {
            Some(limit) => limit,
            None => self.quota.tenant_limit,
        }
    }

    /// The nearest enclosing folder with its own limit, else the top mailbox.
    pub(super) fn quota_root(&self, folder: &FolderRef) -> FolderRef {
        let explicit = folder
            .quota_root_candidates()
            .into_iter()
            .find(|candidate| self.explicit_mailbox_limit(candidate).is_some());
        explicit.unwrap_or_else(|| folder.top())
    }

    /// Mailboxes and tenants named in config or overrides: accounts even
    /// before anything is charged to them, so reports show their limits.
    pub(super) fn named_mailboxes(&self) -> BTreeSet<FolderRef> {
        let configured = self.mailboxes.keys();
        configured
            .chain(self.overrides.mailboxes.keys())
            .cloned()
            .collect()
    }

    pub(super) fn named_tenants(&self) -> BTreeSet<String> {
        let configured = self.tenants.keys();
        configured
            .chain(self.overrides.tenants.keys())
            .chain(self.cluster.keys())
            .cloned()
            .collect()
    }
}

pub(super) fn configured_mailboxes(config: &Config) -> Result<BTreeMap<FolderRef, Limit>, String> {
    let mut parsed = BTreeMap::new();
    for (name, mailbox) in &config.mailboxes {
        let root = FolderRef::parse_display(name)
            .map_err(|e| format!("{}: mailboxes.{name:?}: {e}", config.source.display()))?;
        parsed.insert(root, mailbox.limit);
    }
    Ok(parsed)
}
