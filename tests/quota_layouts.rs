//! Layouts and quota on a real mount: UUID mailboxes learning their owner
//! from `cyrus.header`, expunge within metadata grace, the pattern layout,
//! named layout variants.
//!
//! Split from the former `tests/quota.rs`; helpers in `tests/common/quota.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;

use common::quota::*;
use common::{Mount, Spec, backing_bytes, mkdirs, recount, used};

// --- UUID layout -----------------------------------------------------------------------

/// Cyrus copies a mailbox to another partition by writing `cyrus.header`
/// in place (no rename); `cp` copies with copy_file_range. Either way the
/// directory learns its owner from the written header, with or without a
/// RELEASE from the kernel.
#[test]
fn uuid_mailbox_learns_its_owner_from_a_header_written_in_place() {
    let m = cyrus("");
    let hdr = cyrus_header(
        "example.org!user.john",
        "ab12cd34-0000-4000-8000-0000000000aa",
    );
    let src = m.tmp.path().join("header-to-copy");
    fs::write(&src, &hdr).unwrap();
    for (n, how) in ["write", "copy"].into_iter().enumerate() {
        let id = format!("ab12cd34-0000-4000-8000-00000000000{n}");
        let dir = format!("mail/uuid/a/b/{id}");
        mkdirs(&m, &dir);
        put_n(&m, &format!("{dir}/1."), 10 * K, 1);
        let before = mb(&m, JOHN_MB);
        let header = m.path(&format!("{dir}/cyrus.header"));
        match how {
            "write" => {
                let mut f = File::create(&header).unwrap();
                f.write_all(&hdr).unwrap();
            }
            _ => {
                fs::copy(&src, &header).unwrap();
            }
        }
        assert_eq!(
            mb(&m, JOHN_MB),
            before + 10 * K + hdr.len() as u64,
            "{how}: the directory's files moved to user/john@example.org"
        );
    }
}

#[test]
fn uuid_mailbox_is_attributed_when_its_cyrus_header_lands() {
    let mut m = cyrus("");
    let id = "ab12cd34-0000-4000-8000-000000000001";
    let dir = format!("mail/uuid/a/b/{id}");
    mkdirs(&m, &dir);
    put_n(&m, &format!("{dir}/1."), 100 * K, 1);
    put_n(&m, &format!("{dir}/cyrus.index"), 4 * K, 2);
    assert_eq!(tn(&m, "example.org"), 0, "no owner before the header");
    // Cyrus: write cyrus.header.NEW, fsync, rename into place.
    let hdr = cyrus_header("example.org!user.john", id);
    let new = m.path(&format!("{dir}/cyrus.header.NEW"));
    let mut f = File::create(&new).unwrap();
    f.write_all(&hdr).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(tn(&m, "example.org"), 0);
    fs::rename(&new, m.path(&format!("{dir}/cyrus.header"))).unwrap();
    let total = 104 * K + hdr.len() as u64;
    assert_eq!(
        mb(&m, JOHN_MB),
        total,
        "the directory's files moved to user/john@example.org"
    );
    assert_eq!(tn(&m, "example.org"), total);
    assert_eq!(backing_bytes(&m, &dir), total);
    // From now on john's limit applies to the directory.
    let room = 256 * K - total;
    put_n(&m, &format!("{dir}/2."), room, 3);
    let mut f = File::create(m.path(&format!("{dir}/3."))).unwrap();
    assert_edquot(f.write(b"x"), "uuid mailbox at john's limit");
    drop(f);
    // Remembered across a restart (the scan reads the headers again).
    m.restart();
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{dir}/3.")))
        .unwrap();
    assert_edquot(
        f.write(b"x"),
        "uuid mailbox at john's limit after a restart",
    );
    drop(f);
    // Cyrus renames the mailbox (same directory, new header): usage follows.
    let hdr2 = cyrus_header("example.org!user.jane", id);
    fs::write(&new, &hdr2).unwrap();
    fs::rename(&new, m.path(&format!("{dir}/cyrus.header"))).unwrap();
    let total2 = 256 * K - hdr.len() as u64 + hdr2.len() as u64;
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, total2));
    assert_eq!(backing_bytes(&m, &dir), total2);
}

// --- UUID layout: the owner follows the header ------------------------------------

