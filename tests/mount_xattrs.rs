//! `[mount] xattrs`: on, extended attributes reach the backing files; off,
//! the kernel is told once that there are none and stops asking (no
//! `GETXATTR security.capability` before every write), while the CLI still
//! finds the daemon through `/run/spoolfs`. Real mounts.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::posix::{errno, getxattr, setxattr};
use common::{Mount, Spec, mkdirs};

const JOHN: &str = "mail/domain/e/example.org/j/user/john";

fn spool(xattrs: bool) -> Mount {
    let m = Spec::new(&["fast"])
        .extra(&format!(
            "[mount]\nxattrs = {xattrs}\n[layout]\nkind = \"cyrus\"\n"
        ))
        .mount();
    mkdirs(&m, JOHN);
    m
}

fn getxattr_requests(m: &Mount) -> u64 {
    let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
    assert!(ok, "{err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["requests"]["getxattr"].as_u64().unwrap_or(0)
}

/// Writes `n` 4 KiB blocks, one `write()` each.
fn write_blocks(path: &Path, n: usize) {
    let mut f = fs::File::create(path).unwrap();
    for _ in 0..n {
        f.write_all(&[b'x'; 4096]).unwrap();
    }
}

/// The `/run/spoolfs` entry of the mount at `m`.
fn registry_entry(m: &Mount) -> PathBuf {
    let dev = fs::metadata(m.path("")).unwrap().dev();
    Path::new("/run/spoolfs").join(format!("{}:{}", libc::major(dev), libc::minor(dev)))
}

#[test]
fn with_xattrs_on_they_reach_the_backing_file_and_writes_ask_once_per_file() {
    let m = spool(true);
    let file = m.path(&format!("{JOHN}/1."));
    let before = getxattr_requests(&m);
    write_blocks(&file, 20);
    // the kernel's file_remove_privs asks for `security.capability` at the
    // first write; with FUSE_HANDLE_KILLPRIV_V2 it then marks the inode
    // and skips the question until its attributes are fetched again
    // (without it: one GETXATTR per buffered write, 20 here)
    let asked = getxattr_requests(&m) - before;
    assert!((1..=2).contains(&asked), "{asked} GETXATTR for 20 writes");
    setxattr(&file, "user.test", b"v1", 0).unwrap();
    assert_eq!(getxattr(&file, "user.test", 256).unwrap(), b"v1");
    let backing = m.backing("fast", &format!("{JOHN}/1."));
    assert_eq!(getxattr(&backing, "user.test", 256).unwrap(), b"v1");
}

#[test]
fn with_xattrs_off_the_kernel_stops_asking_and_the_cli_still_works() {
    let mut m = spool(false);
    let file = m.path(&format!("{JOHN}/1."));
    write_blocks(&file, 1);
    // the first refusal (ENOSYS) makes the kernel answer every later call
    // itself with EOPNOTSUPP
    assert_eq!(
        errno(setxattr(&file, "user.test", b"v1", 0)),
        libc::EOPNOTSUPP
    );
    assert_eq!(errno(getxattr(&file, "user.test", 256)), libc::EOPNOTSUPP);
    let before = getxattr_requests(&m);
    write_blocks(&file, 20);
    assert_eq!(
        getxattr_requests(&m),
        before,
        "no GETXATTR reaches the daemon"
    );
    assert_eq!(fs::metadata(&file).unwrap().len(), 20 * 4096);

    // the CLI finds the socket through /run/spoolfs, from any path inside
    let entry = registry_entry(&m);
    assert!(fs::read_link(&entry).is_ok(), "{} missing", entry.display());
    let (ok, out, err) = m.cli(&["usage", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("user/john@example.org"), "{out}");
    m.stop();
    assert!(
        fs::symlink_metadata(&entry).is_err(),
        "{} left behind",
        entry.display()
    );
}
