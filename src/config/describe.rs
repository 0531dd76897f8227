//! What `spoolfs check` prints.

use super::*;

impl Config {
    pub(super) fn describe_partitions(&self) -> Vec<String> {
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

    pub(super) fn describe_routes(&self) -> Vec<String> {
        let mut lines = vec!["routes (first match wins):".to_string()];
        for route in &self.routes {
            lines.push(format!("  {} -> {}", route.pattern, route.partition));
        }
        lines.push(format!("  (anything else) -> {}", self.default_partition));
        lines
    }

    pub(super) fn describe_tenants(&self) -> Vec<String> {
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

    pub(super) fn describe_mailboxes(&self) -> Vec<String> {
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

pub(super) fn describe_override(limit: Option<Limit>) -> String {
    limit.map_or_else(|| "(quota default)".to_string(), format_limit)
}

pub(super) fn describe_layout(layout: &LayoutConfig) -> String {
    match layout {
        LayoutConfig::None => "none (usage is not attributed to mailboxes)".to_string(),
        LayoutConfig::Cyrus {
            partition_depth,
            default_tenant,
            ..
        } => format!(
            "cyrus (partition depth {partition_depth}, default tenant {}); {}",
            default_tenant.as_deref().unwrap_or("none"),
            describe_metadata_names(layout)
        ),
        LayoutConfig::Pattern { pattern, .. } => {
            format!("pattern {pattern}; {}", describe_metadata_names(layout))
        }
    }
}

/// `metadata files (grace): cyrus.*, *.NEW, plus configured: x.idx`.
fn describe_metadata_names(layout: &LayoutConfig) -> String {
    let builtin = crate::layout::Layout::builtin_metadata_names(layout).join(", ");
    match layout.metadata_names() {
        [] => format!("metadata files (grace): {builtin}"),
        extra => format!(
            "metadata files (grace): {builtin}, plus configured: {}",
            extra.join(", ")
        ),
    }
}

pub(super) fn describe_quota(quota: &QuotaConfig) -> String {
    format!(
        "quota defaults: mailbox limit {}, tenant limit {}, warn at {}%, metadata grace {}",
        format_limit(quota.mailbox_limit),
        format_limit(quota.tenant_limit),
        quota.warn_percent,
        format_size(quota.metadata_grace)
    )
}

pub(super) fn describe_mount(mount: &MountConfig) -> String {
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    format!(
        "mount: {} threads, allow_other {}, ttl {}s, passthrough {}, open handles {}, xattrs {}, io_uring {}, handoff {}, held descriptors {}",
        mount.threads,
        yes_no(mount.allow_other),
        mount.ttl_secs,
        yes_no(mount.passthrough),
        yes_no(mount.open_handles),
        yes_no(mount.xattrs),
        mount.io_uring.name(),
        yes_no(mount.handoff),
        mount
            .held_descriptors
            .map_or("half the fd limit".to_string(), |n| n.to_string())
    )
}

pub(super) fn describe_control(control: &ControlConfig) -> String {
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

pub(super) fn describe_metrics(metrics: &MetricsConfig) -> String {
    let Some(listen) = metrics.listen else {
        return "metrics: off".to_string();
    };
    let mailboxes = if metrics.per_mailbox {
        "every mailbox".to_string()
    } else {
        format!(
            "mailboxes at {}% of their limit or more",
            metrics.mailbox_percent
        )
    };
    format!("metrics: http://{listen}/metrics, series for {mailboxes}")
}