/// Cyrus's way: `cyrus.header.NEW` written, then renamed into place.
fn land_header(m: &Mount, dir: &str, owner: &str, id: &str) -> u64 {
    let hdr = cyrus_header(owner, id);
    fs::write(m.path(&format!("{dir}/cyrus.header.NEW")), &hdr).unwrap();
    fs::rename(
        m.path(&format!("{dir}/cyrus.header.NEW")),
        m.path(&format!("{dir}/cyrus.header")),
    )
    .unwrap();
    hdr.len() as u64
}

fn uuid_dir(id: &str) -> String {
    format!("mail/uuid/a/b/{id}")
}

#[test]
fn a_uuid_mailbox_that_loses_its_header_belongs_to_nobody() {
    let mut m = cyrus("");
    let (a, b) = (uuid_dir("ab000001"), uuid_dir("ab000002"));
    for d in [&a, &b] {
        mkdirs(&m, d);
        put_n(&m, &format!("{d}/1."), 10 * K, 1);
        land_header(&m, d, "example.org!user.john", "ab000001");
    }
    assert!(mb(&m, JOHN_MB) > 20 * K);
    // Cyrus deleting a mailbox: the header goes (unlinked, or renamed
    // away) before or after the messages; what is left is nobody's.
    fs::remove_file(m.path(&format!("{a}/cyrus.header"))).unwrap();
    fs::rename(
        m.path(&format!("{b}/cyrus.header")),
        m.path(&format!("{b}/cyrus.header.old")),
    )
    .unwrap();
    assert_eq!(mb(&m, JOHN_MB), 0, "no header, no owner");
    m.restart();
    assert_eq!(mb(&m, JOHN_MB), 0, "the rebuild agrees");
    // A directory made again at a removed one's path learns afresh.
    fs::remove_file(m.path(&format!("{a}/1."))).unwrap();
    land_header(&m, &a, "example.org!user.john", "ab000001");
    fs::remove_file(m.path(&format!("{a}/cyrus.header"))).unwrap();
    fs::remove_dir(m.path(&a)).unwrap();
    mkdirs(&m, &a);
    put_n(&m, &format!("{a}/1."), 700, 2);
    assert_eq!(mb(&m, JOHN_MB), 0, "files before the new header: nobody's");
}

#[test]
fn a_header_linked_or_exchanged_into_place_names_the_owner() {
    let mut m = cyrus("");
    let (a, b) = (uuid_dir("ab000003"), uuid_dir("ab000004"));
    mkdirs(&m, &a);
    put_n(&m, &format!("{a}/1."), 10 * K, 1);
    let hdr = cyrus_header("example.org!user.john", "ab000003");
    fs::write(m.path(&format!("{a}/cyrus.header.NEW")), &hdr).unwrap();
    fs::hard_link(
        m.path(&format!("{a}/cyrus.header.NEW")),
        m.path(&format!("{a}/cyrus.header")),
    )
    .unwrap();
    fs::remove_file(m.path(&format!("{a}/cyrus.header.NEW"))).unwrap();
    let john = 10 * K + hdr.len() as u64;
    assert_eq!(mb(&m, JOHN_MB), john, "a linked header is learned");
    mkdirs(&m, &b);
    put_n(&m, &format!("{b}/1."), 20 * K, 2);
    let jane = 20 * K + land_header(&m, &b, "example.org!user.jane", "ab000004");
    // The headers swap places: so do the directories' owners.
    exchange(
        &m.path(&format!("{a}/cyrus.header")),
        &m.path(&format!("{b}/cyrus.header")),
    );
    let (to_jane, to_john) = (10 * K + jane - 20 * K, 20 * K + john - 10 * K);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (to_john, to_jane));
    m.restart();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (to_john, to_jane));
}

fn exchange(a: &std::path::Path, b: &std::path::Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (ca, cb) = (c(a), c(b));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(
        r,
        0,
        "renameat2 exchange: {}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn a_uuid_mailbox_directory_takes_its_owner_where_it_moves() {
    let mut m = cyrus("");
    let (old, new) = (uuid_dir("ab000005"), uuid_dir("ab000006"));
    // john's directory once stood at `old`; it is gone.
    mkdirs(&m, &old);
    land_header(&m, &old, "example.org!user.john", "ab000005");
    fs::remove_file(m.path(&format!("{old}/cyrus.header"))).unwrap();
    fs::remove_dir(m.path(&old)).unwrap();
    // jane's directory is renamed to that path: still jane's.
    mkdirs(&m, &new);
    put_n(&m, &format!("{new}/1."), 10 * K, 1);
    let jane = 10 * K + land_header(&m, &new, "example.org!user.jane", "ab000006");
    fs::rename(m.path(&new), m.path(&old)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, jane));
    fs::remove_file(m.path(&format!("{old}/1."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, jane - 10 * K));
    m.restart();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, jane - 10 * K));
}

