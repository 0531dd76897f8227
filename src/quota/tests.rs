//! Ledger tests through its public interface.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use super::*;
use crate::config::{
    ControlConfig, LayoutConfig, MailboxConfig, MountConfig, QuotaConfig, TenantConfig,
};

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
