//! Parsing: walk the TOML tree by hand, so every error names its exact key.

use super::*;

/// The keys allowed at the top level of the file.
pub(super) const TOP_LEVEL_KEYS: &[&str] = &[
    "default_partition",
    "partitions",
    "route",
    "mount",
    "layout",
    "quota",
    "tenants",
    "mailboxes",
    "control",
    "metrics",
    "cluster",
];

pub(super) fn parse_document(top: &Section) -> Result<Config, ConfigError> {
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
    .and_then(|config| parse_metrics(top).map(|_| config))
    .and_then(|config| parse_cluster(top).map(|_| config))
}

pub(super) fn syntax_error(text: &str, source: &Path, error: &toml::de::Error) -> ConfigError {
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
pub(super) fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line_start = before.rfind('\n').map_or(0, |newline| newline + 1);
    let line = before.matches('\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// Partitions keep their file order (the first one is the default default).
pub(super) fn parse_partitions(top: &Section) -> Result<Vec<PartitionConfig>, ConfigError> {
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

pub(super) fn parse_default_partition(
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

pub(super) fn check_partition_known(
    name: &str,
    partitions: &[PartitionConfig],
) -> Result<(), String> {
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
pub(super) fn parse_routes(
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

pub(super) fn parse_route(
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

pub(super) fn parse_mount(top: &Section) -> Result<MountConfig, ConfigError> {
    let section = top.section("mount")?;
    section.allow_only(&[
        "threads",
        "allow_other",
        "ttl_secs",
        "passthrough",
        "open_handles",
        "xattrs",
        "held_descriptors",
        "io_uring",
        "handoff",
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
        open_handles: section
            .value("open_handles", boolean)?
            .unwrap_or(defaults.open_handles),
        xattrs: section.value("xattrs", boolean)?.unwrap_or(defaults.xattrs),
        held_descriptors: section.value("held_descriptors", integer_in(0, i64::MAX))?,
        io_uring: section
            .value("io_uring", io_uring_mode)?
            .unwrap_or(defaults.io_uring),
        handoff: section
            .value("handoff", boolean)?
            .unwrap_or(defaults.handoff),
    })
}

/// Layout keys that belong to one `kind` only, with that kind.
pub(super) const LAYOUT_KIND_KEYS: &[(&str, &str)] = &[
    ("partition_depth", "cyrus"),
    ("default_tenant", "cyrus"),
    ("pattern", "pattern"),
];

pub(super) fn parse_layout(top: &Section) -> Result<LayoutConfig, ConfigError> {
    let section = top.section("layout")?;
    section.allow_only(&["kind", "partition_depth", "default_tenant", "pattern"])?;
    let kind = section
        .value("kind", string)?
        .unwrap_or_else(|| "none".to_string());
    check_layout_keys_fit_kind(&section, &kind)?;
    // `[quota] metadata_names` extends the layout's own metadata names.
    let quota = top.section("quota")?;
    let metadata_names = quota.value("metadata_names", metadata_globs)?;
    if kind == "none"
        && metadata_names
            .as_ref()
            .is_some_and(|names| !names.is_empty())
    {
        return Err(quota.error(
            "metadata_names",
            "has no effect with [layout] kind = \"none\" (nothing is charged to a mailbox); \
             set a layout kind or remove it",
        ));
    }
    let metadata_names = metadata_names.unwrap_or_default();
    match kind.as_str() {
        "none" => Ok(LayoutConfig::None),
        "cyrus" => Ok(LayoutConfig::Cyrus {
            partition_depth: section
                .value("partition_depth", integer_in(0, 16))?
                .unwrap_or(1),
            default_tenant: section.value("default_tenant", non_empty_string)?,
            metadata_names,
        }),
        "pattern" => Ok(LayoutConfig::Pattern {
            pattern: section.required("pattern", layout_pattern)?,
            metadata_names,
        }),
        _ => Err(section.error(
            "kind",
            format!("unknown layout {kind:?}; expected \"none\", \"cyrus\" or \"pattern\""),
        )),
    }
}

/// A key of another layout kind is almost certainly a mistake (a forgotten
/// or wrong `kind`), so it is an error rather than silently ignored.
pub(super) fn check_layout_keys_fit_kind(section: &Section, kind: &str) -> Result<(), ConfigError> {
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
pub(super) fn layout_pattern(value: &DeValue) -> Result<String, String> {
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
pub(super) fn unsupported_layout_segment<'s>(segments: &[&'s str]) -> Option<&'s str> {
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

pub(super) fn parse_quota(top: &Section) -> Result<QuotaConfig, ConfigError> {
    let section = top.section("quota")?;
    section.allow_only(&[
        "mailbox_limit",
        "tenant_limit",
        "warn_percent",
        "metadata_grace",
        "metadata_names", // kept with the layout: see parse_layout
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

pub(super) fn parse_tenants(top: &Section) -> Result<BTreeMap<String, TenantConfig>, ConfigError> {
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

pub(super) fn parse_mailboxes(
    top: &Section,
) -> Result<BTreeMap<String, MailboxConfig>, ConfigError> {
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

pub(super) fn parse_control(top: &Section) -> Result<ControlConfig, ConfigError> {
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

pub(super) fn parse_metrics(top: &Section) -> Result<MetricsConfig, ConfigError> {
    let section = top.section("metrics")?;
    section.allow_only(&["listen", "per_mailbox", "mailbox_percent"])?;
    let defaults = MetricsConfig::default();
    Ok(MetricsConfig {
        listen: section.value("listen", socket_address)?,
        per_mailbox: section
            .value("per_mailbox", boolean)?
            .unwrap_or(defaults.per_mailbox),
        mailbox_percent: section
            .value("mailbox_percent", integer_in(0, 100))?
            .unwrap_or(defaults.mailbox_percent),
    })
}

pub(super) fn require_name(section: &Section, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(section.error(name, "empty name"));
    }
    Ok(())
}

/// One TOML table being read, with its dotted key path so that every error
/// names the exact key, and an absent table reads as an empty one.
pub(super) struct Section<'a, 'i> {
    pub(super) table: Option<&'a DeTable<'i>>,
    /// Dotted key path of this table; empty at the top level.
    pub(super) path: String,
    pub(super) file: &'a Path,
}

impl<'a, 'i> Section<'a, 'i> {
    pub(super) fn top(table: &'a DeTable<'i>, file: &'a Path) -> Self {
        Section {
            table: Some(table),
            path: String::new(),
            file,
        }
    }

    pub(super) fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    pub(super) fn error(&self, name: &str, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            key: self.key(name),
            problem: problem.into(),
        }
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a DeValue<'i>> {
        self.table?.get(name).map(|value| value.get_ref())
    }

    /// Entries in file order. Without toml's `preserve_order` feature tables
    /// are sorted by key, but every key keeps its source span, so sorting by
    /// span restores the order the operator wrote.
    pub(super) fn entries(&self) -> Vec<(&'a str, &'a DeValue<'i>)> {
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

    pub(super) fn allow_only(&self, known: &[&str]) -> Result<(), ConfigError> {
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
    pub(super) fn value<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&DeValue<'i>) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        self.get(name)
            .map(|value| convert(value).map_err(|problem| self.error(name, problem)))
            .transpose()
    }

    pub(super) fn required<T>(
        &self,
        name: &str,
        convert: impl FnOnce(&DeValue<'i>) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        self.value(name, convert)?
            .ok_or_else(|| self.error(name, "missing (this key is required)"))
    }

    /// The sub-table `name`, empty if absent.
    pub(super) fn section(&self, name: &str) -> Result<Section<'a, 'i>, ConfigError> {
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
    pub(super) fn child(
        &self,
        name: &str,
        value: &'a DeValue<'i>,
    ) -> Result<Section<'a, 'i>, ConfigError> {
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