#[test]
fn a_uuid_mailbox_on_two_partitions_is_rebuilt_whole() {
    let mut m = cyrus("");
    let dir = uuid_dir("ab000007");
    mkdirs(&m, &dir);
    put_n(&m, &format!("{dir}/1."), 10 * K, 1);
    let john = 10 * K + land_header(&m, &dir, "example.org!user.john", "ab000007");
    // The operator routes UUID mailboxes to the other partition: new files
    // go there, the header stays where it was.
    let mut config = fs::read_to_string(&m.config).unwrap();
    config.push_str("\n[[route]]\nmatch = \"mail/uuid/**\"\npartition = \"slow\"\n");
    fs::write(&m.config, config).unwrap();
    m.restart();
    put_n(&m, &format!("{dir}/2."), 5 * K, 2);
    assert!(
        m.backing("slow", &format!("{dir}/2.")).exists(),
        "routed to slow"
    );
    assert_eq!(mb(&m, JOHN_MB), john + 5 * K);
    for _ in 0..3 {
        m.restart();
        assert_eq!(mb(&m, JOHN_MB), john + 5 * K, "both copies are john's");
    }
}

// --- expunge at a full mailbox -------------------------------------------------------

#[test]
fn a_full_mailbox_can_still_expunge_within_metadata_grace() {
    let m = boxes("", &[JOHN]);
    put_n(&m, &format!("{JOHN}/cyrus.index"), 8 * K, 1);
    put_n(&m, &format!("{JOHN}/cyrus.cache"), 8 * K, 2);
    for i in 1..=3 {
        put_n(&m, &format!("{JOHN}/{i}."), 80 * K, i as u8);
    }
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // Message data never gets grace.
    let mut f = File::create(m.path(&format!("{JOHN}/4."))).unwrap();
    assert_edquot(f.write(b"x"), "message file at the limit");
    drop(f);
    fs::remove_file(m.path(&format!("{JOHN}/4."))).unwrap();
    // Expunge: rewrite the index bigger via .NEW + rename, above the limit.
    let new = m.path(&format!("{JOHN}/cyrus.index.NEW"));
    let idx = pat(12 * K, 7);
    let mut f = File::create(&new).unwrap();
    f.write_all(&idx).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 268 * K, "metadata may exceed the limit");
    fs::rename(&new, m.path(&format!("{JOHN}/cyrus.index"))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 260 * K);
    assert_file(&m, &format!("{JOHN}/cyrus.index"), &idx);
    // cyrus.cache appended in place also within the grace.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/cyrus.cache")))
        .unwrap();
    f.write_all(&pat(8 * K, 8)).unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 268 * K);
    // Never beyond the grace (256K + 64K).
    let mut f = File::create(&new).unwrap();
    let r = f.write_all(&pat(60 * K, 9));
    assert_edquot(r, "metadata beyond the grace");
    drop(f);
    fs::remove_file(&new).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 268 * K);
    // Still no grace for messages; the expunged message frees room.
    let mut f = File::create(m.path(&format!("{JOHN}/5."))).unwrap();
    assert_edquot(f.write(b"x"), "message while over the limit by grace");
    drop(f);
    fs::remove_file(m.path(&format!("{JOHN}/5."))).unwrap();
    fs::remove_file(m.path(&format!("{JOHN}/2."))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 188 * K);
    put_n(&m, &format!("{JOHN}/6."), 68 * K, 10);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

#[test]
fn renaming_a_message_to_a_metadata_name_gets_no_grace_in_another_mailbox() {
    // A message moved into a full mailbox under a metadata-looking name is
    // still growth of that mailbox beyond its limit: grace applies only
    // within the grace amount, so 100K cannot go in.
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 256 * K, 1);
    put_n(&m, &format!("{JANE}/1."), 100 * K, 2);
    assert_edquot(
        fs::rename(
            m.path(&format!("{JANE}/1.")),
            m.path(&format!("{JOHN}/cyrus.index.NEW")),
        ),
        "100K via a .NEW name",
    );
    assert_matches_disk(&m);
}

// --- pattern layout -----------------------------------------------------------------------

