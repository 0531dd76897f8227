//! Issue 3: per-mailbox and per-tenant byte limits, enforced at write time,
//! checked on a real mount. Every test compares the daemon's usage report
//! with a recount of the backing files, so accounting drift fails loudly.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::{Mount, Spec, backing_bytes, mkdirs, recount, used};
use serde_json::Value;

const K: u64 = 1024;

/// Cyrus named layout, virtdomains + hashimapspool, partition dir `mail`.
const JOHN: &str = "mail/domain/e/example.org/j/user/john";
const JANE: &str = "mail/domain/e/example.org/j/user/jane";
const BOB: &str = "mail/domain/e/example.org/b/user/bob";
const ALICE: &str = "mail/domain/o/other.org/a/user/alice";
const EXAMPLE: &str = "mail/domain/e/example.org";
const OTHER: &str = "mail/domain/o/other.org";
const STAGE: &str = "mail/stage.";

const JOHN_MB: &str = "user/john@example.org";
const JANE_MB: &str = "user/jane@example.org";
const BOB_MB: &str = "user/bob@example.org";
const ALICE_MB: &str = "user/alice@other.org";

const BASE: &str = r#"
[layout]
kind = "cyrus"
[quota]
metadata_grace = "64K"
[tenants."example.org"]
limit = "1M"
[tenants."other.org"]
limit = "512K"
[mailboxes."user/john@example.org"]
limit = "256K"
"#;

fn cyrus(extra: &str) -> Mount {
    Spec::new(&["fast", "slow"])
        .extra(BASE)
        .extra(extra)
        .mount()
}

/// `cyrus(extra)` with the given mailbox directories made.
fn boxes(extra: &str, dirs: &[&str]) -> Mount {
    let m = cyrus(extra);
    for d in dirs {
        mkdirs(&m, d);
    }
    m
}

/// `quota` lines go into BASE's `[quota]`; `control` is a whole section
/// (with `state_dir`, which the harness then does not add).
fn cyrus_with(quota: &str, control: &str) -> Mount {
    let base = BASE.replace("[quota]\n", &format!("[quota]\n{quota}"));
    let spec = Spec::new(&["fast", "slow"]).extra(&base);
    if control.is_empty() {
        return spec.mount();
    }
    // The harness's temp dir is made inside mount(); use a fixed state dir.
    let state = tempfile::tempdir().unwrap().keep();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&state, fs::Permissions::from_mode(0o755)).unwrap();
    spec.extra(&format!("{control}state_dir = \"{}\"\n", state.display()))
        .mount()
}

// --- helpers -----------------------------------------------------------------

/// Deterministic, position-dependent bytes, so content checks catch shifts.
fn pat(n: u64, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn put(m: &Mount, rel: &str, data: &[u8]) {
    fs::write(m.path(rel), data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
}

fn put_n(m: &Mount, rel: &str, n: u64, seed: u8) -> Vec<u8> {
    let d = pat(n, seed);
    put(m, rel, &d);
    d
}

#[track_caller]
fn assert_edquot<T: std::fmt::Debug>(r: io::Result<T>, what: &str) {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => {}
        other => panic!("{what}: expected EDQUOT, got {other:?}"),
    }
}

fn entry<'a>(u: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    u[list]
        .as_array()
        .expect(list)
        .iter()
        .find(|e| e["name"] == name)
}

fn mb(m: &Mount, name: &str) -> u64 {
    used(&m.usage(), "mailboxes", name)
}

fn tn(m: &Mount, name: &str) -> u64 {
    used(&m.usage(), "tenants", name)
}

