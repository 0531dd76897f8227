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
    /// How many `O_PATH` descriptors file nodes may hold; beyond that they
    /// keep file handles (see `fs/anchor.rs`). `None`: half the fd limit.
    pub held_descriptors: Option<u64>,
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
            held_descriptors: None,
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

impl Config {
    pub fn partition_index(&self, name: &str) -> Option<usize> {
        self.partitions.iter().position(|p| p.name == name)
    }

    /// Reads, parses and validates a configuration file. Partition
    /// directories are not looked at: see [`Config::check_filesystem`].
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".to_string(),
            problem: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
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

// ---------------------------------------------------------------------------
// Parsing: walk the TOML tree by hand, so every error names its exact key.

/// The keys allowed at the top level of the file.
const TOP_LEVEL_KEYS: &[&str] = &[
    "default_partition",
    "partitions",
    "route",
    "mount",
    "layout",
    "quota",
    "tenants",
    "mailboxes",
    "control",
];

fn parse_document(top: &Section) -> Result<Config, ConfigError> {
    top.allow_only(TOP_LEVEL_KEYS)?;
    let partitions = parse_partitions(top)?;
    Ok(Config {
        source: top.file.to_path_buf(),
        default_partition: parse_default_partition(top, &partitions)?,
        routes: parse_routes(top, &partitions)?,
        partitions,
        mount: parse_mount(top)?,
        layout: parse_layout(top)?,
        quota: parse_quota(top)?,
        tenants: parse_tenants(top)?,
        mailboxes: parse_mailboxes(top)?,
        control: parse_control(top)?,
    })
}

fn syntax_error(text: &str, source: &Path, error: &toml::de::Error) -> ConfigError {
    let problem = match error.span() {
        Some(span) => {
            let (line, column) = line_and_column(text, span.start);
            format!("line {line}, column {column}: {}", error.message())
        }
        None => error.message().to_string(),
    };
    ConfigError {
        file: source.to_path_buf(),
        key: "(syntax)".to_string(),
        problem,
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// Partitions keep their file order (the first one is the default default).
fn parse_partitions(top: &Section) -> Result<Vec<PartitionConfig>, ConfigError> {
    let section = top.section("partitions")?;
    let partitions = section
        .entries()
        .into_iter()
        .map(|(name, value)| {
            require_name(&section, name)?;
            let path = absolute_path(value).map_err(|problem| section.error(name, problem))?;
            Ok(PartitionConfig {
                name: name.to_string(),
                path,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if partitions.is_empty() {
        return Err(top.error(
            "partitions",
            "at least one partition is required, e.g. fast = \"/srv/ssd/spool\"",
        ));
    }
    Ok(partitions)
}

fn parse_default_partition(
    top: &Section,
    partitions: &[PartitionConfig],
) -> Result<String, ConfigError> {
    match top.value("default_partition", string)? {
        None => Ok(partitions[0].name.clone()),
        Some(name) => {
            check_partition_known(&name, partitions)
                .map_err(|problem| top.error("default_partition", problem))?;
            Ok(name)
        }
    }
}

fn check_partition_known(name: &str, partitions: &[PartitionConfig]) -> Result<(), String> {
    if partitions.iter().any(|p| p.name == name) {
        return Ok(());
    }
    let known: Vec<&str> = partitions.iter().map(|p| p.name.as_str()).collect();
    Err(format!(
        "{name:?} is not a partition (partitions: {})",
        known.join(", ")
    ))
}

/// `[[route]]` entries; errors name them `route[1]`, `route[2]`, … (1-based,
/// counting `[[route]]` headers from the top of the file).
fn parse_routes(
    top: &Section,
    partitions: &[PartitionConfig],
) -> Result<Vec<RouteConfig>, ConfigError> {
    let Some(value) = top.get("route") else {
        return Ok(Vec::new());
    };
    let DeValue::Array(items) = value else {
        return Err(top.error("route", expected("an array of tables ([[route]])", value)));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let section = top.child(&format!("route[{}]", index + 1), item.get_ref())?;
            parse_route(&section, partitions)
        })
        .collect()
}

fn parse_route(
    section: &Section,
    partitions: &[PartitionConfig],
) -> Result<RouteConfig, ConfigError> {
    section.allow_only(&["match", "partition"])?;
    let pattern = section.required("match", string)?;
    Pattern::parse(&pattern).map_err(|problem| section.error("match", problem))?;
    let partition = section.required("partition", string)?;
    check_partition_known(&partition, partitions)
        .map_err(|problem| section.error("partition", problem))?;
    Ok(RouteConfig { pattern, partition })
}

fn parse_mount(top: &Section) -> Result<MountConfig, ConfigError> {
    let section = top.section("mount")?;
    section.allow_only(&[
        "threads",
        "allow_other",
        "ttl_secs",
        "passthrough",
        "held_descriptors",
    ])?;
    let defaults = MountConfig::default();
    Ok(MountConfig {
        threads: section
            .value("threads", integer_in(1, 64))?
            .unwrap_or(defaults.threads),
        allow_other: section
            .value("allow_other", boolean)?
            .unwrap_or(defaults.allow_other),
        ttl_secs: section
            .value("ttl_secs", integer_in(0, i64::MAX))?
            .unwrap_or(defaults.ttl_secs),
        passthrough: section
            .value("passthrough", boolean)?
            .unwrap_or(defaults.passthrough),
        held_descriptors: section.value("held_descriptors", integer_in(0, i64::MAX))?,
    })
}

/// Layout keys that belong to one `kind` only, with that kind.
const LAYOUT_KIND_KEYS: &[(&str, &str)] = &[
    ("partition_depth", "cyrus"),
    ("default_tenant", "cyrus"),
    ("pattern", "pattern"),
];

fn parse_layout(top: &Section) -> Result<LayoutConfig, ConfigError> {
    let section = top.section("layout")?;
    section.allow_only(&["kind", "partition_depth", "default_tenant", "pattern"])?;
    let kind = section
        .value("kind", string)?
        .unwrap_or_else(|| "none".to_string());
    check_layout_keys_fit_kind(&section, &kind)?;
    match kind.as_str() {
        "none" => Ok(LayoutConfig::None),
        "cyrus" => Ok(LayoutConfig::Cyrus {
            partition_depth: section
                .value("partition_depth", integer_in(0, 16))?
                .unwrap_or(1),
            default_tenant: section.value("default_tenant", non_empty_string)?,
        }),
        "pattern" => Ok(LayoutConfig::Pattern {
            pattern: section.required("pattern", layout_pattern)?,
        }),
        _ => Err(section.error(
            "kind",
            format!("unknown layout {kind:?}; expected \"none\", \"cyrus\" or \"pattern\""),
        )),
    }
}

/// A key of another layout kind is almost certainly a mistake (a forgotten
/// or wrong `kind`), so it is an error rather than silently ignored.
fn check_layout_keys_fit_kind(section: &Section, kind: &str) -> Result<(), ConfigError> {
    let known_kind = LAYOUT_KIND_KEYS.iter().any(|&(_, owner)| owner == kind) || kind == "none";
    for &(key, owner) in LAYOUT_KIND_KEYS {
        if known_kind && owner != kind && section.get(key).is_some() {
            return Err(section.error(
                key,
                format!("only used with kind = \"{owner}\", but kind is \"{kind}\""),
            ));
        }
    }
    Ok(())
}

/// A `{tenant}`/`{mailbox}` path pattern for maildir-style stores.
///
/// These are the rules `layout` applies when it builds its pattern layout.
/// They are repeated here because layout treats a pattern it cannot parse as
/// "attribute nothing", which would silently switch quota off: a pattern must
/// be rejected here, before mounting, if layout would not take it.
fn layout_pattern(value: &DeValue) -> Result<String, String> {
    let pattern = string(value)?;
    Pattern::parse(&pattern)?;
    let segments: Vec<&str> = pattern.split('/').collect();
    if let Some(bad) = unsupported_layout_segment(&segments) {
        return Err(format!(
            "pattern {pattern:?}: segment {bad:?} is not supported; use {{tenant}}, {{mailbox}}, \
             * or a plain name, and ** only as the last segment"
        ));
    }
    let count = |wanted: &str| segments.iter().filter(|s| **s == wanted).count();
    let position = |wanted: &str| segments.iter().position(|s| *s == wanted);
    match (position("{tenant}"), position("{mailbox}")) {
        (_, None) => Err(format!("pattern {pattern:?} must contain {{mailbox}}")),
        _ if count("{tenant}") > 1 || count("{mailbox}") > 1 => Err(format!(
            "pattern {pattern:?} repeats {{tenant}} or {{mailbox}}"
        )),
        (Some(tenant), Some(mailbox)) if tenant > mailbox => Err(format!(
            "pattern {pattern:?}: {{tenant}} must come before {{mailbox}}"
        )),
        _ => Ok(pattern),
    }
}

/// The first segment that is neither a placeholder, `*`, a trailing `**`,
/// nor a plain name.
fn unsupported_layout_segment<'s>(segments: &[&'s str]) -> Option<&'s str> {
    let last = segments.len() - 1;
    segments.iter().enumerate().find_map(|(index, &segment)| {
        let supported = match segment {
            "{tenant}" | "{mailbox}" | "*" => true,
            "**" => index == last,
            _ => !segment.contains(['{', '}', '*', '?']),
        };
        (!supported).then_some(segment)
    })
}

fn parse_quota(top: &Section) -> Result<QuotaConfig, ConfigError> {
    let section = top.section("quota")?;
    section.allow_only(&[
        "mailbox_limit",
        "tenant_limit",
        "warn_percent",
        "metadata_grace",
    ])?;
    let defaults = QuotaConfig::default();
    Ok(QuotaConfig {
        mailbox_limit: section
            .value("mailbox_limit", size)?
            .unwrap_or(defaults.mailbox_limit),
        tenant_limit: section
            .value("tenant_limit", size)?
            .unwrap_or(defaults.tenant_limit),
        warn_percent: section
            .value("warn_percent", integer_in(1, 100))?
            .unwrap_or(defaults.warn_percent),
        metadata_grace: section
            .value("metadata_grace", finite_size)?
            .unwrap_or(defaults.metadata_grace),
    })
}

fn parse_tenants(top: &Section) -> Result<BTreeMap<String, TenantConfig>, ConfigError> {
    let tenants = top.section("tenants")?;
    tenants
        .entries()
        .into_iter()
        .map(|(name, value)| {
            require_name(&tenants, name)?;
            let section = tenants.child(name, value)?;
            section.allow_only(&["limit", "mailbox_limit"])?;
            let tenant = TenantConfig {
                limit: section.value("limit", size)?,
                mailbox_limit: section.value("mailbox_limit", size)?,
            };
            Ok((name.to_string(), tenant))
        })
        .collect()
}

fn parse_mailboxes(top: &Section) -> Result<BTreeMap<String, MailboxConfig>, ConfigError> {
    let mailboxes = top.section("mailboxes")?;
    mailboxes
        .entries()
        .into_iter()
        .map(|(name, value)| {
            require_name(&mailboxes, name)?;
            // The ledger reads these keys with `parse_display`: refuse here
            // what it would refuse at mount time, so `spoolfs check` agrees.
            crate::layout::FolderRef::parse_display(name)
                .map_err(|problem| mailboxes.error(name, problem))?;
            let section = mailboxes.child(name, value)?;
            section.allow_only(&["limit"])?;
            let limit = section.required("limit", size)?;
            Ok((name.to_string(), MailboxConfig { limit }))
        })
        .collect()
}

fn parse_control(top: &Section) -> Result<ControlConfig, ConfigError> {
    let section = top.section("control")?;
    section.allow_only(&["admin_uids", "state_dir"])?;
    let defaults = ControlConfig::default();
    Ok(ControlConfig {
        admin_uids: section
            .value("admin_uids", uid_list)?
            .unwrap_or(defaults.admin_uids),
        state_dir: section
            .value("state_dir", absolute_path)?
            .unwrap_or(defaults.state_dir),
    })
}

fn require_name(section: &Section, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(section.error(name, "empty name"));
    }
    Ok(())
}

/// One TOML table being read, with its dotted key path so that every error
/// names the exact key, and an absent table reads as an empty one.
struct Section<'a, 'i> {
    table: Option<&'a DeTable<'i>>,
    /// Dotted key path of this table; empty at the top level.
    path: String,
    file: &'a Path,
}

impl<'a, 'i> Section<'a, 'i> {
    fn top(table: &'a DeTable<'i>, file: &'a Path) -> Self {
        Section {
            table: Some(table),
            path: String::new(),
            file,
        }
    }

    fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    fn error(&self, name: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: self.key(name),
            problem: problem.into(),
        }
    }

    fn get(&self, name: &str) -> Option<&'a DeValue<'i>> {
        self.table?.get(name).map(|value| value.get_ref())
    }

    /// Entries in file order. Without toml's `preserve_order` feature tables
    /// are sorted by key, but every key keeps its source span, so sorting by
    /// span restores the order the operator wrote.
    fn entries(&self) -> Vec<(&'a str, &'a DeValue<'i>)> {
        let Some(table) = self.table else {
            return Vec::new();
        };
        let mut entries: Vec<_> = table.iter().collect();
        entries.sort_by_key(|(key, _)| key.span().start);
        entries
            .into_iter()
            .map(|(key, value)| (key.get_ref().as_ref(), value.get_ref()))
            .collect()
    }

    fn allow_only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self
            .entries()
            .into_iter()
            .find(|(name, _)| !known.contains(name))
        {
            None => Ok(()),
            Some((name, _)) => Err(self.error(
                name,
                format!("unknown key (known keys here: {})", known.join(", ")),
            )),
        }
    }

