//! The usage report: what `spoolfs usage` prints.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;

/// One partition of a mailbox, with the bytes of its folders recorded there
/// (a folder whose directory exists on several partitions counts where it
/// was last seen: the ledger keeps one partition per folder).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct PartitionUsage {
    pub name: String,
    pub bytes: u64,
}

pub(super) fn by_partition(bytes: &BTreeMap<&str, u64>) -> Vec<PartitionUsage> {
    bytes
        .iter()
        .map(|(name, bytes)| PartitionUsage {
            name: name.to_string(),
            bytes: *bytes,
        })
        .collect()
}

/// used / limit in percent with one decimal, for JSON; a zero limit is full.
pub(super) fn percent_value(used: u64, limit: Option<u64>) -> Option<f64> {
    limit.map(|limit| match limit {
        0 => 100.0,
        limit => (used as f64 * 1000.0 / limit as f64).round() / 10.0,
    })
}

/// A size for log lines and replies: `10 MiB` for whole units, `1.5 MiB`
/// otherwise, `512 B` below a KiB.
pub fn human_size(bytes: u64) -> String {
    let exact = (1..=6)
        .rev()
        .map(|power| (power, 1u64 << (10 * power)))
        .find(|&(_, unit)| bytes >= unit && bytes.is_multiple_of(unit));
    match exact {
        Some((power, unit)) => {
            let name = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"][power - 1];
            format!("{} {name}", bytes / unit)
        }
        None => human_bytes(bytes),
    }
}

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

pub(super) type Row = [String; 5];

pub(super) fn row(name: &str, used: u64, limit: Option<u64>, partition: Option<&str>) -> Row {
    [
        name.to_string(),
        human_bytes(used),
        limit.map_or_else(|| "none".to_string(), human_bytes),
        percent(used, limit),
        partition.unwrap_or("-").to_string(),
    ]
}

pub(super) fn render_table(kind: &str, rows: Vec<Row>) -> String {
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

pub(super) fn human_bytes(bytes: u64) -> String {
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

pub(super) fn percent(used: u64, limit: Option<u64>) -> String {
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

    #[test]
    fn sizes_read_as_operators_write_them() {
        assert_eq!(human_size(10 << 20), "10 MiB");
        assert_eq!(human_size(10240), "10 KiB");
        assert_eq!(human_size(5 << 30), "5 GiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(512), "512 B");
        assert_eq!(human_size(0), "0 B");
    }

    #[test]
    fn percent_has_one_decimal_and_none_without_a_limit() {
        assert_eq!(percent_value(8192, Some(10240)), Some(80.0));
        assert_eq!(percent_value(1, Some(3)), Some(33.3));
        assert_eq!(percent_value(5, Some(0)), Some(100.0));
        assert_eq!(percent_value(5, None), None);
    }
}
