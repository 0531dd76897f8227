//! Ledger tests through its public interface.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{
    Config, ControlConfig, IoUringMode, LayoutConfig, Limit, MountConfig, QuotaConfig,
};
use crate::layout::FolderRef;
use crate::quota::{ChargeKind, FolderId, Ledger, Scope};

const JOHN: &str = "user/john@example.org";
const JANE: &str = "user/jane@example.org";
const ARCHIVE: &str = "user/john/Archive@example.org";
const TENANT: &str = "example.org";

mod limits;
mod shares;

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
            open_handles: true,
            xattrs: true,
            held_descriptors: None,
            io_uring: IoUringMode::Off,
            handoff: false,
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
    t.commit();
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
    t.commit();
    assert_eq!(ledger.usage(&mailbox(JOHN)), 950);
    // Credits only offset accounts the charges touch.
    let other = id(&ledger, "user/x@other.org");
    let t = ledger
        .begin_transfer(&[(other, 10)], &[(jane, 10)], ChargeKind::Data)
        .unwrap();
    t.commit();
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
    // The rename failed: dropping the transfer undoes it.
    drop(t);
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
fn a_move_within_a_tenant_or_a_mailbox_holds_no_room_twice() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = new_ledger(dir.path(), Some(1000), Some(2000));
    let (john, jane, archive) = (id(&ledger, JOHN), id(&ledger, JANE), id(&ledger, ARCHIVE));
    let bob = id(&ledger, "user/bob@example.org");
    ledger.reserve(&[jane], 900, ChargeKind::Data).unwrap();
    ledger.reserve(&[john], 600, ChargeKind::Data).unwrap();
    // 300 move from jane to john: the tenant counts them once (at john),
    // jane's mailbox keeps holding them until the move is done.
    let t = ledger
        .begin_transfer(&[(john, 300)], &[(jane, 300)], ChargeKind::Data)
        .unwrap();
    ledger.reserve(&[bob], 500, ChargeKind::Data).unwrap(); // 1500 + 500 = 2000
    let r = ledger.reserve(&[jane], 101, ChargeKind::Data).unwrap_err();
    assert_eq!(r.scope, mailbox(JANE), "jane: 600 + 300 held + 101 > 1000");
    t.commit();
    ledger.refund(&[bob], 500);
    // Between two folders of john's own mailbox: nothing is held at all.
    let t = ledger
        .begin_transfer(&[(archive, 200)], &[(john, 200)], ChargeKind::Data)
        .unwrap();
    ledger.reserve(&[john], 100, ChargeKind::Data).unwrap(); // 900 + 100 = 1000
    drop(t); // failed: undone, and nothing stays held
    assert_eq!(ledger.usage(&mailbox(JOHN)), 1000);
    ledger.refund(&[john], 100);
    ledger.reserve(&[john], 100, ChargeKind::Data).unwrap();
    assert_eq!(ledger.usage(&tenant(TENANT)), 1600);
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
