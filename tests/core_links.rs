//! Hard links and quota roots, through the core without a kernel: a file's
//! bytes count once per quota root (mailbox) however many names it has
//! there; a name in another mailbox charges that one. Kept exact through
//! link, unlink, rename in and out, directory renames and the rebuild at
//! mount (SEMANTICS.md, issue 14).

mod common;

use common::corefs::{Core, errno};
use common::quota::{
    ARCHIVE, ARCHIVE_MB, JANE, JANE_MB, JOHN, JOHN_MB, K, STAGE, TENANT, assert_core_recount, core,
    p,
};

/// `core()` with a Trash folder in john's mailbox.
fn core_with_trash() -> Core {
    let c = core();
    c.mkdirs(&p(JOHN, "Trash"));
    c
}

#[track_caller]
fn usage(c: &Core) -> (u64, u64, u64) {
    (
        c.mailbox(JOHN_MB),
        c.mailbox(JANE_MB),
        c.mailbox(ARCHIVE_MB),
    )
}

/// Dovecot's COPY/MOVE to Trash at the limit: a link inside the mailbox.
#[test]
fn a_link_inside_a_full_mailbox_costs_nothing() {
    let c = core_with_trash();
    c.put(&p(JOHN, "1."), 200 * K).unwrap();
    c.put(&p(JOHN, "2."), 56 * K).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    c.link(&p(JOHN, "1."), &p(JOHN, "Trash/1.")).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    // One name gone: nothing refunded while another name is in the root.
    c.unlink(&p(JOHN, "1.")).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    c.unlink(&p(JOHN, "Trash/1.")).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 56 * K);
    assert_core_recount(&c);
}

#[test]
fn a_link_into_another_mailbox_or_quota_root_charges_it() {
    let c = core_with_trash();
    c.put(&p(JOHN, "1."), 100 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JOHN, "Trash/1.")).unwrap();
    c.link(&p(JOHN, "1."), &p(ARCHIVE, "1.")).unwrap();
    c.link(&p(JOHN, "1."), &p(JANE, "1.")).unwrap();
    assert_eq!(usage(&c), (100 * K, 100 * K, 100 * K));
    assert_eq!(c.tenant(TENANT), 300 * K);
    // Growth through any name charges each root once.
    let f = c.open_rw(&p(JOHN, "Trash/1.")).unwrap();
    c.write(f, 100 * K, K).unwrap();
    c.fs.release(f.1);
    assert_eq!(usage(&c), (101 * K, 101 * K, 101 * K));
    // jane full: growth is refused for every name.
    c.put(&p(JANE, "2."), 155 * K).unwrap();
    let f = c.open_rw(&p(JOHN, "1.")).unwrap();
    assert_eq!(errno(c.write(f, 101 * K, K)), libc::EDQUOT);
    c.fs.release(f.1);
    assert_core_recount(&c);
}

#[test]
fn renames_in_and_out_keep_one_charge_per_root() {
    let c = core_with_trash();
    c.put(&p(JOHN, "1."), 40 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JOHN, "Trash/1.")).unwrap();
    // One of two names leaves for jane: john keeps it, jane gains it.
    c.rename(&p(JOHN, "1."), &p(JANE, "1."), 0).unwrap();
    assert_eq!(usage(&c), (40 * K, 40 * K, 0));
    assert_core_recount(&c);
    // The other leaves too: john is refunded.
    c.rename(&p(JOHN, "Trash/1."), &p(JANE, "1b."), 0).unwrap();
    assert_eq!(usage(&c), (0, 40 * K, 0));
    assert_core_recount(&c);
    // Back into john, where it has no name: charged again.
    c.rename(&p(JANE, "1b."), &p(JOHN, "1."), 0).unwrap();
    assert_eq!(usage(&c), (40 * K, 40 * K, 0));
    // Replacing one of its own names in jane's mailbox: jane keeps one.
    c.link(&p(JANE, "1."), &p(JANE, "1c.")).unwrap();
    c.put(&p(JOHN, "x."), K).unwrap();
    c.rename(&p(JOHN, "x."), &p(JANE, "1c."), 0).unwrap();
    assert_eq!(usage(&c), (40 * K, 41 * K, 0));
    assert_core_recount(&c);
}