    /// The value of an optional key, converted; conversion problems become
    /// errors naming the key.
    fn value<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&DeValue<'i>) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|value| convert(value).map_err(|problem| self.error(name, problem)))
            .transpose()
    }

    fn required<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&DeValue<'i>) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.value(name, convert)?
            .ok_or_else(|| self.error(name, "missing (this key is required)"))
    }

    /// The sub-table `name`, empty if absent.
    fn section(&self, name: &str) -> Result<Section<'a, 'i>, ConfigError> {
        match self.get(name) {
            None => Ok(Section {
                table: None,
                path: self.key(name),
                file: self.file,
            }),
            Some(value) => self.child(name, value),
        }
    }

    /// `value`, found under `name` here, as a table.
    fn child(&self, name: &str, value: &'a DeValue<'i>) -> Result<Section<'a, 'i>, ConfigError> {
        match value {
            DeValue::Table(table) => Ok(Section {
                table: Some(table),
                path: self.key(name),
                file: self.file,
            }),
            other => Err(self.error(name, expected("a table", other))),
        }
    }
}

// Value conversions: each returns the problem in plain words, bad value included.

fn expected(what: &str, found: &DeValue) -> String {
    format!("expected {what}, found {}", describe_value(found))
}

fn describe_value(value: &DeValue) -> String {
    match value {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

fn string(value: &DeValue) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        other => Err(expected("a string", other)),
    }
}

