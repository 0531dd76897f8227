//! Helpers for the quota tests on a real mount (`tests/quota_*.rs`): the
//! Cyrus two-tenant configuration, its mailboxes, and checks of usage
//! against the backing files. The names are shared with the core tests
//! (`tests/core_quota.rs`).

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::corefs::Core;
use super::{Mount, Spec, backing_bytes, mkdirs, used};
use serde_json::Value;

pub const K: u64 = 1024;

/// Cyrus named layout, virtdomains + hashimapspool, partition dir `mail`.
pub const JOHN: &str = "mail/domain/e/example.org/j/user/john";
pub const JANE: &str = "mail/domain/e/example.org/j/user/jane";
pub const BOB: &str = "mail/domain/e/example.org/b/user/bob";
pub const ALICE: &str = "mail/domain/o/other.org/a/user/alice";
pub const EXAMPLE: &str = "mail/domain/e/example.org";
pub const OTHER: &str = "mail/domain/o/other.org";
pub const STAGE: &str = "mail/stage.";

pub const JOHN_MB: &str = "user/john@example.org";
pub const JANE_MB: &str = "user/jane@example.org";
pub const BOB_MB: &str = "user/bob@example.org";
pub const ALICE_MB: &str = "user/alice@other.org";

pub const BASE: &str = r#"
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

pub fn cyrus(extra: &str) -> Mount {
    Spec::new(&["fast", "slow"])
        .extra(BASE)
        .extra(extra)
        .mount()
}

/// `cyrus(extra)` with the given mailbox directories made.
pub fn boxes(extra: &str, dirs: &[&str]) -> Mount {
    let m = cyrus(extra);
    for d in dirs {
        mkdirs(&m, d);
    }
    m
}

/// `quota` lines go into BASE's `[quota]`; `control` is a whole section
/// (with `state_dir`, which the harness then does not add).
pub fn cyrus_with(quota: &str, control: &str) -> Mount {
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

/// Deterministic, position-dependent bytes, so content checks catch shifts.
pub fn pat(n: u64, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn put(m: &Mount, rel: &str, data: &[u8]) {
    fs::write(m.path(rel), data).unwrap_or_else(|e| panic!("write {rel}: {e}"));
}

/// Fills john's mailbox to exactly its limit with `1.`, then appends one
/// byte to it: refused, the file unchanged. Returns the name and content.
pub fn fill_john_then_refuse_an_append(m: &Mount) -> (String, Vec<u8>) {
    use std::io::Write;
    let f1 = format!("{JOHN}/1.");
    let data = put_n(m, &f1, 256 * K, 1);
    assert_eq!(mb(m, JOHN_MB), 256 * K);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(m.path(&f1))
        .unwrap();
    assert_edquot(f.write(b"x"), "append one byte at the limit");
    drop(f);
    assert_file(m, &f1, &data);
    (f1, data)
}

pub fn put_n(m: &Mount, rel: &str, n: u64, seed: u8) -> Vec<u8> {
    let d = pat(n, seed);
    put(m, rel, &d);
    d
}

#[track_caller]
pub fn assert_edquot<T: std::fmt::Debug>(r: io::Result<T>, what: &str) {
    match r {
        Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => {}
        other => panic!("{what}: expected EDQUOT, got {other:?}"),
    }
}

pub fn entry<'a>(u: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    u[list]
        .as_array()
        .expect(list)
        .iter()
        .find(|e| e["name"] == name)
}

pub fn mb(m: &Mount, name: &str) -> u64 {
    used(&m.usage(), "mailboxes", name)
}

pub fn tn(m: &Mount, name: &str) -> u64 {
    used(&m.usage(), "tenants", name)
}

/// Usage of the three example.org mailboxes and the two tenants equals the
/// recount of their backing directories.
#[track_caller]
pub fn assert_matches_disk(m: &Mount) {
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

pub fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn fallocate(f: &File, mode: i32, off: u64, len: u64) -> io::Result<()> {
    let r = unsafe { libc::fallocate(f.as_raw_fd(), mode, off as i64, len as i64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn copy_range(
    fin: &File,
    off_in: u64,
    fout: &File,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
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

pub fn path_truncate(p: &Path, len: u64) -> io::Result<()> {
    let r = unsafe { libc::truncate(cpath(p).as_ptr(), len as i64) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn read_all(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

/// The size and content seen through the mount and on the backing file.
#[track_caller]
pub fn assert_file(m: &Mount, rel: &str, want: &[u8]) {
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
pub fn cyrus_header(internal_name: &str, uniqueid: &str) -> Vec<u8> {
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

pub fn edquot_lines(m: &Mount) -> Vec<String> {
    m.log_text()
        .lines()
        .filter(|l| l.contains("EDQUOT"))
        .map(str::to_string)
        .collect()
}

// --- the same mailboxes through the core, without a mount --------------------

pub const ARCHIVE: &str = "mail/domain/e/example.org/j/user/john/Archive";
pub const ARCHIVE_MB: &str = "user/john/Archive@example.org";
pub const TENANT: &str = "example.org";

/// `BASE` (john 256K, example.org 1M) with jane limited too and john's
/// Archive its own unlimited quota root.
const CORE_EXTRA: &str = r#"
[mailboxes."user/jane@example.org"]
limit = "256K"
[mailboxes."user/john/Archive@example.org"]
limit = "none"
"#;

/// A core over two partitions with john, jane, john's Archive and
/// `stage./` made.
pub fn core() -> Core {
    let c = Core::new(&["fast", "slow"], &format!("{BASE}{CORE_EXTRA}"));
    for d in [JOHN, JANE, ARCHIVE, STAGE] {
        c.mkdirs(d);
    }
    c
}

/// Every account equals a recount of its directories.
#[track_caller]
pub fn assert_core_recount(c: &Core) {
    let john = c.on_disk_without(JOHN, ARCHIVE);
    assert_eq!(c.mailbox(JOHN_MB), john, "john");
    assert_eq!(c.mailbox(ARCHIVE_MB), c.on_disk(ARCHIVE), "Archive");
    assert_eq!(c.mailbox(JANE_MB), c.on_disk(JANE), "jane");
    // The tenant: Σ of its quota roots (the only mailboxes made here).
    let roots = john + c.on_disk(ARCHIVE) + c.on_disk(JANE);
    assert_eq!(c.tenant(TENANT), roots, "tenant");
}

/// `dir/name`.
pub fn p(dir: &str, name: &str) -> String {
    format!("{dir}/{name}")
}
