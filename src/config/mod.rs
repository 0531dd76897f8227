//! The configuration model: TOML file → validated `Config`.
//!
//! Parsing and validation never touch the filesystem except in
//! [`Config::check_filesystem`], so everything else is unit-testable.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use crate::routing::Pattern;

mod checks;
mod cluster;
mod describe;
mod parse;
mod sizes;
#[cfg(test)]
mod tests;
mod values;

use checks::*;
pub use cluster::ClusterConfig;
use cluster::parse_cluster;
use describe::*;
use parse::*;
pub use sizes::*;
use values::*;

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
    /// Kernel passthrough for read-only opens (Linux >= 6.9); needs
    /// `open_handles`.
    pub passthrough: bool,
    /// A backing descriptor per `open(2)`, with OPEN and RELEASE. Off, the
    /// kernel opens files without asking and the daemon keeps one
    /// descriptor per file (see `fs/handles.rs`).
    pub open_handles: bool,
    /// Extended attributes served. Off, the daemon answers the first
    /// xattr request `ENOSYS` and the kernel stops asking: no more
    /// `GETXATTR security.capability` before every buffered `write()`
    /// (one round trip per write), at the cost of xattr support.
    pub xattrs: bool,
    /// How many `O_PATH` descriptors file nodes may hold; beyond that they
    /// keep file handles (see `fs/anchor.rs`). `None`: half the fd limit.
    pub held_descriptors: Option<u64>,
    /// Which transport carries requests (see `fuse/uring/`).
    pub io_uring: IoUringMode,
    /// Ring threads commit replies as SCHED_IDLE, so that the woken
    /// caller stays on its CPU (see `fuse/uring/handoff.rs`).
    pub handoff: bool,
}

/// `[mount] io_uring`: FUSE over io_uring, or the classic `/dev/fuse`
/// reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoUringMode {
    /// io_uring when the kernel offers it, else `/dev/fuse`.
    Auto,
    /// io_uring or no mount.
    On,
    /// `/dev/fuse` only.
    Off,
}

impl IoUringMode {
    pub fn parse(s: &str) -> Option<IoUringMode> {
        match s {
            "auto" => Some(IoUringMode::Auto),
            "on" => Some(IoUringMode::On),
            "off" => Some(IoUringMode::Off),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            IoUringMode::Auto => "auto",
            IoUringMode::On => "on",
            IoUringMode::Off => "off",
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq)]
pub enum LayoutConfig {
    /// No quota attribution: every file is charged to nobody.
    #[default]
    None,
    /// Cyrus IMAP spool, named and UUID layouts.
    Cyrus {
        /// How many leading spool path components name the Cyrus partition
        /// directory (`mail/...` → 1).
        partition_depth: usize,
        /// Tenant for spools without `virtdomains` (`user/john/...`).
        default_tenant: Option<String>,
        /// `[quota] metadata_names`: globs added to Cyrus's own.
        metadata_names: Vec<String>,
    },
    /// Maildir-style stores: `"{tenant}/{mailbox}/**"`.
    Pattern {
        pattern: String,
        /// `[quota] metadata_names`: globs added to Dovecot's own.
        metadata_names: Vec<String>,
    },
}

impl LayoutConfig {
    /// The configured `[quota] metadata_names` (kept with the layout,
    /// which decides what is metadata; empty without a layout).
    pub fn metadata_names(&self) -> &[String] {
        match self {
            LayoutConfig::None => &[],
            LayoutConfig::Cyrus { metadata_names, .. }
            | LayoutConfig::Pattern { metadata_names, .. } => metadata_names,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct QuotaConfig {
    pub mailbox_limit: Limit,
    pub tenant_limit: Limit,
    pub warn_percent: u8,
    /// How far metadata files (the layout's, see
    /// `Layout::is_metadata_name`, and `[quota] metadata_names`) may exceed
    /// a full limit.
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

/// `[metrics]`: the Prometheus endpoint (see `src/metrics.rs`).
///
/// Read with [`MetricsConfig::of`], not kept in [`Config`]: `Config` is
/// built field by field in tests of modules being refactored (quota), so a
/// new field would have to touch them. [`Config::parse`] validates the
/// section all the same, so `spoolfs check` reports its errors.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsConfig {
    /// Address and port of `GET /metrics`; `None` (the default): off.
    pub listen: Option<std::net::SocketAddr>,
    /// Series for every mailbox, not only those at or above `mailbox_percent`.
    pub per_mailbox: bool,
    /// Mailboxes using at least this percent of their limit get series.
    pub mailbox_percent: u8,
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

/// `Config::source` of the configuration built by [`Config::builtin`].
const BUILTIN_SOURCE: &str = "<built-in>";
const DEFAULT_STATE_DIR: &str = "/var/lib/spoolfs";
const MIB: u64 = 1024 * 1024;

impl Default for MountConfig {
    fn default() -> Self {
        MountConfig {
            threads: 4,
            allow_other: true,
            ttl_secs: 60,
            passthrough: true,
            open_handles: false,
            xattrs: true,
            held_descriptors: None,
            io_uring: IoUringMode::Auto,
            handoff: true,
        }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            mailbox_limit: None,
            tenant_limit: None,
            warn_percent: 90,
            metadata_grace: MIB,
        }
    }
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            admin_uids: Vec::new(),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: None,
            per_mailbox: false,
            mailbox_percent: 80,
        }
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_path_buf(),
        key: "(file)".to_string(),
        problem: format!("cannot read: {e}"),
    })
}

impl MetricsConfig {
    /// The `[metrics]` section of the file `config` was loaded from; the
    /// defaults (off) for the built-in configuration.
    pub fn of(config: &Config) -> Result<MetricsConfig, ConfigError> {
        if config.source == Path::new(BUILTIN_SOURCE) {
            return Ok(MetricsConfig::default());
        }
        MetricsConfig::parse(&read(&config.source)?, &config.source)
    }

