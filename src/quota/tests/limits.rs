//! The ledger's limits: quota roots, run-time overrides and their file,
//! concurrency, reports and log lines.

use std::fs;
use std::sync::Arc;
use std::thread;

use super::{ARCHIVE, JANE, JOHN, TENANT, config, folder_ref, id, mailbox, new_ledger, tenant};
use crate::config::{MailboxConfig, TenantConfig};
use crate::quota::state::Account;
use crate::quota::{ChargeKind, LIMITS_FILE, Ledger, MailboxUsage, Refusal, Report, TenantUsage};

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
        r#"{"tenants":[{"name":"example.org","used":42,"limit":5000,"percent":0.8}],"#,
        r#""mailboxes":["#,
        r#"{"name":"user/jane@example.org","tenant":"example.org","used":0,"limit":1024,"partition":null,"percent":0.0,"partitions":[]},"#,
        r#"{"name":"user/john@example.org","tenant":"example.org","used":42,"limit":null,"partition":"fast","percent":null,"partitions":[{"name":"fast","bytes":42}]}"#,
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
    ledger.charge_unchecked(&[archive], 20);
    let report = ledger.report();
    assert_eq!(report.mailboxes[0].partition.as_deref(), Some("fast,slow"));
    let bytes: Vec<(&str, u64)> = report.mailboxes[0]
        .partitions
        .iter()
        .map(|p| (p.name.as_str(), p.bytes))
        .collect();
    assert_eq!(bytes, [("fast", 1), ("slow", 20)]);
}

#[test]
fn table_shows_human_sizes_and_percentages() {
    let report = Report {
        tenants: vec![TenantUsage {
            name: TENANT.into(),
            used: 1536,
            limit: None,
            percent: None,
        }],
        mailboxes: vec![MailboxUsage {
            name: JOHN.into(),
            tenant: Some(TENANT.into()),
            used: 512 * 1024 * 1024,
            limit: Some(1024 * 1024 * 1024),
            partition: Some("fast".into()),
            percent: Some(50.0),
            partitions: Vec::new(),
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
        share: false,
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