/// Usage of the three example.org mailboxes and the two tenants equals the
/// recount of their backing directories.
#[track_caller]
fn assert_matches_disk(m: &Mount) {
    let u = m.usage();
    for (dir, name) in [(JANE, JANE_MB), (BOB, BOB_MB), (ALICE, ALICE_MB)] {
        assert_eq!(
            used(&u, "mailboxes", name),
            backing_bytes(m, dir),
            "{name} vs disk"
        );
    }
    // john's mailbox may have sub-roots (nested test); compare john only
    // when there is no separately limited Archive.
    if entry(&u, "mailboxes", "user/john/Archive@example.org").is_none() {
        assert_eq!(
            used(&u, "mailboxes", JOHN_MB),
            backing_bytes(m, JOHN),
            "{JOHN_MB} vs disk"
        );
    }
    assert_eq!(
        used(&u, "tenants", "example.org"),
        backing_bytes(m, EXAMPLE),
        "example.org vs disk"
    );
    assert_eq!(
        used(&u, "tenants", "other.org"),
        backing_bytes(m, OTHER),
        "other.org vs disk"
    );
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn copy_range(fin: &File, off_in: u64, fout: &File, off_out: u64, len: u64) -> io::Result<usize> {
    let (mut oi, mut oo) = (off_in as i64, off_out as i64);
    let r = unsafe {
        libc::copy_file_range(
            fin.as_raw_fd(),
            &mut oi,
            fout.as_raw_fd(),
            &mut oo,
            len as usize,
            0,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

fn path_truncate(p: &Path, len: u64) -> io::Result<()> {
    let r = unsafe { libc::truncate(cpath(p).as_ptr(), len as i64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn read_all(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The size and content seen through the mount and on the backing file.
#[track_caller]
fn assert_file(m: &Mount, rel: &str, want: &[u8]) {
    let got = read_all(&m.path(rel));
    assert_eq!(got.len(), want.len(), "{rel}: size through the mount");
    assert!(got == want, "{rel}: content through the mount changed");
    assert_eq!(
        fs::metadata(m.path(rel)).unwrap().len(),
        want.len() as u64,
        "{rel}: st_size"
    );
    let back = read_all(&m.backing("fast", rel));
    assert!(back == want, "{rel}: backing content changed");
}

/// A `cyrus.header` as Cyrus 3.6 `mailbox_commit_header` writes it.
fn cyrus_header(internal_name: &str, uniqueid: &str) -> Vec<u8> {
    let mut b = vec![0xa1u8, 0x02, 0x8b, 0x0d];
    b.extend_from_slice(b"Cyrus mailbox header\n");
    b.extend_from_slice(b"\"The best thing about this system was that it had lots of goals.\"\n");
    b.extend_from_slice(b"\t--Jim Morris on Andrew\n");
    b.extend_from_slice(
        format!("%(T e N {internal_name} I {uniqueid} A %(john lrswipkxtecdan) U ($Forwarded))\n")
            .as_bytes(),
    );
    b
}

fn edquot_lines(m: &Mount) -> Vec<String> {
    m.log_text()
        .lines()
        .filter(|l| l.contains("EDQUOT"))
        .map(str::to_string)
        .collect()
}

// --- the exact boundary -------------------------------------------------------

#[test]
fn write_to_exactly_the_limit_succeeds_one_byte_more_fails_unchanged() {
    let m = boxes("", &[JOHN]);
    let f1 = format!("{JOHN}/1.");
    let data = put_n(&m, &f1, 256 * K, 1);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);

    // One byte more, appended to the full file: refused, file unchanged.
    let mut f = OpenOptions::new().append(true).open(m.path(&f1)).unwrap();
    assert_edquot(f.write(b"x"), "append one byte at the limit");
    drop(f);
    assert_file(&m, &f1, &data);
    // Overwriting in place does not grow: allowed.
    let mut f = OpenOptions::new().write(true).open(m.path(&f1)).unwrap();
    f.write_all(&pat(4 * K, 9)).unwrap();
    drop(f);
    let mut data = data;
    data[..4 * K as usize].copy_from_slice(&pat(4 * K, 9));
    assert_file(&m, &f1, &data);
    // A write at the last byte does not grow either; one past it does.
    let mut f = OpenOptions::new().write(true).open(m.path(&f1)).unwrap();
    f.seek(SeekFrom::Start(256 * K - 1)).unwrap();
    f.write_all(b"z").unwrap();
    data[256 * K as usize - 1] = b'z';
    assert_edquot(f.write(b"y"), "write one byte past the end at the limit");
    drop(f);
    assert_file(&m, &f1, &data);

    // A new file: the create (0 bytes) is fine, its first byte is not.
    let f2 = format!("{JOHN}/2.");
    let mut f = File::create(m.path(&f2)).unwrap();
    assert_edquot(f.write(b"y"), "first byte of a new message at the limit");
    drop(f);
    assert_eq!(fs::metadata(m.path(&f2)).unwrap().len(), 0);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_eq!(tn(&m, "example.org"), 256 * K);
    assert_matches_disk(&m);
}

#[test]
fn refused_large_write_keeps_previous_content_and_usage() {
    let m = boxes("", &[JOHN]);
    let f1 = format!("{JOHN}/1.");
    let data = put_n(&m, &f1, 100 * K, 3);
    // 200K more does not fit (156K room): whatever the kernel splits it
    // into, the call fails and nothing past the limit is written.
    let mut f = OpenOptions::new().append(true).open(m.path(&f1)).unwrap();
    let r = f.write_all(&pat(200 * K, 4));
    assert_edquot(r, "200K append with 156K room");
    drop(f);
    let size = fs::metadata(m.path(&f1)).unwrap().len();
    assert!(size <= 256 * K, "file grew past the limit: {size}");
    assert_eq!(
        read_all(&m.path(&f1))[..100 * K as usize],
        data[..],
        "old content kept"
    );
    assert_eq!(mb(&m, JOHN_MB), size);
    assert_matches_disk(&m);
}

// --- mailbox vs tenant ----------------------------------------------------------

#[test]
fn tenant_limit_caps_the_sum_of_its_mailboxes() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    // jane has no mailbox limit: only the tenant's remaining 824K.
    let jane1 = format!("{JANE}/1.");
    let jd = put_n(&m, &jane1, 824 * K, 2);
    assert_eq!(tn(&m, "example.org"), 1024 * K);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&jane1))
        .unwrap();
    assert_edquot(f.write(b"x"), "jane: tenant full");
    drop(f);
    assert_file(&m, &jane1, &jd);
    // john still has 56K of mailbox room, but the tenant has none.
    let mut f = File::create(m.path(&format!("{JOHN}/2."))).unwrap();
    assert_edquot(
        f.write(b"x"),
        "john: tenant full although the mailbox is not",
    );
    drop(f);
    // Another tenant is not affected; its own limit applies.
    put_n(&m, &format!("{ALICE}/1."), 512 * K, 5);
    let mut f = File::create(m.path(&format!("{ALICE}/2."))).unwrap();
    assert_edquot(f.write(b"x"), "other.org full");
    drop(f);
    // Freeing jane's space makes room for john again.
    fs::remove_file(m.path(&jane1)).unwrap();
    put_n(&m, &format!("{JOHN}/2."), 56 * K, 6);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

// --- every growth operation --------------------------------------------------------

#[test]
fn every_growth_operation_is_refused_and_changes_nothing() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    let (a, b) = (format!("{JOHN}/1."), format!("{JOHN}/2."));
    let ad = put_n(&m, &a, 200 * K, 1);
    let bd = put_n(&m, &b, 56 * K, 2);
    let jane1 = format!("{JANE}/1.");
    let jd = put_n(&m, &jane1, 10 * K, 3);
    let alice1 = format!("{ALICE}/1.");
    let ald = put_n(&m, &alice1, 10 * K, 4);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let before = m.usage();
    let unchanged = |what: &str| {
        assert_eq!(m.usage(), before, "usage changed by refused {what}");
        assert_file(&m, &a, &ad);
        assert_file(&m, &b, &bd);
        assert_file(&m, &jane1, &jd);
        assert_file(&m, &alice1, &ald);
        assert_matches_disk(&m);
    };

    let fb = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(&b))
        .unwrap();
    // write
    assert_edquot((&fb).write_at_end(b"x"), "write");
    unchanged("write");
    // ftruncate up
    assert_edquot(fb.set_len(56 * K + 1), "ftruncate up");
    unchanged("ftruncate");
    // truncate(2) by path up
    assert_edquot(path_truncate(&m.path(&b), 100 * K), "truncate up");
    unchanged("truncate");
    // fallocate growing the size
    assert_edquot(fallocate(&fb, 0, 0, 57 * K), "fallocate");
    unchanged("fallocate");
    assert_edquot(
        fallocate(&fb, libc::FALLOC_FL_ZERO_RANGE, 56 * K, 4 * K),
        "fallocate zero range",
    );
    unchanged("fallocate zero range");
    // fallocate KEEP_SIZE does not change st_size: allowed, usage unchanged.
    fallocate(&fb, libc::FALLOC_FL_KEEP_SIZE, 0, 64 * K).unwrap();
    unchanged("fallocate keep_size");
    // copy_file_range past the end
    let fa = File::open(m.path(&a)).unwrap();
    assert_edquot(copy_range(&fa, 0, &fb, 56 * K, 4 * K), "copy_file_range");
    unchanged("copy_file_range");
    // copy_file_range into a new empty file
    let c = format!("{JOHN}/3.");
    let fc = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .open(m.path(&c))
        .unwrap();
    assert_edquot(
        copy_range(&fa, 0, &fc, 0, 4 * K),
        "copy_file_range into a new file",
    );
    drop(fc);
    assert_eq!(fs::metadata(m.path(&c)).unwrap().len(), 0);
    fs::remove_file(m.path(&c)).unwrap();
    unchanged("copy_file_range new");
    drop(fb);
    drop(fa);
    // link into a full mailbox
    assert_edquot(
        fs::hard_link(m.path(&jane1), m.path(&format!("{JOHN}/4."))),
        "link",
    );
    assert!(
        !m.path(&format!("{JOHN}/4.")).exists(),
        "refused link left a name"
    );
    assert!(
        !m.backing("fast", &format!("{JOHN}/4.")).exists(),
        "refused link left a backing name"
    );
    unchanged("link");
    // rename into another mailbox of the same tenant
    assert_edquot(
        fs::rename(m.path(&jane1), m.path(&format!("{JOHN}/5."))),
        "rename",
    );
    assert!(!m.path(&format!("{JOHN}/5.")).exists());
    unchanged("rename from another mailbox");
    // rename from another tenant
    assert_edquot(
        fs::rename(m.path(&alice1), m.path(&format!("{JOHN}/6."))),
        "rename across tenants",
    );
    assert!(!m.path(&format!("{JOHN}/6.")).exists());
    unchanged("rename from another tenant");
}

/// `File::write` at the current end (helper for the table above).
trait WriteAtEnd {
    fn write_at_end(self, data: &[u8]) -> io::Result<usize>;
}

impl WriteAtEnd for &File {
    fn write_at_end(self, data: &[u8]) -> io::Result<usize> {
        let end = self.metadata()?.len();
        std::os::unix::fs::FileExt::write_at(self, data, end)
    }
}

#[test]
fn open_o_trunc_then_rewrite_is_limited_like_any_write() {
    let m = boxes("", &[JOHN]);
    let a = format!("{JOHN}/cyrus.squat");
    let b = format!("{JOHN}/1.");
    put_n(&m, &a, 56 * K, 1);
    put_n(&m, &b, 200 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // O_TRUNC refunds at once: usage drops before anything is written.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    assert_eq!(mb(&m, JOHN_MB), 56 * K, "O_TRUNC refunds at once");
    // Rewriting up to the old size fits again; one byte more does not.
    let nd = pat(200 * K, 7);
    f.write_all(&nd).unwrap();
    assert_edquot(f.write(b"x"), "rewrite past the limit after O_TRUNC");
    drop(f);
    assert_file(&m, &b, &nd);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // O_TRUNC of a file another process still has open, then a bigger rewrite.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    let r = f.write_all(&pat(201 * K, 8));
    assert_edquot(r, "201K rewrite into 200K of room");
    drop(f);
    let size = fs::metadata(m.path(&b)).unwrap().len();
    assert!(size <= 200 * K);
    assert_eq!(mb(&m, JOHN_MB), 56 * K + size);
    assert_matches_disk(&m);
}

// --- refunds ----------------------------------------------------------------------

#[test]
fn shrinking_refunds_at_once() {
    let m = boxes("", &[JOHN]);
    let (a, b, c) = (
        format!("{JOHN}/1."),
        format!("{JOHN}/2."),
        format!("{JOHN}/3."),
    );
    put_n(&m, &a, 100 * K, 1);
    put_n(&m, &b, 100 * K, 2);
    put_n(&m, &c, 56 * K, 3);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // unlink
    fs::remove_file(m.path(&a)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 156 * K);
    assert_eq!(tn(&m, "example.org"), 156 * K);
    // truncate down by path and by descriptor
    path_truncate(&m.path(&b), 40 * K).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 96 * K);
    let f = OpenOptions::new().write(true).open(m.path(&c)).unwrap();
    f.set_len(6 * K).unwrap();
    assert_eq!(
        mb(&m, JOHN_MB),
        46 * K,
        "ftruncate down refunds while still open"
    );
    drop(f);
    // O_TRUNC
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    assert_eq!(mb(&m, JOHN_MB), 6 * K);
    drop(f);
    // fallocate collapse/punch: punch keeps the size (no refund), unlink of
    // an open file refunds at once even before the last close.
    let f = File::open(m.path(&c)).unwrap();
    fs::remove_file(m.path(&c)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 0, "unlink refunds while the file is open");
    drop(f);
    // All of the room is usable again.
    put_n(&m, &a, 256 * K, 4);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

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
    path_truncate(&m.path(&a), 1 * K).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (1 * K, 1 * K));
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

// --- UUID layout -----------------------------------------------------------------------

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

// --- concurrency -----------------------------------------------------------------------

/// Writes 4K chunks until EDQUOT; any other error fails the test.
fn fill(path: &Path, seed: u8) -> u64 {
    let mut f = File::create(path).unwrap();
    let chunk = pat(4 * K, seed);
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => return written,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

#[test]
fn eight_concurrent_threads_never_overshoot_the_tenant() {
    let m = cyrus("");
    let boxes: Vec<String> = (0..8).map(|i| format!("{EXAMPLE}/u/user/u{i}")).collect();
    for b in &boxes {
        mkdirs(&m, b);
    }
    let barrier = Arc::new(Barrier::new(8));
    let written: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (p, barrier) = (m.path(&format!("{b}/1.")), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    fill(&p, i as u8)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let used = tn(&m, "example.org");
    assert!(used <= 1024 * K, "tenant overshot: {used}");
    assert_eq!(used, backing_bytes(&m, EXAMPLE), "usage = bytes on disk");
    assert_eq!(
        used, written,
        "usage = bytes the writers were told were written"
    );
    // Every writer wrote 4K chunks until refused: the tenant is exactly full.
    assert_eq!(used, 1024 * K);
}

#[test]
fn eight_concurrent_processes_never_overshoot_a_mailbox_or_tenant() {
    // Processes (dd) into john (256K) and seven other mailboxes (tenant 1M),
    // with odd block sizes so the limits are hit mid-block.
    let m = cyrus("");
    let mut dirs = vec![JOHN.to_string(), JOHN.to_string()];
    dirs.extend((0..6).map(|i| format!("{EXAMPLE}/p/user/p{i}")));
    for d in &dirs {
        mkdirs(&m, d);
    }
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", m.path(&format!("{d}/{i}.")).display()))
                .arg(format!("bs={}", 3000 + i * 517))
                .arg("count=1000")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dd should have hit a limit: {err}");
        assert!(err.contains("quota exceeded"), "dd failed otherwise: {err}");
    }
    let u = m.usage();
    let john = used(&u, "mailboxes", JOHN_MB);
    let tenant = used(&u, "tenants", "example.org");
    assert!(john <= 256 * K, "john overshot: {john}");
    assert!(tenant <= 1024 * K, "tenant overshot: {tenant}");
    assert_eq!(john, backing_bytes(&m, JOHN));
    assert_eq!(tenant, backing_bytes(&m, EXAMPLE));
    // The tenant is full to within one block of the largest writer.
    assert!(
        tenant > 1024 * K - 8 * 7000,
        "writers gave up early: {tenant}"
    );
}

// --- run-time control -------------------------------------------------------------------

#[test]
fn quota_set_takes_effect_at_once_and_survives_a_remount() {
    let mut m = boxes("", &[JOHN]);
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    let (ok, _, err) = m.cli(&["quota", "set", "--mailbox", JOHN_MB, "128K"]);
    assert!(ok, "quota set: {err}");
    let (ok, out, err) = m.cli(&["quota", "get", "--mailbox", JOHN_MB]);
    assert!(ok, "quota get: {err}");
    assert!(
        out.contains("131072") || out.contains("128"),
        "quota get shows the new limit: {out}"
    );
    put_n(&m, &format!("{JOHN}/2."), 28 * K, 2);
    let mut f = File::create(m.path(&format!("{JOHN}/3."))).unwrap();
    assert_edquot(f.write(b"x"), "new run-time limit");
    drop(f);
    // Tenant limit lowered below current usage: nothing more fits, deletes do.
    let (ok, _, err) = m.cli(&["quota", "set", "--tenant", "example.org", "100K"]);
    assert!(ok, "{err}");
    mkdirs(&m, JANE);
    let mut f = File::create(m.path(&format!("{JANE}/1."))).unwrap();
    assert_edquot(f.write(b"x"), "tenant lowered below usage");
    drop(f);
    let u = m.usage();
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 128 * K);
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        100 * K
    );

    // Only root may change what the next start loads.
    use std::os::unix::fs::PermissionsExt;
    for p in [m.state.clone(), m.state.join("limits.json")] {
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o022,
            0,
            "{} is writable by others: {mode:o}",
            p.display()
        );
    }

    m.restart();
    let u = m.usage();
    assert_eq!(
        entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"],
        128 * K,
        "survives a remount"
    );
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        100 * K,
        "survives a remount"
    );
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 128 * K);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/3.")))
        .unwrap();
    assert_edquot(f.write(b"x"), "after restart");
    drop(f);
    // Unlimited at run time, then unset back to the configured limits.
    let (ok, _, err) = m.cli(&["quota", "set", "--tenant", "example.org", "none"]);
    assert!(ok, "{err}");
    let (ok, _, err) = m.cli(&["quota", "unset", "--mailbox", JOHN_MB]);
    assert!(ok, "{err}");
    put_n(&m, &format!("{JOHN}/4."), 128 * K, 4);
    let mut f = File::create(m.path(&format!("{JOHN}/5."))).unwrap();
    assert_edquot(f.write(b"x"), "config limit 256K back after unset");
    drop(f);
    let u = m.usage();
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        Value::Null
    );
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 256 * K);
    // A run-time limit on a folder makes it its own quota root at once.
    mkdirs(&m, &format!("{JOHN}/Archive"));
    let (ok, _, err) = m.cli(&[
        "quota",
        "set",
        "--mailbox",
        "user/john/Archive@example.org",
        "8K",
    ]);
    assert!(ok, "{err}");
    put_n(&m, &format!("{JOHN}/Archive/1."), 8 * K, 5);
    let mut f = File::create(m.path(&format!("{JOHN}/Archive/2."))).unwrap();
    assert_edquot(f.write(b"x"), "run-time nested root");
    drop(f);
    m.restart();
    assert_eq!(mb(&m, "user/john/Archive@example.org"), 8 * K);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
}