#[test]
fn a_rename_into_a_root_where_the_file_is_already_needs_no_room() {
    let c = core_with_trash();
    c.put(&p(JANE, "1."), 100 * K).unwrap();
    c.link(&p(JANE, "1."), &p(JOHN, "1.")).unwrap();
    c.put(&p(JOHN, "2."), 156 * K).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 256 * K);
    // john is full, but the file is charged to him already.
    c.rename(&p(JANE, "1."), &p(JOHN, "Trash/1."), 0).unwrap();
    assert_eq!(usage(&c), (256 * K, 0, 0));
    // An exchange of two names of one file across mailboxes changes nothing.
    c.link(&p(JOHN, "1."), &p(JANE, "9.")).unwrap();
    c.rename(&p(JOHN, "1."), &p(JANE, "9."), libc::RENAME_EXCHANGE)
        .unwrap();
    assert_eq!(usage(&c), (256 * K, 100 * K, 0));
    assert_core_recount(&c);
}

#[test]
fn directory_renames_move_each_root_once() {
    let c = core_with_trash();
    c.mkdirs(&p(JOHN, "Sent"));
    c.put(&p(JOHN, "Sent/1."), 30 * K).unwrap();
    c.link(&p(JOHN, "Sent/1."), &p(JOHN, "Sent/2.")).unwrap();
    c.link(&p(JOHN, "Sent/1."), &p(JOHN, "1.")).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 30 * K);
    // Sent (two names) moves to jane; john keeps the third name.
    c.rename(&p(JOHN, "Sent"), &p(JANE, "Sent"), 0).unwrap();
    assert_eq!(usage(&c), (30 * K, 30 * K, 0));
    assert_core_recount(&c);
    // Back again: john has all three names, charged once; jane nothing.
    c.rename(&p(JANE, "Sent"), &p(JOHN, "Sent"), 0).unwrap();
    assert_eq!(usage(&c), (30 * K, 0, 0));
    assert_core_recount(&c);
}

#[test]
fn the_rebuild_at_mount_charges_each_root_once() {
    let mut c = core_with_trash();
    c.put(&p(JOHN, "1."), 20 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JOHN, "Trash/1.")).unwrap();
    c.link(&p(JOHN, "1."), &p(JANE, "1.")).unwrap();
    c.link(&p(JOHN, "1."), &p(JANE, "2.")).unwrap();
    c.put(&p(JOHN, "2."), 5 * K).unwrap();
    // A file with a second name outside any mailbox (Cyrus's stage./).
    c.mkdirs(STAGE);
    c.put(&p(STAGE, "3"), 3 * K).unwrap();
    c.link(&p(STAGE, "3"), &p(JANE, "3.")).unwrap();
    let before = (usage(&c), c.tenant(TENANT));
    assert_eq!(before, ((25 * K, 23 * K, 0), 48 * K));
    c.restart();
    assert_eq!((usage(&c), c.tenant(TENANT)), before);
    // And stays exact afterwards.
    c.unlink(&p(JANE, "1.")).unwrap();
    assert_eq!(usage(&c), (25 * K, 23 * K, 0));
    c.unlink(&p(JANE, "2.")).unwrap();
    assert_eq!(usage(&c), (25 * K, 3 * K, 0));
    assert_core_recount(&c);
}

#[test]
fn a_run_time_limit_making_a_folder_its_own_root_recounts_links() {
    use spoolfs::quota::Scope;
    let c = core_with_trash();
    c.put(&p(JOHN, "1."), 10 * K).unwrap();
    c.link(&p(JOHN, "1."), &p(JOHN, "Trash/1.")).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 10 * K);
    let trash = Scope::Mailbox("user/john/Trash@example.org".into());
    c.fs.ledger.set_limit(&trash, Some(Some(K * K))).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 10 * K);
    assert_eq!(c.mailbox("user/john/Trash@example.org"), 10 * K);
    c.fs.ledger.set_limit(&trash, None).unwrap();
    assert_eq!(c.mailbox(JOHN_MB), 10 * K);
    assert_eq!(c.tenant(TENANT), 10 * K);
}
