//! Quota accounting through the filesystem core, without a kernel: every
//! path that grows, shrinks or moves usage (write, truncate, fallocate,
//! link, unlink, rename across mailboxes, exchange, directory renames),
//! each checked against a recount of the backing files. Each test runs in
//! milliseconds; `tests/quota_*.rs` check the same through a real mount.

mod common;

use common::corefs::errno;
use common::quota::{
    ARCHIVE, ARCHIVE_MB, JANE, JANE_MB, JOHN, JOHN_MB, K, STAGE, TENANT, assert_core_recount, core,
    p,
};

#[test]
fn write_up_to_the_limit_then_edquot_changing_nothing() {
    let c = core();
    c.put(&p(JOHN, "1."), 200 * K).unwrap();
    let f = c.create(&p(JOHN, "2.")).unwrap();
    assert_eq!(c.write(f, 0, 56 * K).unwrap(), 56 * K as u32);
    assert_eq!(errno(c.write(f, 56 * K, 1)), libc::EDQUOT);
    c.fs.release(f.1);
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    assert_core_recount(&c);
}

#[test]
fn truncate_up_is_checked_and_down_refunds() {
    let c = core();
    c.put(&p(JOHN, "1."), 100 * K).unwrap();
    assert_eq!(errno(c.truncate(&p(JOHN, "1."), 257 * K)), libc::EDQUOT);
    assert_eq!(c.mailbox(JOHN_MB), 100 * K);
    c.truncate(&p(JOHN, "1."), 256 * K).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    c.truncate(&p(JOHN, "1."), 10 * K).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 10 * K);
    assert_core_recount(&c);
}

#[test]
fn fallocate_is_checked_and_keep_size_stays_inside_the_file() {
    let c = core();
    let f = c.create(&p(JOHN, "1.")).unwrap();
    c.fs.fallocate(f.0, f.1, 0, 200 * K, 0).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 200 * K);
    assert_eq!(errno(c.fs.fallocate(f.0, f.1, 0, 300 * K, 0)), libc::EDQUOT);
    // Past the end, KEEP_SIZE would take disk no size shows: refused.
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(
        errno(c.fs.fallocate(f.0, f.1, 0, 300 * K, keep)),
        libc::EOPNOTSUPP
    );
    c.fs.fallocate(f.0, f.1, 0, 200 * K, keep).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 200 * K);
    c.fs.release(f.1);
    assert_core_recount(&c);
}

#[test]
fn stage_is_never_refused_and_a_link_charges_the_mailbox() {
    let c = core();
    c.put(&p(JOHN, "1."), 250 * K).unwrap();
    c.put(&p(STAGE, "msg"), 2 * 1024 * K).unwrap();
    assert_eq!(c.tenant(TENANT), 250 * K, "stage is charged to nobody");
    c.put(&p(STAGE, "small"), 10 * K).unwrap();
    assert_eq!(
        errno(c.link(&p(STAGE, "small"), &p(JOHN, "2."))),
        libc::EDQUOT
    );
    c.link(&p(STAGE, "small"), &p(JANE, "1.")).unwrap();
    assert_eq!(c.mailbox(JANE_MB), 10 * K);
    // Growth through any name charges every mailbox it is in.
    let f = c.open_rw(&p(STAGE, "small")).unwrap();
    c.write(f, 10 * K, K).unwrap();
    c.fs.release(f.1);
    assert_eq!(c.mailbox(JANE_MB), 11 * K);
    assert_core_recount(&c);
}

#[test]
fn unlink_refunds_each_name() {
    let c = core();
    c.put(&p(JOHN, "1."), 30 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JANE, "1.")).unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (30 * K, 30 * K));
    c.unlink(&p(JOHN, "1.")).unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (0, 30 * K));
    c.unlink(&p(JANE, "1.")).unwrap();
    assert_eq!(c.tenant(TENANT), 0);
    assert_core_recount(&c);
}

#[test]
fn rename_across_mailboxes_moves_usage_and_is_checked_on_net_growth() {
    let c = core();
    c.put(&p(JOHN, "1."), 50 * K).unwrap();
    c.put(&p(JANE, "1."), 250 * K).unwrap();
    assert_eq!(
        errno(c.rename(&p(JOHN, "1."), &p(JANE, "2."), 0)),
        libc::EDQUOT
    );
    // Replacing jane's bigger file nets a shrink: allowed.
    c.rename(&p(JOHN, "1."), &p(JANE, "1."), 0).unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (0, 50 * K));
    assert_core_recount(&c);
}

