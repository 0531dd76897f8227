//! Names and quota on a real mount: Cyrus delivery (`stage./`, then links
//! into mailboxes), renames across mailboxes and tenants, nested quota
//! roots.
//!
//! Split from the former `tests/quota.rs`; helpers in `tests/common/quota.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};

use common::quota::*;
use common::{backing_bytes, mkdirs, used};

// --- Cyrus delivery: stage./ then link into mailboxes ---------------------------

#[test]
fn stage_files_are_never_refused_and_charged_when_linked() {
    let m = boxes("", &[JOHN, JANE, BOB, STAGE]);
    // Bigger than john's limit and any room: the stage write never fails.
    let big = format!("{STAGE}/1234-1-0");
    put_n(&m, &big, 300 * K, 1);
    let u = m.usage();
    assert_eq!(
        used(&u, "tenants", "example.org"),
        0,
        "stage is charged to nobody"
    );
    assert!(
        u["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["used"] == 0),
        "stage charged to a mailbox: {u}"
    );
    // Linked into jane (no mailbox limit): charged there.
    fs::hard_link(m.path(&big), m.path(&format!("{JANE}/1."))).unwrap();
    assert_eq!(mb(&m, JANE_MB), 300 * K);
    // Into john: over his 256K, refused cleanly.
    assert_edquot(
        fs::hard_link(m.path(&big), m.path(&format!("{JOHN}/1."))),
        "link 300K into john",
    );
    assert!(!m.path(&format!("{JOHN}/1.")).exists());
    fs::remove_file(m.path(&big)).unwrap();
    assert_eq!(
        mb(&m, JANE_MB),
        300 * K,
        "unlinking the stage name changes no mailbox"
    );

    // One message delivered to three mailboxes.
    let msg = format!("{STAGE}/1234-2-0");
    let md = put_n(&m, &msg, 100 * K, 2);
    for d in [JOHN, JANE, BOB] {
        fs::hard_link(m.path(&msg), m.path(&format!("{d}/2."))).unwrap();
    }
    fs::remove_file(m.path(&msg)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 100 * K);
    assert_eq!(mb(&m, JANE_MB), 400 * K);
    assert_eq!(mb(&m, BOB_MB), 100 * K);
    assert_eq!(tn(&m, "example.org"), 600 * K);
    for d in [JOHN, JANE, BOB] {
        assert_file(&m, &format!("{d}/2."), &md);
    }
    assert_matches_disk(&m);

    // The next delivery fits bob and jane but takes the tenant past 1M at
    // the third link: that link alone is refused.
    let msg = format!("{STAGE}/1234-3-0");
    put_n(&m, &msg, 200 * K, 3);
    fs::hard_link(m.path(&msg), m.path(&format!("{BOB}/3."))).unwrap();
    fs::hard_link(m.path(&msg), m.path(&format!("{JANE}/3."))).unwrap();
    assert_edquot(
        fs::hard_link(m.path(&msg), m.path(&format!("{JOHN}/3."))),
        "third link over the tenant",
    );
    fs::remove_file(m.path(&msg)).unwrap();
    assert_eq!(tn(&m, "example.org"), 1000 * K);
    assert_matches_disk(&m);
}

#[test]
fn hard_links_across_mailboxes_are_charged_to_both() {
    let m = boxes("", &[JOHN, JANE]);
    let a = format!("{JOHN}/1.");
    let b = format!("{JANE}/1.");
    put_n(&m, &a, 10 * K, 1);
    fs::hard_link(m.path(&a), m.path(&b)).unwrap();
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), tn(&m, "example.org")),
        (10 * K, 10 * K, 20 * K)
    );
    // Growth through jane's name charges both names.
    let mut f = OpenOptions::new().append(true).open(m.path(&b)).unwrap();
    f.write_all(&pat(5 * K, 2)).unwrap();
    drop(f);
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), tn(&m, "example.org")),
        (15 * K, 15 * K, 30 * K)
    );
    assert_matches_disk(&m);
    // Fill john; growth through jane's name now exceeds john: refused.
    put_n(&m, &format!("{JOHN}/2."), 241 * K, 3);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let mut f = OpenOptions::new().append(true).open(m.path(&b)).unwrap();
    assert_edquot(
        f.write(b"x"),
        "growth through a name in a mailbox with room, other name's mailbox full",
    );
    drop(f);
    assert_eq!(fs::metadata(m.path(&b)).unwrap().len(), 15 * K);
    // Unlinking one name refunds only that mailbox.
    fs::remove_file(m.path(&a)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (241 * K, 15 * K));
    let mut f = OpenOptions::new().append(true).open(m.path(&b)).unwrap();
    f.write_all(b"x").unwrap();
    drop(f);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (241 * K, 15 * K + 1));
    assert_matches_disk(&m);
}

