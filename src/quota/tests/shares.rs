//! Cluster mode's side of the ledger, without etcd: growth is checked
//! against this host's share, nothing grows before registration, a write
//! short of share asks for more and waits (bounded), and a share never
//! drops below what is stored.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::*;

/// What the write path asked the agent for: (tenant, bytes).
type Asked = Arc<Mutex<Vec<(String, u64)>>>;

/// A ledger in cluster mode with a 1000-byte cluster limit on TENANT;
/// records what the write path asked the agent for.
fn clustered(dir: &Path, wait: Duration) -> (Arc<Ledger>, Asked) {
    let ledger = Arc::new(new_ledger(dir, None, None));
    let asked = Arc::new(Mutex::new(Vec::new()));
    let record = asked.clone();
    ledger.enable_shares(
        wait,
        Box::new(move |tenant: &str, bytes: u64| {
            record.lock().unwrap().push((tenant.to_string(), bytes));
        }),
    );
    ledger.set_cluster_limits(BTreeMap::from([(TENANT.to_string(), Some(1000))]));
    (ledger, asked)
}

#[test]
fn nothing_grows_before_registration_not_even_an_unlimited_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = clustered(dir.path(), Duration::ZERO);
    let other = id(&ledger, "user/bob@other.org");
    let refusal = ledger.reserve(&[other], 1, ChargeKind::Data).unwrap_err();
    assert!(refusal.share);
    ledger.shares_registered();
    ledger.reserve(&[other], 1, ChargeKind::Data).unwrap();
}

#[test]
fn growth_is_checked_against_the_share_and_the_refusal_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, asked) = clustered(dir.path(), Duration::ZERO);
    ledger.shares_registered();
    let john = id(&ledger, JOHN);
    assert_eq!(ledger.set_share(TENANT, 300), 300);
    ledger.reserve(&[john], 300, ChargeKind::Data).unwrap();
    let refusal = ledger.reserve(&[john], 1, ChargeKind::Data).unwrap_err();
    assert!(refusal.share && refusal.limit == 300, "{refusal:?}");
    assert!(
        refusal
            .to_string()
            .contains("share of the cluster limit held here 300")
    );
    // The report shows the cluster's limit, not the share.
    assert_eq!(ledger.effective_limit(&tenant(TENANT)), Some(1000));
    // No wait configured: refused at once, without asking.
    assert!(asked.lock().unwrap().is_empty());
}

#[test]
fn a_write_short_of_share_asks_waits_and_gets_it_when_the_share_grows() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, asked) = clustered(dir.path(), Duration::from_secs(10));
    ledger.shares_registered();
    let john = id(&ledger, JOHN);
    ledger.set_share(TENANT, 100);
    let granted = Arc::new(AtomicU64::new(0));
    let (l, g) = (ledger.clone(), granted.clone());
    let agent = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        g.store(1, Ordering::SeqCst);
        l.set_share(TENANT, 500);
    });
    ledger.reserve(&[john], 400, ChargeKind::Data).unwrap();
    assert_eq!(
        granted.load(Ordering::SeqCst),
        1,
        "served before the share grew"
    );
    agent.join().unwrap();
    assert_eq!(asked.lock().unwrap()[0], (TENANT.to_string(), 400));
}

#[test]
fn the_wait_is_bounded_then_edquot() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, asked) = clustered(dir.path(), Duration::from_millis(300));
    ledger.shares_registered();
    let john = id(&ledger, JOHN);
    let start = Instant::now();
    let refusal = ledger.reserve(&[john], 10, ChargeKind::Data).unwrap_err();
    let waited = start.elapsed();
    assert!(refusal.share);
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(5));
    assert!(!asked.lock().unwrap().is_empty());
}

#[test]
fn a_share_never_drops_below_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = clustered(dir.path(), Duration::ZERO);
    ledger.shares_registered();
    let john = id(&ledger, JOHN);
    ledger.set_share(TENANT, 500);
    ledger.reserve(&[john], 400, ChargeKind::Data).unwrap();
    assert_eq!(ledger.set_share(TENANT, 0), 400);
    assert!(ledger.reserve(&[john], 1, ChargeKind::Data).is_err());
    ledger.refund(&[john], 100);
    ledger.reserve(&[john], 100, ChargeKind::Data).unwrap();
}

#[test]
fn the_cluster_limit_wins_over_the_configuration_and_a_lowered_one_refuses_growth() {
    let dir = tempfile::tempdir().unwrap();
    let (ledger, _) = clustered(dir.path(), Duration::ZERO);
    ledger.shares_registered();
    let john = id(&ledger, JOHN);
    ledger.set_share(TENANT, 1000);
    ledger.reserve(&[john], 600, ChargeKind::Data).unwrap();
    ledger.set_cluster_limit(TENANT, Some(Some(500)));
    let refusal = ledger.reserve(&[john], 1, ChargeKind::Data).unwrap_err();
    assert!(!refusal.share && refusal.limit == 500, "{refusal:?}");
    assert_eq!(ledger.usage(&tenant(TENANT)), 600, "nothing deleted");
    // Removed from etcd: the configuration (here: none) applies.
    ledger.set_cluster_limit(TENANT, None);
    assert_eq!(ledger.effective_limit(&tenant(TENANT)), None);
    assert_eq!(ledger.local_tenant_limit(TENANT), None);
}