#[test]
fn exchange_across_mailboxes_swaps_usage() {
    let c = core();
    c.put(&p(JOHN, "1."), 10 * K).unwrap();
    c.put(&p(JANE, "1."), 30 * K).unwrap();
    c.rename(&p(JOHN, "1."), &p(JANE, "1."), libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (30 * K, 10 * K));
    assert_core_recount(&c);
}

#[test]
fn directory_rename_moves_the_subtree() {
    let c = core();
    c.mkdirs(&p(JOHN, "Sent/2024"));
    c.put(&p(JOHN, "Sent/1."), 20 * K).unwrap();
    c.put(&p(JOHN, "Sent/2024/1."), 30 * K).unwrap();
    c.rename(&p(JOHN, "Sent"), &p(JANE, "Sent"), 0).unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (0, 50 * K));
    c.put(&p(JOHN, "1."), 230 * K).unwrap();
    assert_eq!(
        errno(c.rename(&p(JANE, "Sent"), &p(JOHN, "Sent"), 0)),
        libc::EDQUOT
    );
    assert_core_recount(&c);
}

/// The backing rename fails after the subtree's transfer began (a directory
/// moved into its own subdirectory, which only the kernel would have
/// refused earlier): the transfer is undone, nothing stays held.
#[test]
fn a_directory_rename_failing_after_its_transfer_began_leaves_usage_exact() {
    let c = core();
    c.put(&p(JOHN, "1."), 100 * K).unwrap();
    c.put(&p(ARCHIVE, "1."), 5 * K).unwrap();
    c.mkdirs(&p(ARCHIVE, "y"));
    let into_itself = c.rename(JOHN, &p(ARCHIVE, "y/john"), 0);
    assert_eq!(errno(into_itself), libc::EINVAL);
    assert_eq!(c.mailbox(JOHN_MB), 100 * K);
    assert_core_recount(&c);
    // Nothing is held: john can still grow to exactly his limit.
    c.put(&p(JOHN, "2."), 156 * K).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    assert_core_recount(&c);
}

/// The same for `RENAME_EXCHANGE` with directories (where an error after
/// the transfer began used to return without ending it).
#[test]
fn a_directory_exchange_failing_after_its_transfer_began_leaves_usage_exact() {
    let c = core();
    c.put(&p(JOHN, "1."), 100 * K).unwrap();
    c.mkdirs(&p(ARCHIVE, "a"));
    c.put(&p(ARCHIVE, "a/1."), 7 * K).unwrap();
    let r = c.rename(JOHN, &p(ARCHIVE, "a"), libc::RENAME_EXCHANGE);
    assert_eq!(errno(r), libc::EINVAL);
    assert_eq!(
        (c.mailbox(JOHN_MB), c.mailbox(ARCHIVE_MB)),
        (100 * K, 7 * K)
    );
    assert_core_recount(&c);
    c.put(&p(JOHN, "2."), 156 * K).unwrap();
    assert_core_recount(&c);
}

#[test]
fn directory_exchange_across_mailboxes_swaps_the_subtrees() {
    let c = core();
    c.mkdirs(&p(JOHN, "A"));
    c.mkdirs(&p(JANE, "B"));
    c.put(&p(JOHN, "A/1."), 10 * K).unwrap();
    c.put(&p(JANE, "B/1."), 40 * K).unwrap();
    c.rename(&p(JOHN, "A"), &p(JANE, "B"), libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (40 * K, 10 * K));
    assert_core_recount(&c);
}

#[test]
fn a_restart_rebuilds_the_same_usage() {
    let mut c = core();
    c.put(&p(JOHN, "1."), 10 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JANE, "1.")).unwrap();
    c.put(&p(ARCHIVE, "1."), 3 * K).unwrap();
    let before = (c.mailbox(JOHN_MB), c.mailbox(JANE_MB), c.tenant(TENANT));
    c.restart();
    let after = (c.mailbox(JOHN_MB), c.mailbox(JANE_MB), c.tenant(TENANT));
    assert_eq!(before, after);
    // The link's two charges survive: growth charges both mailboxes.
    let f = c.open_rw(&p(JOHN, "1.")).unwrap();
    c.write(f, 10 * K, K).unwrap();
    c.fs.release(f.1);
    assert_eq!((c.mailbox(JOHN_MB), c.mailbox(JANE_MB)), (11 * K, 11 * K));
    assert_core_recount(&c);
}