    /// The `[metrics]` section of configuration text (the rest unchecked).
    pub fn parse(text: &str, source: &Path) -> Result<MetricsConfig, ConfigError> {
        let document = DeTable::parse(text).map_err(|e| syntax_error(text, source, &e))?;
        parse_metrics(&Section::top(document.get_ref(), source))
    }

    /// One line for `spoolfs check`.
    pub fn describe(&self) -> String {
        describe_metrics(self)
    }
}

impl Config {
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.partitions.iter().position(|p| p.name == name)
    }

    /// Reads, parses and validates a configuration file. Partition
    /// directories are not looked at: see [`Config::check_filesystem`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Config::parse(&read(path)?, path)
    }

    /// Parses and validates configuration text; `source` names it in errors.
    pub fn parse(text: &str, source: &Path) -> Result<Config, ConfigError> {
        let document = DeTable::parse(text).map_err(|e| syntax_error(text, source, &e))?;
        parse_document(&Section::top(document.get_ref(), source))
    }

    /// The configuration `spoolfs mount` uses without `--config`: a fast and a
    /// slow partition under `data_dir`, with `archive/**` routed to slow.
    pub fn builtin(data_dir: &Path) -> Config {
        let partition = |name: &str| PartitionConfig {
            name: name.to_string(),
            path: data_dir.join(name),
        };
        Config {
            source: PathBuf::from(BUILTIN_SOURCE),
            default_partition: "fast".to_string(),
            partitions: vec![partition("fast"), partition("slow")],
            routes: vec![RouteConfig {
                pattern: "archive/**".to_string(),
                partition: "slow".to_string(),
            }],
            mount: MountConfig::default(),
            layout: LayoutConfig::Cyrus {
                partition_depth: 1,
                default_tenant: None,
                metadata_names: Vec::new(),
            },
            quota: QuotaConfig::default(),
            tenants: BTreeMap::new(),
            mailboxes: BTreeMap::new(),
            control: ControlConfig {
                admin_uids: Vec::new(),
                state_dir: data_dir.join("state"),
            },
        }
    }

    /// The checks that need the filesystem: every partition is an existing
    /// directory, no two partitions overlap, and neither a partition nor the
    /// state directory lies inside the mount point (the daemon would
    /// deadlock serving its own backing store) or, for partitions, contains it.
    pub fn check_filesystem(&self, mountpoint: Option<&Path>) -> Result<(), ConfigError> {
        let roots = self
            .partitions
            .iter()
            .map(|partition| self.partition_root(partition))
            .collect::<Result<Vec<_>, _>>()?;
        self.check_partitions_disjoint(&roots)?;
        if let Some(mountpoint) = mountpoint {
            let mountpoint = resolve(mountpoint);
            self.check_partitions_clear_of(&roots, &mountpoint)?;
            self.check_state_dir_clear_of(&mountpoint)?;
        }
        Ok(())
    }

    /// Multi-line human description, for `spoolfs check`.
    pub fn describe(&self) -> String {
        let mut lines = vec![format!("configuration: {}", self.source.display())];
        lines.extend(self.describe_partitions());
        lines.extend(self.describe_routes());
        lines.push(format!("default partition: {}", self.default_partition));
        lines.push(format!("layout: {}", describe_layout(&self.layout)));
        lines.push(describe_quota(&self.quota));
        lines.extend(self.describe_tenants());
        lines.extend(self.describe_mailboxes());
        lines.push(describe_mount(&self.mount));
        lines.push(describe_control(&self.control));
        lines.join("\n") + "\n"
    }
}