#[test]
fn hard_links_survive_forget_and_restart() {
    let mut m = boxes("", &[JOHN, JANE]);
    let a = format!("{JOHN}/1.");
    put_n(&m, &a, 10 * K, 1);
    fs::hard_link(m.path(&a), m.path(&format!("{JANE}/1."))).unwrap();
    m.restart();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (10 * K, 10 * K));
    // After the restart, growth through one name still charges both.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JANE}/1.")))
        .unwrap();
    f.write_all(&pat(6 * K, 2)).unwrap();
    drop(f);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (16 * K, 16 * K));
    // Drop the kernel's caches (forget), then shrink through the other name.
    fs::write("/proc/sys/vm/drop_caches", "2").ok();
    path_truncate(&m.path(&a), K).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (K, K));
    assert_matches_disk(&m);
}

// --- renames -----------------------------------------------------------------------

#[test]
fn rename_across_mailboxes_and_tenants_moves_usage() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    let a = format!("{JOHN}/1.");
    put_n(&m, &a, 30 * K, 1);
    // Within one mailbox: nothing moves.
    fs::rename(m.path(&a), m.path(&format!("{JOHN}/2."))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 30 * K);
    // Across mailboxes of one tenant.
    fs::rename(m.path(&format!("{JOHN}/2.")), m.path(&format!("{JANE}/2."))).unwrap();
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), tn(&m, "example.org")),
        (0, 30 * K, 30 * K)
    );
    // Across tenants.
    fs::rename(
        m.path(&format!("{JANE}/2.")),
        m.path(&format!("{ALICE}/2.")),
    )
    .unwrap();
    assert_eq!((mb(&m, JANE_MB), mb(&m, ALICE_MB)), (0, 30 * K));
    assert_eq!((tn(&m, "example.org"), tn(&m, "other.org")), (0, 30 * K));
    // Into stage (nobody) and back.
    mkdirs(&m, STAGE);
    fs::rename(
        m.path(&format!("{ALICE}/2.")),
        m.path(&format!("{STAGE}/x")),
    )
    .unwrap();
    assert_eq!(tn(&m, "other.org"), 0);
    fs::rename(m.path(&format!("{STAGE}/x")), m.path(&format!("{JOHN}/3."))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 30 * K);
    // Replacing a file in another mailbox: the replaced one is refunded.
    put_n(&m, &format!("{JANE}/4."), 50 * K, 2);
    fs::rename(m.path(&format!("{JOHN}/3.")), m.path(&format!("{JANE}/4."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 30 * K));
    assert_matches_disk(&m);
}

#[test]
fn rename_replacing_a_bigger_file_in_a_full_mailbox_is_allowed() {
    // Net change for john: -56K +10K. Nothing grows, so nothing is refused.
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    put_n(&m, &format!("{JOHN}/2."), 56 * K, 2);
    let jd = put_n(&m, &format!("{JANE}/1."), 10 * K, 3);
    fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/2."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (210 * K, 0));
    assert_file(&m, &format!("{JOHN}/2."), &jd);
    assert_matches_disk(&m);
}