#[test]
fn pattern_layout_limits_maildir_mailboxes() {
    let m = Spec::new(&["fast"])
        .extra(
            r#"
[layout]
kind = "pattern"
pattern = "{tenant}/{mailbox}/**"
[quota]
metadata_grace = "16K"
[tenants."example.org"]
limit = "200K"
[mailboxes."john@example.org"]
limit = "100K"
"#,
        )
        .mount();
    for d in [
        "example.org/john/Maildir/new",
        "example.org/john/Maildir/.Sent/cur",
        "example.org/jane/Maildir/cur",
    ] {
        mkdirs(&m, d);
    }
    put_n(
        &m,
        "example.org/john/Maildir/new/1.M1P1.host,S=61440",
        60 * K,
        1,
    );
    put_n(
        &m,
        "example.org/john/Maildir/.Sent/cur/2.M2P2.host:2,S",
        40 * K,
        2,
    );
    let u = m.usage();
    assert_eq!(used(&u, "mailboxes", "john@example.org"), 100 * K);
    let mut f = File::create(m.path("example.org/john/Maildir/new/3.x")).unwrap();
    assert_edquot(f.write(b"x"), "maildir mailbox at its limit");
    drop(f);
    // dovecot index files get the grace.
    put_n(&m, "example.org/john/Maildir/dovecot.index.log", 8 * K, 3);
    put_n(&m, "example.org/jane/Maildir/cur/1", 92 * K, 4);
    let mut f = File::create(m.path("example.org/jane/Maildir/cur/2")).unwrap();
    assert_edquot(f.write(b"x"), "tenant at its limit");
    drop(f);
    let u = m.usage();
    assert_eq!(
        used(&u, "tenants", "example.org"),
        recount(&m.backing("fast", "example.org"))
    );
    assert_eq!(used(&u, "mailboxes", "jane@example.org"), 92 * K);
}

#[test]
fn named_layout_variants_charge_the_same_mailbox() {
    // Unhashed and non-virtdomains paths (default tenant) are the same
    // mailbox as the hashed virtdomains path.
    let m = Spec::new(&["fast"])
        .extra(
            r#"
[layout]
kind = "cyrus"
default_tenant = "example.org"
[mailboxes."user/john@example.org"]
limit = "100K"
[mailboxes."user/john.doe@example.org"]
limit = "10K"
"#,
        )
        .mount();
    for d in [
        "mail/domain/e/example.org/j/user/john",
        "mail/domain/example.org/user/john/Sent",
        "mail/j/user/john/Drafts",
        "mail/j/user/john^doe",
    ] {
        mkdirs(&m, d);
    }
    put_n(&m, "mail/domain/e/example.org/j/user/john/1.", 40 * K, 1);
    put_n(&m, "mail/domain/example.org/user/john/Sent/1.", 40 * K, 2);
    put_n(&m, "mail/j/user/john/Drafts/1.", 20 * K, 3);
    assert_eq!(mb(&m, JOHN_MB), 100 * K);
    let mut f = File::create(m.path("mail/j/user/john/Drafts/2.")).unwrap();
    assert_edquot(f.write(b"x"), "john full through another path form");
    drop(f);
    // `^` on disk is a `.` in the name: a separate mailbox with its own limit.
    put_n(&m, "mail/j/user/john^doe/1.", 10 * K, 4);
    let mut f = File::create(m.path("mail/j/user/john^doe/2.")).unwrap();
    assert_edquot(f.write(b"x"), "user/john.doe at its limit");
    drop(f);
    assert_eq!(mb(&m, "user/john.doe@example.org"), 10 * K);
    assert_eq!(mb(&m, JOHN_MB), 100 * K);
}

#[test]
fn moving_mail_between_mailboxes_of_a_full_tenant_is_allowed() {
    // The tenant does not grow when a message (or a folder) moves between
    // two of its mailboxes, so a full tenant must not refuse it.
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    mkdirs(&m, &format!("{JANE}/Work"));
    put_n(&m, &format!("{JANE}/1."), 900 * K, 2);
    put_n(&m, &format!("{JANE}/Work/1."), 24 * K, 3);
    assert_eq!(tn(&m, "example.org"), 1024 * K);
    fs::rename(
        m.path(&format!("{JANE}/Work/1.")),
        m.path(&format!("{JOHN}/2.")),
    )
    .unwrap();
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), tn(&m, "example.org")),
        (124 * K, 900 * K, 1024 * K)
    );
    put_n(&m, &format!("{JANE}/Work/3."), 0, 0);
    fs::rename(
        m.path(&format!("{JANE}/Work")),
        m.path(&format!("{JOHN}/Work")),
    )
    .unwrap();
    assert_eq!(tn(&m, "example.org"), 1024 * K);
    // Still: john's own limit holds.
    assert_edquot(
        fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/3."))),
        "900K into john",
    );
    assert_matches_disk(&m);
}