#[test]
fn non_root_cannot_use_the_control_interface() {
    let m = boxes("", &[JOHN]);
    put_n(&m, &format!("{JOHN}/1."), 10 * K, 1);
    // Let nobody reach the mount point, so only the control check can refuse.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = Command::new(common::BIN)
            .args(args)
            .arg(&m.mnt)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // nobody can see the mount (allow_other) …
    let out = Command::new("ls")
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nobody cannot even list the mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // … but not the control interface.
    let (ok, out, err) = as_nobody(&["usage", "--json"]);
    assert!(!ok, "nobody read usage: {out}");
    assert!(
        err.to_lowercase().contains("permission denied"),
        "why: {err}"
    );
    assert!(!out.contains("example.org"), "usage leaked: {out}");
    let (ok, _, err) = as_nobody(&["quota", "set", "--mailbox", JOHN_MB, "1G"]);
    assert!(
        !ok && err.to_lowercase().contains("permission denied"),
        "nobody set a limit: {err}"
    );
    let (ok, _, err) = as_nobody(&["quota", "get", "--tenant", "example.org"]);
    assert!(
        !ok && err.to_lowercase().contains("permission denied"),
        "nobody read a limit: {err}"
    );
    assert_eq!(
        entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"],
        256 * K
    );
    assert!(
        !m.state.join("limits.json").exists()
            || !fs::read_to_string(m.state.join("limits.json"))
                .unwrap()
                .contains("john")
    );
}

trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl UidGid for Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(id).gid(id)
    }
}

#[test]
fn a_configured_admin_uid_may_use_the_control_interface() {
    let m = cyrus_with("", "[control]\nadmin_uids = [65534]\n");
    mkdirs(&m, JOHN);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(common::BIN)
        .args(["usage", "--json"])
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin uid refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 256 * K);
    let out = Command::new(common::BIN)
        .args(["quota", "set", "--mailbox", JOHN_MB, "1K"])
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin uid refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"], K);
}

// --- df ------------------------------------------------------------------------------------

fn statvfs(p: &Path) -> libc::statvfs {
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(cpath(p).as_ptr(), &mut v) };
    assert_eq!(
        r,
        0,
        "statvfs {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    v
}

#[test]
fn df_on_a_mailbox_directory_shows_its_quota() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    let v = statvfs(&m.path(JOHN));
    let bs = v.f_frsize as u64;
    assert_eq!(v.f_blocks * bs, 256 * K, "total = john's limit");
    assert_eq!(v.f_bavail * bs, 156 * K, "free = limit - usage");
    assert_eq!(v.f_bfree * bs, 156 * K);
    // A folder below shows its root's quota.
    mkdirs(&m, &format!("{JOHN}/Sent"));
    let v = statvfs(&m.path(&format!("{JOHN}/Sent")));
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (256 * K, 156 * K));
    // jane has no mailbox limit: the tenant's (1M, 100K used) is the tightest.
    let v = statvfs(&m.path(JANE));
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (1024 * K, 924 * K));
    // Tightest: fill the tenant so it has less room than john's mailbox.
    put_n(&m, &format!("{JANE}/1."), 900 * K, 2);
    let v = statvfs(&m.path(JOHN));
    assert_eq!(
        (v.f_blocks * bs, v.f_bavail * bs),
        (1024 * K, 24 * K),
        "tenant is tighter now"
    );
    // The spool root shows the real partitions.
    let root = statvfs(&m.mnt);
    let real = statvfs(&m.backing("fast", ""));
    assert_eq!(
        root.f_blocks * root.f_frsize as u64,
        real.f_blocks * real.f_frsize as u64
    );
    // `df` itself agrees (1K blocks).
    let out = Command::new("df")
        .arg("-k")
        .arg(m.path(JANE))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "1024", "df size: {text}");
    assert_eq!(cols[3], "24", "df avail: {text}");
}