#[test]
fn rename_exchange_across_mailboxes_swaps_usage() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 10 * K, 1);
    put_n(&m, &format!("{JANE}/1."), 30 * K, 2);
    let (p1, p2) = (
        cpath(&m.path(&format!("{JOHN}/1."))),
        cpath(&m.path(&format!("{JANE}/1."))),
    );
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            p1.as_ptr(),
            libc::AT_FDCWD,
            p2.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "renameat2 exchange: {}", io::Error::last_os_error());
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (30 * K, 10 * K));
    assert_matches_disk(&m);
}

#[test]
fn directory_rename_moves_the_subtree_usage() {
    let m = boxes("", &[JOHN, JANE]);
    let sent = format!("{JOHN}/Sent");
    mkdirs(&m, &format!("{sent}/2024"));
    put_n(&m, &format!("{sent}/1."), 20 * K, 1);
    put_n(&m, &format!("{sent}/2024/1."), 30 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 50 * K);
    fs::rename(m.path(&sent), m.path(&format!("{JANE}/Sent"))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 50 * K));
    // Growth in the moved folder now charges jane.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JANE}/Sent/1.")))
        .unwrap();
    f.write_all(&pat(K, 3)).unwrap();
    drop(f);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 51 * K));
    // Fill john to 230K: moving the 51K folder back would exceed: refused.
    put_n(&m, &format!("{JOHN}/1."), 230 * K, 4);
    assert_edquot(
        fs::rename(m.path(&format!("{JANE}/Sent")), m.path(&sent)),
        "directory rename into a full mailbox",
    );
    assert!(m.path(&format!("{JANE}/Sent/2024/1.")).exists());
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (230 * K, 51 * K));
    assert_matches_disk(&m);
}

// --- nested limits -------------------------------------------------------------------

#[test]
fn a_folder_with_its_own_limit_is_its_own_quota_root() {
    let m = cyrus(
        r#"
[mailboxes."user/john/Archive@example.org"]
limit = "64K"
"#,
    );
    let archive = format!("{JOHN}/Archive");
    let sent = format!("{JOHN}/Sent");
    for d in [JOHN, archive.as_str(), sent.as_str()] {
        mkdirs(&m, d);
    }
    put_n(&m, &format!("{archive}/1."), 64 * K, 1);
    let mut f = File::create(m.path(&format!("{archive}/2."))).unwrap();
    assert_edquot(
        f.write(b"x"),
        "Archive at its own 64K although john has room",
    );
    drop(f);
    put_n(&m, &format!("{sent}/1."), 100 * K, 2);
    put_n(&m, &format!("{JOHN}/1."), 156 * K, 3);
    let u = m.usage();
    assert_eq!(
        used(&u, "mailboxes", "user/john/Archive@example.org"),
        64 * K
    );
    assert_eq!(
        used(&u, "mailboxes", JOHN_MB),
        256 * K,
        "Sent counts in john, Archive does not"
    );
    assert_eq!(
        used(&u, "tenants", "example.org"),
        320 * K,
        "the tenant counts both"
    );
    let mut f = File::create(m.path(&format!("{sent}/2."))).unwrap();
    assert_edquot(f.write(b"x"), "Sent is part of john's full mailbox");
    drop(f);
    // Moving a message from the full Archive to Sent (john full): refused;
    // from Sent to Archive (Archive full): refused.
    assert_edquot(
        fs::rename(
            m.path(&format!("{archive}/1.")),
            m.path(&format!("{sent}/9.")),
        ),
        "into john",
    );
    assert_edquot(
        fs::rename(
            m.path(&format!("{sent}/1.")),
            m.path(&format!("{archive}/9.")),
        ),
        "into Archive",
    );
    assert_eq!(backing_bytes(&m, &archive), 64 * K);
    assert_eq!(
        backing_bytes(&m, JOHN) - backing_bytes(&m, &archive),
        256 * K
    );
}