fn non_empty_string(value: &DeValue) -> Result<String, String> {
    match string(value)? {
        s if s.is_empty() => Err("must not be empty".to_string()),
        s => Ok(s),
    }
}

fn boolean(value: &DeValue) -> Result<bool, String> {
    match value {
        DeValue::Boolean(b) => Ok(*b),
        other => Err(expected("true or false", other)),
    }
}

fn integer(value: &DeValue) -> Result<i64, String> {
    match value {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| format!("integer {i} is out of range")),
        other => Err(expected("an integer", other)),
    }
}

/// An integer in `min..=max`, converted to the field's type.
fn integer_in<T: TryFrom<i64>>(min: i64, max: i64) -> impl Fn(&DeValue) -> Result<T, String> {
    move |value| {
        let n = integer(value)?;
        if !(min..=max).contains(&n) {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("from {min} to {max}")
            };
            return Err(format!("{n} is out of range: expected an integer {range}"));
        }
        T::try_from(n).map_err(|_| format!("{n} is out of range"))
    }
}

/// A byte size: a string for [`parse_size`] or a plain integer of bytes.
fn size(value: &DeValue) -> Result<Limit, String> {
    match value {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(_) => integer_in(0, i64::MAX)(value).map(Some),
        other => Err(expected("a size such as \"5G\" or \"none\"", other)),
    }
}

/// A size where unlimited makes no sense.
fn finite_size(value: &DeValue) -> Result<u64, String> {
    size(value)?.ok_or_else(|| "\"none\" is not allowed here; use 0 for no allowance".to_string())
}

fn absolute_path(value: &DeValue) -> Result<PathBuf, String> {
    let path = PathBuf::from(string(value)?);
    if !path.is_absolute() {
        return Err(format!(
            "{:?} is not an absolute path (a relative path would depend on the daemon's working directory)",
            path.display().to_string()
        ));
    }
    Ok(path)
}

fn uid_list(value: &DeValue) -> Result<Vec<u32>, String> {
    let DeValue::Array(items) = value else {
        return Err(expected("an array of uids, e.g. [1000]", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            integer_in(0, u32::MAX.into())(item.get_ref())
                .map_err(|problem| format!("item {}: {problem}", index + 1))
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Sizes.

/// Parses a byte size: `"none"` (unlimited), a whole number of bytes, or a
/// whole number with a unit `K`, `M`, `G` or `T` (powers of 1024; any case;
/// `B` / `iB` may follow, so `5G`, `5GB`, `5GiB` and `5gib` are equal).
pub fn parse_size(s: &str) -> Result<Limit, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty size; expected e.g. \"1024\", \"5G\" or \"none\"".to_string());
    }
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err(format!("{s:?}: sizes cannot be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{s:?} is not a size: expected a number with an optional unit (e.g. \"5G\") or \"none\""
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "{s:?}: only whole numbers are allowed (e.g. \"1536M\", not \"1.5G\")"
        ));
    }
    let multiplier = unit_multiplier(unit.trim_start()).ok_or_else(|| {
        format!("{s:?} has unknown unit {unit:?}; use K, M, G or T (powers of 1024)")
    })?;
    let too_large = || format!("{s:?} is too large (the maximum is about 16 exbibytes)");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number
        .checked_mul(multiplier)
        .map(Some)
        .ok_or_else(too_large)
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    let power = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 1,
        "M" | "MB" | "MIB" => 2,
        "G" | "GB" | "GIB" => 3,
        "T" | "TB" | "TIB" => 4,
        _ => return None,
    };
    Some(1024u64.pow(power))
}

/// Human form for reports: `"512B"`, `"1.5K"`, `"1.0G"` (powers of 1024).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 and above would print as "1024.0", so move up a unit instead.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

fn format_limit(limit: Limit) -> String {
    limit.map_or_else(|| "none".to_string(), format_size)
}

// ---------------------------------------------------------------------------
// Filesystem checks.

impl Config {
    /// The canonical path of an existing partition directory.
    fn partition_root(&self, partition: &PartitionConfig) -> Result<PathBuf, ConfigError> {
        let path = &partition.path;
        let problem = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some(format!("{} is not a directory", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Some(format!("{} does not exist", path.display()))
            }
            Err(e) => Some(format!("{} cannot be accessed: {e}", path.display())),
        };
        let canonical = match problem {
            None => fs::canonicalize(path)
                .map_err(|e| format!("{} cannot be resolved: {e}", path.display())),
            Some(problem) => Err(problem),
        };
        canonical.map_err(|problem| self.partition_error(partition, problem))
    }