#[test]
fn df_on_a_tenant_directory_shows_the_tenant_quota() {
    let m = boxes("", &[JANE]);
    put_n(&m, &format!("{JANE}/1."), 100 * K, 1);
    let v = statvfs(&m.path(EXAMPLE));
    let bs = v.f_frsize as u64;
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (1024 * K, 924 * K));
}

// --- crash ---------------------------------------------------------------------------------

#[test]
fn usage_after_sigkill_mid_write_equals_a_recount() {
    let mut m = cyrus("[tenants.\"big.org\"]\nlimit = \"none\"\n");
    let dirs: Vec<String> = (0..4)
        .map(|i| format!("mail/domain/b/big.org/u/user/u{i}"))
        .collect();
    for d in &dirs {
        mkdirs(&m, d);
    }
    mkdirs(&m, JOHN);
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = m.path(&format!("{d}/1."));
            let trunc = m.path(&format!("{d}/2."));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let chunk = pat(64 * K, i as u8);
                let Ok(mut f) = File::create(&p) else { return };
                let _ = fs::write(&trunc, pat(300 * K, 1));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if f.write_all(&chunk).is_err() {
                        return;
                    }
                    // Shrinks too, so a crash may hit a refund.
                    if path_truncate(&trunc, 1000).is_err()
                        || fs::write(&trunc, pat(300 * K, 2)).is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    m.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Change a file while unmounted too.
    fs::write(
        m.backing("fast", &format!("{JOHN}/offline.")),
        pat(7 * K, 3),
    )
    .unwrap();
    m.spawn();
    let u = m.usage();
    let big = backing_bytes(&m, "mail/domain/b/big.org");
    assert!(big > 0, "the writers wrote nothing before the kill");
    assert_eq!(used(&u, "tenants", "big.org"), big);
    for d in &dirs {
        let name = format!("user/{}@big.org", d.rsplit('/').next().unwrap());
        assert_eq!(used(&u, "mailboxes", &name), backing_bytes(&m, d), "{name}");
    }
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 207 * K);
    assert_matches_disk(&m);
}

