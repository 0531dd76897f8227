//! `[mount] xattrs`: on, extended attributes reach the backing files; off,
//! the kernel is told once that there are none and stops asking (no
//! `GETXATTR security.capability` before every write), while the CLI still
//! finds the daemon through `/run/spoolfs`. Real mounts.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `setxattr(path, "user.test", value)`: 0 or the errno.
fn set_user_xattr(path: &Path, value: &[u8]) -> i32 {
    let name = CString::new("user.test").unwrap();
    let r = unsafe {
        libc::setxattr(
            cpath(path).as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

/// `getxattr(path, "user.test")`: the value or the errno.
fn get_user_xattr(path: &Path) -> Result<Vec<u8>, i32> {
    let name = CString::new("user.test").unwrap();
    let mut buf = vec![0u8; 256];
    let n = unsafe {
        libc::getxattr(
            cpath(path).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(n as usize);
    Ok(buf)
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
fn with_xattrs_on_they_reach_the_backing_file_and_writes_ask_each_time() {
    let m = spool(true);
    let file = m.path(&format!("{JOHN}/1."));
    let before = getxattr_requests(&m);
    write_blocks(&file, 5);
    // the kernel's file_remove_privs: one GETXATTR per buffered write
    assert!(getxattr_requests(&m) - before >= 5);
    assert_eq!(set_user_xattr(&file, b"v1"), 0);
    assert_eq!(get_user_xattr(&file), Ok(b"v1".to_vec()));
    assert_eq!(
        get_user_xattr(&m.backing("fast", &format!("{JOHN}/1."))),
        Ok(b"v1".to_vec())
    );
}

#[test]
fn with_xattrs_off_the_kernel_stops_asking_and_the_cli_still_works() {
    let mut m = spool(false);
    let file = m.path(&format!("{JOHN}/1."));
    write_blocks(&file, 1);
    // the first refusal (ENOSYS) makes the kernel answer every later call
    // itself with EOPNOTSUPP
    assert_eq!(set_user_xattr(&file, b"v1"), libc::EOPNOTSUPP);
    assert_eq!(get_user_xattr(&file), Err(libc::EOPNOTSUPP));
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