    fn partition_error(&self, partition: &PartitionConfig, problem: String) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            key: format!("partitions.{}", partition.name),
            problem,
        }
    }

    /// Overlapping partitions would see each other's files twice.
    fn check_partitions_disjoint(&self, roots: &[PathBuf]) -> Result<(), ConfigError> {
        for (later, later_root) in roots.iter().enumerate() {
            for (earlier, earlier_root) in roots[..later].iter().enumerate() {
                if let Some(relation) = overlap(later_root, earlier_root) {
                    let problem = format!(
                        "{} {relation} partition {:?} ({})",
                        later_root.display(),
                        self.partitions[earlier].name,
                        earlier_root.display()
                    );
                    return Err(self.partition_error(&self.partitions[later], problem));
                }
            }
        }
        Ok(())
    }

    fn check_partitions_clear_of(
        &self,
        roots: &[PathBuf],
        mountpoint: &Path,
    ) -> Result<(), ConfigError> {
        for (partition, root) in self.partitions.iter().zip(roots) {
            if let Some(relation) = overlap(root, mountpoint) {
                let problem = format!(
                    "{} {relation} the mount point {}",
                    root.display(),
                    mountpoint.display()
                );
                return Err(self.partition_error(partition, problem));
            }
        }
        Ok(())
    }

    /// Only inside is a problem: a state dir *containing* the mount point
    /// (e.g. `/var` for `/var/spool/cyrus`) is harmless.
    fn check_state_dir_clear_of(&self, mountpoint: &Path) -> Result<(), ConfigError> {
        let state_dir = resolve(&self.control.state_dir);
        match overlap(&state_dir, mountpoint) {
            Some(relation) if relation != Overlap::Contains => Err(ConfigError {
                file: self.source.clone(),
                key: "control.state_dir".to_string(),
                problem: format!(
                    "{} {relation} the mount point {}",
                    state_dir.display(),
                    mountpoint.display()
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// How one directory overlaps another.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Overlap {
    Same,
    Inside,
    Contains,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overlap::Same => "is the same directory as",
            Overlap::Inside => "is inside",
            Overlap::Contains => "contains",
        })
    }
}

/// How `path` relates to `other` if they overlap. Both must be canonical
/// (or at least absolute); `starts_with` compares whole components.
fn overlap(path: &Path, other: &Path) -> Option<Overlap> {
    if path == other {
        Some(Overlap::Same)
    } else if path.starts_with(other) {
        Some(Overlap::Inside)
    } else if other.starts_with(path) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// Canonical form if the path exists, else at least absolute, so that
/// comparisons with canonical partition roots still mean something.
fn resolve(path: &Path) -> PathBuf {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

// ---------------------------------------------------------------------------
// Description for `spoolfs check`.

impl Config {
    fn describe_partitions(&self) -> Vec<String> {
        let mut lines = vec!["partitions:".to_string()];
        for partition in &self.partitions {
            let mark = if partition.name == self.default_partition {
                "  (default)"
            } else {
                ""
            };
            lines.push(format!(
                "  {}  {}{mark}",
                partition.name,
                partition.path.display()
            ));
        }
        lines
    }

    fn describe_routes(&self) -> Vec<String> {
        let mut lines = vec!["routes (first match wins):".to_string()];
        for route in &self.routes {
            lines.push(format!("  {} -> {}", route.pattern, route.partition));
        }
        lines.push(format!("  (anything else) -> {}", self.default_partition));
        lines
    }

    fn describe_tenants(&self) -> Vec<String> {
        if self.tenants.is_empty() {
            return vec!["tenants: none configured".to_string()];
        }
        let mut lines = vec!["tenants:".to_string()];
        for (name, tenant) in &self.tenants {
            lines.push(format!(
                "  {name}: limit {}, mailbox limit {}",
                describe_override(tenant.limit),
                describe_override(tenant.mailbox_limit)
            ));
        }
        lines
    }

    fn describe_mailboxes(&self) -> Vec<String> {
        if self.mailboxes.is_empty() {
            return vec!["mailboxes: none configured".to_string()];
        }
        let mut lines = vec!["mailboxes:".to_string()];
        for (name, mailbox) in &self.mailboxes {
            lines.push(format!("  {name}: limit {}", format_limit(mailbox.limit)));
        }
        lines
    }
}

fn describe_override(limit: Option<Limit>) -> String {
    limit.map_or_else(|| "(quota default)".to_string(), format_limit)
}

fn describe_layout(layout: &LayoutConfig) -> String {
    match layout {
        LayoutConfig::None => "none (usage is not attributed to mailboxes)".to_string(),
        LayoutConfig::Cyrus {
            partition_depth,
            default_tenant,
        } => format!(
            "cyrus (partition depth {partition_depth}, default tenant {})",
            default_tenant.as_deref().unwrap_or("none")
        ),
        LayoutConfig::Pattern { pattern } => format!("pattern {pattern}"),
    }
}

fn describe_quota(quota: &QuotaConfig) -> String {
    format!(
        "quota defaults: mailbox limit {}, tenant limit {}, warn at {}%, metadata grace {}",
        format_limit(quota.mailbox_limit),
        format_limit(quota.tenant_limit),
        quota.warn_percent,
        format_size(quota.metadata_grace)
    )
}

fn describe_mount(mount: &MountConfig) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "mount: {} threads, allow_other {}, ttl {}s, passthrough {}, held descriptors {}",
        mount.threads,
        yes_no(mount.allow_other),
        mount.ttl_secs,
        yes_no(mount.passthrough),
        mount
            .held_descriptors
            .map_or("half the fd limit".to_string(), |n| n.to_string())
    )
}

fn describe_control(control: &ControlConfig) -> String {
    let admins = if control.admin_uids.is_empty() {
        "root only".to_string()
    } else {
        let uids: Vec<String> = control.admin_uids.iter().map(u32::to_string).collect();
        format!("root and uids {}", uids.join(", "))
    };
    format!(
        "control: state dir {}, admins: {admins}",
        control.state_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL_EXAMPLE: &str = r#"
default_partition = "fast"

[partitions]
fast = "/srv/ssd/spool"
slow = "/srv/hdd/spool"

[[route]]
match = "archive/**"
partition = "slow"

[[route]]
match = "mail/domain/*/example.com/**"
partition = "fast"

[mount]
threads = 8
allow_other = false
ttl_secs = 30
passthrough = false
held_descriptors = 5000

[layout]
kind = "cyrus"
partition_depth = 2
default_tenant = "example.net"

[quota]
mailbox_limit = "1G"
tenant_limit = "none"
warn_percent = 80
metadata_grace = 2097152

[tenants."example.org"]
limit = "5G"
mailbox_limit = "2G"

[tenants."example.com"]
limit = "none"

[mailboxes."user/john@example.org"]
limit = "1G"

[control]
admin_uids = [1000, 1001]
state_dir = "/var/lib/spoolfs-test"
"#;

    const GIB: u64 = 1024 * MIB;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("/etc/spoolfs.toml"))
    }

    /// `extra` followed by the minimal valid `[partitions]`.
    fn parse_with(extra: &str) -> Result<Config, ConfigError> {
        parse(&format!(
            "{extra}\n[partitions]\nfast = \"/a\"\nslow = \"/b\"\n"
        ))
    }

    /// Asserts that parsing fails on `key` with a problem mentioning `words`.
    fn assert_error(result: Result<Config, ConfigError>, key: &str, words: &str) {
        let error = result.expect_err("expected a configuration error");
        assert_eq!(error.key, key, "wrong key in: {error}");
        assert!(error.problem.contains(words), "{words:?} not in: {error}");
        assert_eq!(error.file, Path::new("/etc/spoolfs.toml"));
    }

    fn partition(name: &str, path: &str) -> PartitionConfig {
        PartitionConfig {
            name: name.to_string(),
            path: PathBuf::from(path),
        }
    }

    fn route(pattern: &str, partition: &str) -> RouteConfig {
        RouteConfig {
            pattern: pattern.to_string(),
            partition: partition.to_string(),
        }
    }

    #[test]
    fn full_example_parses_to_the_expected_config() {
        let expected = Config {
            source: PathBuf::from("/etc/spoolfs.toml"),
            default_partition: "fast".to_string(),
            partitions: vec![
                partition("fast", "/srv/ssd/spool"),
                partition("slow", "/srv/hdd/spool"),
            ],
            routes: vec![
                route("archive/**", "slow"),
                route("mail/domain/*/example.com/**", "fast"),
            ],
            mount: MountConfig {
                threads: 8,
                allow_other: false,
                ttl_secs: 30,
                passthrough: false,
                held_descriptors: Some(5000),
            },
            layout: LayoutConfig::Cyrus {
                partition_depth: 2,
                default_tenant: Some("example.net".to_string()),
            },
            quota: QuotaConfig {
                mailbox_limit: Some(GIB),
                tenant_limit: None,
                warn_percent: 80,
                metadata_grace: 2 * MIB,
            },
            tenants: BTreeMap::from([
                (
                    "example.org".to_string(),
                    TenantConfig {
                        limit: Some(Some(5 * GIB)),
                        mailbox_limit: Some(Some(2 * GIB)),
                    },
                ),
                (
                    "example.com".to_string(),
                    TenantConfig {
                        limit: Some(None),
                        mailbox_limit: None,
                    },
                ),
            ]),
            mailboxes: BTreeMap::from([(
                "user/john@example.org".to_string(),
                MailboxConfig { limit: Some(GIB) },
            )]),
            control: ControlConfig {
                admin_uids: vec![1000, 1001],
                state_dir: PathBuf::from("/var/lib/spoolfs-test"),
            },
        };
        assert_eq!(parse(FULL_EXAMPLE).unwrap(), expected);
    }

    #[test]
    fn minimal_file_gets_the_defaults() {
        let config = parse("[partitions]\nonly = \"/srv/spool\"\n").unwrap();
        assert_eq!(config.default_partition, "only");
        assert_eq!(config.partitions, vec![partition("only", "/srv/spool")]);
        assert!(config.routes.is_empty());
        assert_eq!(config.mount, MountConfig::default());
        assert_eq!(config.mount.threads, 4);
        assert!(config.mount.allow_other && config.mount.passthrough);
        assert_eq!(config.mount.ttl_secs, 60);
        assert_eq!(config.layout, LayoutConfig::None);
        assert_eq!(config.quota.mailbox_limit, None);
        assert_eq!(config.quota.tenant_limit, None);
        assert_eq!(config.quota.warn_percent, 90);
        assert_eq!(config.quota.metadata_grace, MIB);
        assert!(config.tenants.is_empty() && config.mailboxes.is_empty());
        assert!(config.control.admin_uids.is_empty());
        assert_eq!(config.control.state_dir, Path::new("/var/lib/spoolfs"));
    }

    #[test]
    fn partitions_keep_file_order_not_alphabetical_order() {
        let config = parse("[partitions]\nzeta = \"/z\"\nalpha = \"/a\"\nmid = \"/m\"\n").unwrap();
        let names: Vec<&str> = config.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["zeta", "alpha", "mid"]);
        assert_eq!(config.default_partition, "zeta");
    }

    #[test]
    fn partitions_as_dotted_keys_and_inline_table_work_too() {
        let dotted = parse("partitions.b = \"/b\"\npartitions.a = \"/a\"\n").unwrap();
        assert_eq!(dotted.partitions[0].name, "b");
        let inline = parse("partitions = { b = \"/b\", a = \"/a\" }\n").unwrap();
        assert_eq!(inline.partitions[0].name, "b");
    }

    #[test]
    fn sizes_may_be_integers_with_underscores() {
        let config = parse_with("[quota]\nmailbox_limit = 1_048_576\n").unwrap();
        assert_eq!(config.quota.mailbox_limit, Some(MIB));
    }

    #[test]
    fn pattern_layout_parses() {
        let config =
            parse_with("[layout]\nkind = \"pattern\"\npattern = \"{tenant}/{mailbox}/**\"\n");
        assert_eq!(
            config.unwrap().layout,
            LayoutConfig::Pattern {
                pattern: "{tenant}/{mailbox}/**".to_string()
            }
        );
    }

    #[test]
    fn layout_patterns_that_layout_supports_are_accepted() {
        for pattern in [
            "{mailbox}",
            "{tenant}/{mailbox}",
            "vmail/*/{tenant}/{mailbox}/Maildir/**",
        ] {
            let text = format!("[layout]\nkind = \"pattern\"\npattern = \"{pattern}\"\n");
            assert!(parse_with(&text).is_ok(), "{pattern:?} rejected");
        }
    }

    #[test]
    fn cyrus_layout_defaults() {
        let config = parse_with("[layout]\nkind = \"cyrus\"\n").unwrap();
        assert_eq!(
            config.layout,
            LayoutConfig::Cyrus {
                partition_depth: 1,
                default_tenant: None
            }
        );
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let error = parse("[partitions]\nfast = \"/a\"\nslow = \n").unwrap_err();
        assert_eq!(error.key, "(syntax)");
        assert!(error.problem.starts_with("line 3, column"), "{error}");
    }

    #[test]
    fn duplicate_keys_are_syntax_errors() {
        assert_error(
            parse("[partitions]\na = \"/a\"\na = \"/b\"\n"),
            "(syntax)",
            "line 3",
        );
    }

    #[test]
    fn partitions_are_required() {
        assert_error(parse(""), "partitions", "at least one partition");
        assert_error(
            parse("[partitions]\n"),
            "partitions",
            "at least one partition",
        );
        assert_error(
            parse("partitions = 3\n"),
            "partitions",
            "expected a table, found integer 3",
        );
    }

    #[test]
    fn partition_paths_must_be_absolute_strings() {
        assert_error(
            parse("[partitions]\nfast = \"srv/ssd\"\n"),
            "partitions.fast",
            "\"srv/ssd\" is not an absolute path",
        );
        assert_error(
            parse("[partitions]\nfast = 1\n"),
            "partitions.fast",
            "expected a string, found integer 1",
        );
    }

    #[test]
    fn default_partition_must_exist() {
        assert_error(
            parse_with("default_partition = \"ssd\"\n"),
            "default_partition",
            "\"ssd\" is not a partition (partitions: fast, slow)",
        );
    }

    #[test]
    fn unknown_keys_are_named() {
        assert_error(parse_with("colour = \"red\"\n"), "colour", "unknown key");
        assert_error(
            parse_with("[mount]\nthread = 4\n"),
            "mount.thread",
            "unknown key",
        );
        assert_error(
            parse_with("[[route]]\nmatch = \"a\"\npartition = \"fast\"\nprio = 1\n"),
            "route[1].prio",
            "unknown key",
        );
        assert_error(
            parse_with("[tenants.\"example.org\"]\nlimt = \"5G\"\n"),
            "tenants.example.org.limt",
            "unknown key",
        );
        assert_error(
            parse_with("[mailboxes.\"user/x\"]\nlimit = \"1G\"\nwarn = 1\n"),
            "mailboxes.user/x.warn",
            "unknown key",
        );
        assert_error(
            parse_with("[control]\nadmins = [1]\n"),
            "control.admins",
            "unknown key",
        );
        assert_error(
            parse_with("[quota]\nlimit = 1\n"),
            "quota.limit",
            "unknown key",
        );
        assert_error(
            parse_with("[layout]\nstyle = \"x\"\n"),
            "layout.style",
            "unknown key",
        );
    }

    #[test]
    fn route_errors_name_the_route_counting_from_one() {
        let good = "[[route]]\nmatch = \"a/**\"\npartition = \"slow\"\n";
        assert_error(
            parse_with(&format!(
                "{good}[[route]]\nmatch = \"b/**\"\npartition = \"tape\"\n"
            )),
            "route[2].partition",
            "\"tape\" is not a partition",
        );
        assert_error(
            parse_with(&format!(
                "{good}[[route]]\nmatch = \"/b\"\npartition = \"slow\"\n"
            )),
            "route[2].match",
            "starts with '/'",
        );
        assert_error(
            parse_with("[[route]]\npartition = \"slow\"\n"),
            "route[1].match",
            "missing",
        );
        assert_error(
            parse_with("[[route]]\nmatch = \"a\"\n"),
            "route[1].partition",
            "missing",
        );
        assert_error(
            parse_with("route = \"a\"\n"),
            "route",
            "expected an array of tables",
        );
        assert_error(
            parse_with("route = [1]\n"),
            "route[1]",
            "expected a table, found integer 1",
        );
    }

    #[test]
    fn mount_values_are_checked() {
        assert_error(
            parse_with("[mount]\nthreads = 0\n"),
            "mount.threads",
            "0 is out of range: expected an integer from 1 to 64",
        );
        assert_error(
            parse_with("[mount]\nthreads = 65\n"),
            "mount.threads",
            "65 is out of range",
        );
        assert_error(
            parse_with("[mount]\nthreads = \"4\"\n"),
            "mount.threads",
            "expected an integer, found string \"4\"",
        );
        assert_error(
            parse_with("[mount]\nallow_other = \"yes\"\n"),
            "mount.allow_other",
            "expected true or false",
        );
        assert_error(
            parse_with("[mount]\nttl_secs = -1\n"),
            "mount.ttl_secs",
            "-1 is out of range: expected an integer at least 0",
        );
        assert_error(
            parse_with("[mount]\npassthrough = 1\n"),
            "mount.passthrough",
            "found integer 1",
        );
        assert_error(
            parse_with("mount = []\n"),
            "mount",
            "expected a table, found an array",
        );
    }

    #[test]
    fn layout_values_are_checked() {
        assert_error(
            parse_with("[layout]\nkind = \"dovecot\"\n"),
            "layout.kind",
            "unknown layout \"dovecot\"",
        );
        assert_error(
            parse_with("[layout]\nkind = \"pattern\"\n"),
            "layout.pattern",
            "missing",
        );
        assert_error(
            parse_with("[layout]\nkind = \"pattern\"\npattern = \"{tenant}/**\"\n"),
            "layout.pattern",
            "must contain {mailbox}",
        );
        for (pattern, problem) in [
            ("{user}/{mailbox}", "segment \"{user}\" is not supported"),
            (
                "{tenant}x/{mailbox}",
                "segment \"{tenant}x\" is not supported",
            ),
            ("**/{mailbox}", "segment \"**\" is not supported"),
            ("{tenant}/{mailbox}/?", "segment \"?\" is not supported"),
            ("{mailbox}/{mailbox}", "repeats"),
            ("{mailbox}/{tenant}", "{tenant} must come before {mailbox}"),
        ] {
            let text = format!("[layout]\nkind = \"pattern\"\npattern = \"{pattern}\"\n");
            assert_error(parse_with(&text), "layout.pattern", problem);
        }
        assert_error(
            parse_with("[layout]\nkind = \"pattern\"\npattern = \"/{mailbox}\"\n"),
            "layout.pattern",
            "starts with '/'",
        );
        assert_error(
            parse_with("[layout]\npartition_depth = 1\n"),
            "layout.partition_depth",
            "only used with kind = \"cyrus\", but kind is \"none\"",
        );
        assert_error(
            parse_with("[layout]\nkind = \"cyrus\"\npattern = \"{mailbox}\"\n"),
            "layout.pattern",
            "only used with kind = \"pattern\"",
        );
        assert_error(
            parse_with("[layout]\nkind = \"cyrus\"\npartition_depth = -1\n"),
            "layout.partition_depth",
            "out of range",
        );
        assert_error(
            parse_with("[layout]\nkind = \"cyrus\"\ndefault_tenant = \"\"\n"),
            "layout.default_tenant",
            "must not be empty",
        );
    }

    #[test]
    fn quota_values_are_checked() {
        assert_error(
            parse_with("[quota]\nmailbox_limit = \"10X\"\n"),
            "quota.mailbox_limit",
            "unknown unit \"X\"",
        );
        assert_error(
            parse_with("[quota]\ntenant_limit = -5\n"),
            "quota.tenant_limit",
            "-5 is out of range",
        );
        assert_error(
            parse_with("[quota]\ntenant_limit = 1.5\n"),
            "quota.tenant_limit",
            "found float 1.5",
        );
        assert_error(
            parse_with("[quota]\nwarn_percent = 0\n"),
            "quota.warn_percent",
            "from 1 to 100",
        );
        assert_error(
            parse_with("[quota]\nwarn_percent = 101\n"),
            "quota.warn_percent",
            "101 is out of range",
        );
        assert_error(
            parse_with("[quota]\nmetadata_grace = \"none\"\n"),
            "quota.metadata_grace",
            "\"none\" is not allowed here",
        );
    }

    #[test]
    fn tenant_and_mailbox_values_are_checked() {
        assert_error(
            parse_with("[tenants.\"example.org\"]\nlimit = \"5Q\"\n"),
            "tenants.example.org.limit",
            "\"5Q\" has unknown unit \"Q\"",
        );
        assert_error(
            parse_with("[tenants]\n\"example.org\" = \"5G\"\n"),
            "tenants.example.org",
            "expected a table, found string \"5G\"",
        );
        assert_error(
            parse_with("[mailboxes.\"user/x\"]\n"),
            "mailboxes.user/x.limit",
            "missing",
        );
        assert_error(
            parse_with("[mailboxes.\"user/x\"]\nlimit = true\n"),
            "mailboxes.user/x.limit",
            "found boolean true",
        );
        assert_error(
            parse_with("[tenants.\"\"]\nlimit = 1\n"),
            "tenants.",
            "empty name",
        );
    }

    #[test]
    fn control_values_are_checked() {
        assert_error(
            parse_with("[control]\nadmin_uids = [1000, -1]\n"),
            "control.admin_uids",
            "item 2: -1 is out of range",
        );
        assert_error(
            parse_with("[control]\nadmin_uids = [4294967296]\n"),
            "control.admin_uids",
            "out of range",
        );
        assert_error(
            parse_with("[control]\nadmin_uids = 1000\n"),
            "control.admin_uids",
            "expected an array of uids",
        );
        assert_error(
            parse_with("[control]\nstate_dir = \"state\"\n"),
            "control.state_dir",
            "not an absolute path",
        );
    }

    #[test]
    fn dates_are_wrong_types_not_crashes() {
        assert_error(
            parse_with("[quota]\nmailbox_limit = 1979-05-27\n"),
            "quota.mailbox_limit",
            "found date-time 1979-05-27",
        );
    }

    #[test]
    fn load_reports_an_unreadable_file() {
        let error = Config::load(Path::new("/nonexistent/spoolfs.toml")).unwrap_err();
        assert_eq!(error.key, "(file)");
        assert_eq!(error.file, Path::new("/nonexistent/spoolfs.toml"));
        assert!(error.problem.contains("cannot read"), "{error}");
    }

    #[test]
    fn load_reads_and_parses_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spoolfs.toml");
        fs::write(&path, FULL_EXAMPLE).unwrap();
        let config = Config::load(&path).unwrap();
        assert_eq!(config.source, path);
        assert_eq!(config.routes.len(), 2);
    }

    #[test]
    fn builtin_config_matches_the_documented_default() {
        let config = Config::builtin(Path::new("/data"));
        assert_eq!(config.source, Path::new("<built-in>"));
        assert_eq!(
            config.partitions,
            vec![
                partition("fast", "/data/fast"),
                partition("slow", "/data/slow")
            ]
        );
        assert_eq!(config.default_partition, "fast");
        assert_eq!(config.routes, vec![route("archive/**", "slow")]);
        assert_eq!(
            config.layout,
            LayoutConfig::Cyrus {
                partition_depth: 1,
                default_tenant: None
            }
        );
        assert_eq!(config.quota, QuotaConfig::default());
        assert_eq!(config.control.state_dir, Path::new("/data/state"));
        assert!(config.control.admin_uids.is_empty());
    }

    #[test]
    fn parse_size_accepts_numbers_units_and_none() {
        assert_eq!(parse_size("none"), Ok(None));
        assert_eq!(parse_size("NONE"), Ok(None));
        assert_eq!(parse_size("0"), Ok(Some(0)));
        assert_eq!(parse_size("123"), Ok(Some(123)));
        assert_eq!(parse_size("123B"), Ok(Some(123)));
        assert_eq!(parse_size("1K"), Ok(Some(1024)));
        assert_eq!(parse_size("5M"), Ok(Some(5 * MIB)));
        assert_eq!(parse_size("2G"), Ok(Some(2 * GIB)));
        assert_eq!(parse_size("1T"), Ok(Some(1024 * GIB)));
        assert_eq!(parse_size("2g"), Ok(Some(2 * GIB)));
        assert_eq!(parse_size("2GB"), Ok(Some(2 * GIB)));
        assert_eq!(parse_size("2GiB"), Ok(Some(2 * GIB)));
        assert_eq!(parse_size("2gib"), Ok(Some(2 * GIB)));
        assert_eq!(parse_size(" 2 G "), Ok(Some(2 * GIB)));
        assert_eq!(parse_size("16777215T"), Ok(Some(16_777_215 * 1024 * GIB)));
    }

    #[test]
    fn parse_size_explains_bad_input() {
        let problem = |s: &str| parse_size(s).unwrap_err();
        assert!(problem("").contains("empty size"));
        assert!(problem("  ").contains("empty size"));
        assert!(problem("-1").contains("cannot be negative"));
        assert!(problem("10X").contains("unknown unit \"X\""));
        assert!(problem("10iB").contains("unknown unit"));
        assert!(problem("1.5G").contains("whole numbers"));
        assert!(problem("G").contains("expected a number"));
        assert!(problem("unlimited").contains("expected a number"));
        assert!(problem("16777216T").contains("too large"));
        assert!(problem("99999999999999999999").contains("too large"));
        assert_eq!(parse_size(&u64::MAX.to_string()), Ok(Some(u64::MAX)));
    }

    #[test]
    fn format_size_is_short_and_human() {
        assert_eq!(format_size(0), "0B");
        assert_eq!(format_size(1023), "1023B");
        assert_eq!(format_size(1024), "1.0K");
        assert_eq!(format_size(1536), "1.5K");
        assert_eq!(format_size(GIB), "1.0G");
        assert_eq!(format_size(5 * GIB), "5.0G");
        assert_eq!(format_size(MIB - 1), "1.0M");
        assert_eq!(format_size(u64::MAX), "16.0E");
    }

    #[test]
    fn describe_lists_everything_an_operator_checks() {
        let text = parse(FULL_EXAMPLE).unwrap().describe();
        for expected in [
            "configuration: /etc/spoolfs.toml",
            "  fast  /srv/ssd/spool  (default)",
            "  slow  /srv/hdd/spool",
            "  archive/** -> slow",
            "  mail/domain/*/example.com/** -> fast",
            "  (anything else) -> fast",
            "default partition: fast",
            "layout: cyrus (partition depth 2, default tenant example.net)",
            "mailbox limit 1.0G, tenant limit none, warn at 80%, metadata grace 2.0M",
            "  example.org: limit 5.0G, mailbox limit 2.0G",
            "  example.com: limit none, mailbox limit (quota default)",
            "  user/john@example.org: limit 1.0G",
            "mount: 8 threads, allow_other no, ttl 30s, passthrough no",
            "control: state dir /var/lib/spoolfs-test, admins: root and uids 1000, 1001",
        ] {
            assert!(
                text.contains(expected),
                "{expected:?} missing from:\n{text}"
            );
        }
        let archive = text.find("archive/**").unwrap();
        assert!(
            archive < text.find("mail/domain").unwrap(),
            "routes out of order"
        );
    }

    // --- check_filesystem --------------------------------------------------

    /// A config whose partitions are the given directories.
    fn config_with_partitions(paths: &[&Path]) -> Config {
        let mut config = Config::builtin(Path::new("/unused"));
        config.partitions = paths
            .iter()
            .enumerate()
            .map(|(i, path)| PartitionConfig {
                name: format!("p{i}"),
                path: path.to_path_buf(),
            })
            .collect();
        config.routes.clear();
        config.default_partition = "p0".to_string();
        config
    }

    fn make_dirs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
        names
            .iter()
            .map(|name| {
                let dir = root.join(name);
                fs::create_dir_all(&dir).unwrap();
                dir
            })
            .collect()
    }

    fn assert_fs_error(result: Result<(), ConfigError>, key: &str, words: &str) {
        let error = result.expect_err("expected a filesystem check error");
        assert_eq!(error.key, key, "wrong key in: {error}");
        assert!(error.problem.contains(words), "{words:?} not in: {error}");
    }

    #[test]
    fn check_filesystem_accepts_separate_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["fast", "slow", "mnt"]);
        let config = config_with_partitions(&[&dirs[0], &dirs[1]]);
        assert_eq!(config.check_filesystem(None), Ok(()));
        assert_eq!(config.check_filesystem(Some(&dirs[2])), Ok(()));
    }

    #[test]
    fn check_filesystem_rejects_a_missing_partition() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["fast"]);
        let config = config_with_partitions(&[&dirs[0], &tmp.path().join("gone")]);
        assert_fs_error(
            config.check_filesystem(None),
            "partitions.p1",
            "does not exist",
        );
    }

    #[test]
    fn check_filesystem_rejects_a_file_as_partition() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"x").unwrap();
        let config = config_with_partitions(&[&file]);
        assert_fs_error(
            config.check_filesystem(None),
            "partitions.p0",
            "is not a directory",
        );
    }

    #[test]
    fn check_filesystem_rejects_the_same_directory_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["fast"]);
        let alias = tmp.path().join("alias");
        std::os::unix::fs::symlink(&dirs[0], &alias).unwrap();
        let config = config_with_partitions(&[&dirs[0], &alias]);
        assert_fs_error(
            config.check_filesystem(None),
            "partitions.p1",
            "is the same directory as partition \"p0\"",
        );
    }

    #[test]
    fn check_filesystem_rejects_nested_partitions_either_way() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["outer", "outer/inner"]);
        let inner_second = config_with_partitions(&[&dirs[0], &dirs[1]]);
        assert_fs_error(
            inner_second.check_filesystem(None),
            "partitions.p1",
            "is inside partition \"p0\"",
        );
        let outer_second = config_with_partitions(&[&dirs[1], &dirs[0]]);
        assert_fs_error(
            outer_second.check_filesystem(None),
            "partitions.p1",
            "contains partition \"p0\"",
        );
    }

    #[test]
    fn check_filesystem_treats_sibling_prefixes_as_separate() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["spool", "spool2"]);
        let config = config_with_partitions(&[&dirs[0], &dirs[1]]);
        assert_eq!(config.check_filesystem(None), Ok(()));
    }

    #[test]
    fn check_filesystem_rejects_partitions_overlapping_the_mount_point() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["data", "data/mnt", "mnt", "mnt/part"]);
        let contains = config_with_partitions(&[&dirs[0]]);
        assert_fs_error(
            contains.check_filesystem(Some(&dirs[1])),
            "partitions.p0",
            "contains the mount point",
        );
        let inside = config_with_partitions(&[&dirs[3]]);
        assert_fs_error(
            inside.check_filesystem(Some(&dirs[2])),
            "partitions.p0",
            "is inside the mount point",
        );
        let same = config_with_partitions(&[&dirs[2]]);
        assert_fs_error(
            same.check_filesystem(Some(&dirs[2])),
            "partitions.p0",
            "is the same directory as the mount point",
        );
    }

    #[test]
    fn check_filesystem_rejects_a_state_dir_inside_the_mount_point() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = make_dirs(tmp.path(), &["part", "mnt"]);
        let mut config = config_with_partitions(&[&dirs[0]]);
        config.control.state_dir = dirs[1].join("state");
        assert_fs_error(
            config.check_filesystem(Some(&dirs[1])),
            "control.state_dir",
            "is inside the mount point",
        );
        config.control.state_dir = tmp.path().to_path_buf();
        assert_eq!(config.check_filesystem(Some(&dirs[1])), Ok(()));
    }
}