// --- reports and logs -----------------------------------------------------------------------

#[test]
fn usage_json_has_exactly_the_documented_shape() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 10 * K, 1);
    put_n(&m, &format!("{JANE}/1."), 20 * K, 2);
    let u = m.usage();
    let top: Vec<&String> = u.as_object().unwrap().keys().collect();
    assert_eq!(top, ["mailboxes", "tenants"], "top-level keys: {u}");
    for t in u["tenants"].as_array().unwrap() {
        let mut keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["limit", "name", "percent", "used"],
            "tenant keys: {t}"
        );
        assert!(
            t["used"].is_u64() && (t["limit"].is_u64() || t["limit"].is_null()),
            "{t}"
        );
    }
    for mbx in u["mailboxes"].as_array().unwrap() {
        let mut keys: Vec<&String> = mbx.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "limit",
                "name",
                "partition",
                "partitions",
                "percent",
                "tenant",
                "used"
            ],
            "mailbox keys: {mbx}"
        );
        assert!(
            mbx["used"].is_u64() && (mbx["limit"].is_u64() || mbx["limit"].is_null()),
            "{mbx}"
        );
    }
    let john = entry(&u, "mailboxes", JOHN_MB).unwrap();
    assert_eq!(john["tenant"], "example.org");
    assert_eq!(john["used"], 10 * K);
    assert_eq!(john["limit"], 256 * K);
    assert_eq!(john["partition"], "fast");
    let jane = entry(&u, "mailboxes", JANE_MB).unwrap();
    assert_eq!(jane["limit"], Value::Null, "no limit is null");
    assert_eq!(jane["partition"], "fast");
    let t = entry(&u, "tenants", "example.org").unwrap();
    assert_eq!(
        (t["used"].as_u64(), t["limit"].as_u64()),
        (Some(30 * K), Some(1024 * K))
    );
    // The table form works too.
    let (ok, out, err) = m.cli(&["usage"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(JOHN_MB) && out.contains("example.org"),
        "{out}"
    );
}