/// Issue 14's reproduction without Dovecot: at the limit, a hard link
/// inside the mailbox (Dovecot's maildir COPY/MOVE to another folder)
/// works and costs nothing; a link into another mailbox is still charged
/// and refused when that mailbox is full; a remount counts the same.
#[test]
fn a_hard_link_inside_a_full_maildir_mailbox_costs_nothing() {
    let mut m = Spec::new(&["fast"])
        .extra(
            r#"
[layout]
kind = "pattern"
pattern = "{tenant}/{mailbox}/**"
[quota]
mailbox_limit = "64K"
"#,
        )
        .mount();
    let (cur, archive) = (
        "example.org/john/Maildir/cur",
        "example.org/john/Maildir/.Archive/cur",
    );
    for d in [cur, archive, "example.org/jane/Maildir/cur"] {
        mkdirs(&m, d);
    }
    put_n(&m, &format!("{cur}/1"), 64 * K, 1);
    let john = "john@example.org";
    assert_eq!(mb(&m, john), 64 * K);
    fs::hard_link(m.path(&format!("{cur}/1")), m.path(&format!("{archive}/1"))).unwrap();
    assert_eq!(mb(&m, john), 64 * K);
    put_n(&m, "example.org/jane/Maildir/cur/2", 10 * K, 2);
    assert_edquot(
        fs::hard_link(
            m.path(&format!("{cur}/1")),
            m.path("example.org/jane/Maildir/cur/1"),
        ),
        "a link into another full mailbox",
    );
    fs::remove_file(m.path(&format!("{cur}/1"))).unwrap();
    assert_eq!(mb(&m, john), 64 * K, "the Archive name still holds it");
    fs::hard_link(m.path(&format!("{archive}/1")), m.path(&format!("{cur}/1"))).unwrap();
    m.restart();
    assert_eq!(mb(&m, john), 64 * K);
    assert_eq!(mb(&m, john), backing_bytes(&m, "example.org/john"));
    assert_eq!(mb(&m, "jane@example.org"), 10 * K);
}

/// The rebuild at mount opens each directory only when it reads it: a
/// mailbox with more folders than the daemon has descriptors is counted
/// whole (it used to hold one per queued directory and skip the rest).
#[test]
fn the_rebuild_counts_more_folders_than_the_daemon_has_descriptors() {
    let mut m = cyrus("");
    for i in 0..600 {
        let dir = format!("{JOHN}/F{i}");
        mkdirs(&m, &dir);
        put_n(&m, &format!("{dir}/1."), 100, 1);
    }
    let john = mb(&m, JOHN_MB);
    assert_eq!(john, 600 * 100);
    m.nofile = Some(256);
    m.restart();
    assert_eq!(mb(&m, JOHN_MB), john, "with 256 descriptors");
}

/// Cyrus makes no dot-directory inside a mailbox and no directory inside a
/// UUID mailbox directory, and the layout charges such directories to
/// nobody: a mailbox's owner may not make one (it would hold data outside
/// every limit), by `mkdir` or by renaming a folder to it.
#[test]
fn a_mailbox_owner_cannot_make_a_directory_charged_to_nobody() {
    let m = cyrus("");
    mkdirs(&m, &format!("{JOHN}/Sub"));
    let eperm = |r: std::io::Result<()>, what: &str| {
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EPERM), "{what}");
    };
    eperm(
        fs::create_dir(m.path(&format!("{JOHN}/.hide"))),
        "dot-directory in a mailbox",
    );
    eperm(
        fs::create_dir(m.path(&format!("{JOHN}/Sub/.x"))),
        "dot-directory in a folder",
    );
    eperm(
        fs::rename(
            m.path(&format!("{JOHN}/Sub")),
            m.path(&format!("{JOHN}/.hide")),
        ),
        "folder renamed to a dot-directory",
    );
    let id = uuid_dir("ab000009");
    mkdirs(&m, &id);
    land_header(&m, &id, "example.org!user.john", "ab000009");
    eperm(
        fs::create_dir(m.path(&format!("{id}/sub"))),
        "directory in a UUID mailbox",
    );
    // Outside mailboxes dot-directories are made as anywhere.
    fs::create_dir(m.path("mail/.spare")).unwrap();
    assert!(m.path(&format!("{JOHN}/Sub")).is_dir(), "the folder stayed");
}
