//! The configuration model: TOML file → validated `Config`.
//!
//! Parsing and validation never touch the filesystem except in
//! [`Config::check_filesystem`], so everything else is unit-testable.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A byte limit; `None` means unlimited ("none" in the file).
pub type Limit = Option<u64>;

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// The file this configuration was read from (`<built-in>` for defaults).
    pub source: PathBuf,
    pub default_partition: String,
    /// Partitions in the order they appear in the file.
    pub partitions: Vec<PartitionConfig>,
    /// Routes in file order; the first match wins.
    pub routes: Vec<RouteConfig>,
    pub mount: MountConfig,
    pub layout: LayoutConfig,
    pub quota: QuotaConfig,
    /// `[tenants."example.org"]`
    pub tenants: BTreeMap<String, TenantConfig>,
    /// `[mailboxes."user/john@example.org"]`
    pub mailboxes: BTreeMap<String, MailboxConfig>,
    pub control: ControlConfig,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PartitionConfig {
    pub name: String,
    pub path: PathBuf,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RouteConfig {
    /// Glob over spool paths (`*` one level, `**` any number of levels).
    pub pattern: String,
    pub partition: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MountConfig {
    /// FUSE request threads.
    pub threads: usize,
    pub allow_other: bool,
    /// Entry and attribute cache lifetime handed to the kernel.
    pub ttl_secs: u64,
    /// Kernel passthrough for read-only opens (Linux >= 6.9).
    pub passthrough: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LayoutConfig {
    /// No quota attribution: every file is charged to nobody.
    None,
    /// Cyrus IMAP spool, named and UUID layouts.
    Cyrus {
        /// How many leading spool path components name the Cyrus partition
        /// directory (`mail/...` → 1).
        partition_depth: usize,
        /// Tenant for spools without `virtdomains` (`user/john/...`).
        default_tenant: Option<String>,
    },
    /// Maildir-style stores: `"{tenant}/{mailbox}/**"`.
    Pattern { pattern: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuotaConfig {
    pub mailbox_limit: Limit,
    pub tenant_limit: Limit,
    pub warn_percent: u8,
    /// How far metadata files (`cyrus.*`, `*.NEW`) may exceed a full limit.
    pub metadata_grace: u64,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct TenantConfig {
    /// `None`: not set here, `[quota].tenant_limit` applies.
    pub limit: Option<Limit>,
    /// `None`: not set here, `[quota].mailbox_limit` applies.
    pub mailbox_limit: Option<Limit>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MailboxConfig {
    pub limit: Limit,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ControlConfig {
    /// Uids besides root allowed to change limits and read reports.
    pub admin_uids: Vec<u32>,
    /// Where run-time limits and the control socket live.
    pub state_dir: PathBuf,
}

/// A configuration problem: which file, which key, what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.file.display(), self.key, self.problem)
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.partitions.iter().position(|p| p.name == name)
    }

    #[allow(unused)]
    fn todo(_: &Path) {}
}