#[test]
fn each_refusal_logs_one_complete_line() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 256 * K, 1);
    let before = edquot_lines(&m).len();
    let mut f = File::create(m.path(&format!("{JOHN}/2."))).unwrap();
    assert_edquot(f.write(&pat(3000, 1)), "write");
    drop(f);
    let lines = edquot_lines(&m);
    assert_eq!(lines.len(), before + 1, "one line per refusal: {lines:#?}");
    let l = lines.last().unwrap();
    for want in [
        "write",
        &format!("{JOHN}/2."),
        JOHN_MB,
        "example.org",
        "262144",
        "used 262144",
        "asked 3000",
    ] {
        assert!(l.contains(want), "refusal line lacks {want:?}: {l}");
    }
    // A tenant refusal names the mailbox too.
    put_n(&m, &format!("{JANE}/1."), 768 * K, 2);
    let mut f = File::create(m.path(&format!("{JANE}/2."))).unwrap();
    assert_edquot(f.write(&pat(10, 1)), "write");
    drop(f);
    assert_edquot(
        fs::hard_link(m.path(&format!("{JOHN}/1.")), m.path(&format!("{JANE}/3."))),
        "link",
    );
    assert_edquot(
        path_truncate(&m.path(&format!("{JANE}/1.")), 800 * K),
        "truncate",
    );
    let lines = edquot_lines(&m);
    assert_eq!(lines.len(), before + 4, "one line per refusal: {lines:#?}");
    for (l, (op, path, asked)) in lines[before + 1..].iter().zip([
        ("write", format!("{JANE}/2."), 10),
        ("link", format!("{JANE}/3."), 256 * K),
        ("truncate", format!("{JANE}/1."), 32 * K),
    ]) {
        for want in [
            op,
            &path,
            JANE_MB,
            "tenant example.org",
            "limit 1048576",
            "used 1048576",
            &format!("asked {asked}"),
        ] {
            assert!(l.contains(want), "refusal line lacks {want:?}: {l}");
        }
    }
}

#[test]
fn crossing_warn_percent_is_logged_once_per_crossing() {
    let m = cyrus_with("warn_percent = 50\n", "");
    mkdirs(&m, JOHN);
    let warnings = |m: &Mount| {
        m.log_text()
            .lines()
            .filter(|l| l.contains(&format!("mailbox {JOHN_MB} at")))
            .count()
    };
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    assert_eq!(warnings(&m), 0, "below 50%");
    put_n(&m, &format!("{JOHN}/2."), 40 * K, 2);
    assert_eq!(warnings(&m), 1, "crossed 50% (140K of 256K)");
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/2.")))
        .unwrap();
    for _ in 0..20 {
        f.write_all(&pat(K, 3)).unwrap();
    }
    drop(f);
    assert_eq!(warnings(&m), 1, "logged once while above");
    fs::remove_file(m.path(&format!("{JOHN}/2."))).unwrap();
    put_n(&m, &format!("{JOHN}/3."), 10 * K, 4);
    assert_eq!(warnings(&m), 1, "below again: no line");
    put_n(&m, &format!("{JOHN}/4."), 40 * K, 5);
    assert_eq!(warnings(&m), 2, "second crossing logged");
    let l = m
        .log_text()
        .lines()
        .filter(|l| l.contains(&format!("mailbox {JOHN_MB} at")))
        .last()
        .unwrap()
        .to_string();
    assert!(l.contains("limit 262144"), "{l}");
}

#[test]
fn moving_mail_between_folders_of_a_full_mailbox_is_allowed() {
    let m = cyrus("");
    let (sent, trash) = (format!("{JOHN}/Sent"), format!("{JOHN}/Trash"));
    for d in [JOHN, sent.as_str(), trash.as_str()] {
        mkdirs(&m, d);
    }
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    put_n(&m, &format!("{sent}/1."), 56 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    fs::rename(
        m.path(&format!("{JOHN}/1.")),
        m.path(&format!("{trash}/1.")),
    )
    .unwrap();
    fs::rename(m.path(&sent), m.path(&format!("{JOHN}/Old Sent"))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let mut f = File::create(m.path(&format!("{trash}/2."))).unwrap();
    assert_edquot(f.write(b"x"), "still full");
    drop(f);
    assert_matches_disk(&m);
}

#[test]
fn an_open_file_follows_its_name_to_another_mailbox() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/0."), 250 * K, 1);
    let mut f = File::create(m.path(&format!("{JANE}/1."))).unwrap();
    f.write_all(&pat(10 * K, 2)).unwrap();
    // Renamed into john (6K of room) while open: later growth is john's.
    assert_edquot(
        fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/1."))),
        "10K into 6K of room",
    );
    fs::remove_file(m.path(&format!("{JOHN}/0."))).unwrap();
    fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/1."))).unwrap();
    f.write_all(&pat(6 * K, 3)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (16 * K, 0));
    put_n(&m, &format!("{JOHN}/2."), 240 * K, 4);
    assert_edquot(
        f.write(b"x"),
        "growth through a descriptor opened in jane, now in full john",
    );
    drop(f);
    // The refusal names the file by its current path.
    let l = edquot_lines(&m).last().unwrap().clone();
    assert!(l.contains(&format!("{JOHN}/1.")), "{l}");
    assert_matches_disk(&m);
}

#[test]
fn a_sparse_write_is_charged_by_apparent_size() {
    let m = boxes("", &[JOHN]);
    let f = File::create(m.path(&format!("{JOHN}/1."))).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"x", 200 * K).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 200 * K + 1);
    assert_edquot(
        f.write_at(b"y", 256 * K),
        "sparse write ending one byte past the limit",
    );
    f.write_at(b"y", 256 * K - 1).unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

#[test]
fn quota_cli_rejects_bad_input_and_changes_nothing() {
    let m = cyrus("");
    for args in [
        &["quota", "set", "--mailbox", JOHN_MB, "12Q"][..],
        &["quota", "set", "--mailbox", "", "1M"][..],
        &["quota", "set", "--tenant", " ", "1M"][..],
        &["quota", "set", "--mailbox", "user/../x@example.org", "1M"][..],
    ] {
        let (ok, _, err) = m.cli(args);
        assert!(!ok, "{args:?} accepted");
        assert!(!err.is_empty(), "{args:?}: no reason given");
    }
    assert_eq!(
        entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"],
        256 * K
    );
    assert!(
        !m.state.join("limits.json").exists(),
        "a refused change was persisted"
    );
}

/// The deliberate answer to passthrough (SEMANTICS.md): a read-only open of
/// a message file is served by the kernel; a writer arriving meanwhile gets
/// ETXTBSY (a passthrough write would bypass the ledger), and once the
/// readers are gone the writer's growth is refused at the limit as always.
#[test]
fn passthrough_readers_never_let_a_writer_past_the_limit() {
    let m = boxes("", &[JOHN]);
    let msg = format!("{JOHN}/1.");
    let data = put_n(&m, &msg, 200 * K, 7);
    // The daemon may hear of the writer's close (an asynchronous RELEASE)
    // after the reader's OPEN; that reader is then served by the daemon
    // (SEMANTICS.md) and does not block writers. Retry until a reader is
    // passthrough, which a writer must then never get past.
    let mut attempts = 0;
    let reader = loop {
        attempts += 1;
        let reader = File::open(m.path(&msg)).unwrap();
        match OpenOptions::new().write(true).open(m.path(&msg)) {
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY));
                break reader;
            }
            Ok(_) => {
                assert!(attempts < 50, "no read-only open was ever passthrough");
                drop(reader);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    // The reader still reads the whole message (through the kernel).
    assert_eq!(fs::read(m.path(&msg)).unwrap(), data);
    drop(reader);

    // Writer first: readers now go through the daemon, and the writer's
    // growth past the 256K mailbox limit is refused, nothing changed.
    let mut w = OpenOptions::new().append(true).open(m.path(&msg)).unwrap();
    let r = File::open(m.path(&msg)).unwrap();
    assert_edquot(w.write_all(&pat(100 * K, 9)), "append past the limit");
    assert_eq!(fs::read(m.path(&msg)).unwrap(), data);
    assert_eq!(mb(&m, JOHN_MB), 200 * K);
    drop((w, r));
    assert_matches_disk(&m);
}

/// A reader that has closed never blocks a writer, although the kernel
/// sends its RELEASE asynchronously (it may reach the daemon after the
/// writer's OPEN when several request threads run).
#[test]
fn a_closed_passthrough_reader_never_blocks_the_next_writer() {
    let m = boxes("", &[JOHN]);
    let msg = format!("{JOHN}/1.");
    let data = put_n(&m, &msg, 8 * K, 3);
    for round in 0..300 {
        assert_eq!(fs::read(m.path(&msg)).unwrap(), data, "round {round}");
        let w = OpenOptions::new().write(true).open(m.path(&msg));
        assert!(w.is_ok(), "round {round}: writer refused: {w:?}");
    }
    assert_matches_disk(&m);
}
