//! Helpers for the mount tests that drive spoolfs with plain syscalls
//! (`tests/mount_*.rs`): the routed two-partition mount, errno checks,
//! raw syscall wrappers, running as another user, time limits.

use std::ffi::{CString, OsString};
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::FromRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::{LoopFs, Mount, Spec, as_user};

/// The configuration of the brief: `fast` by default, `archive/**` on `slow`.
pub const ROUTES: &str = "[[route]]\nmatch = \"archive/**\"\npartition = \"slow\"\n";
pub const TOP: &str = "default_partition = \"fast\"";

pub fn routed() -> Mount {
    Spec::new(&["fast", "slow"])
        .extra(ROUTES)
        .mount_with_top(TOP)
}

/// `routed()` with `slow` on a given (loop-mounted) filesystem; `fast` is
/// a temp dir, returned so it outlives the mount.
pub fn routed_with_slow(slow: &LoopFs) -> (Mount, tempfile::TempDir) {
    let fast = tempfile::Builder::new()
        .prefix("spoolfs-fast")
        .tempdir()
        .unwrap();
    let m = Spec::at(&[("fast", fast.path()), ("slow", &slow.dir)])
        .extra(ROUTES)
        .mount_with_top(TOP);
    (m, fast)
}

pub fn cs(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

pub fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap()
}

/// The errno of a call that must fail.
#[track_caller]
pub fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

pub fn ret(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
    let (a, b) = (cs(from), cs(to));
    let r = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            flags,
        )
    };
    ret(r as libc::c_int).map(drop)
}

pub fn stat_ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

pub fn names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

pub fn sorted(v: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = v.iter().map(OsString::from).collect();
    v.sort();
    v
}

pub fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
    let n = CString::new(name).unwrap();
    ret(unsafe {
        libc::setxattr(
            cs(p).as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    })
    .map(drop)
}

pub fn getxattr(p: &Path, name: &str, cap: usize) -> io::Result<Vec<u8>> {
    let n = CString::new(name).unwrap();
    let mut buf = vec![0u8; cap];
    let r = unsafe {
        libc::getxattr(
            cs(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf)
}

pub fn listxattr(p: &Path) -> io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    let r = unsafe { libc::listxattr(cs(p).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(r as usize);
    Ok(buf
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into())
        .collect())
}

/// Runs `f` in a forked child as another user. The child's `Err` message
/// (or panic) comes back through a pipe and fails the test.
#[track_caller]
pub fn as_user_ok(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> Result<(), String>) {
    let mut fds = [0; 2];
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (rd, wr) = (fds[0], fds[1]);
    let code = as_user(uid, gid, groups, move || {
        // Drop every descriptor inherited from other tests' threads (open
        // files on their mounts), so this child never keeps someone else's
        // mount busy; keep stdio and the pipe.
        unsafe {
            libc::syscall(libc::SYS_close_range, 3u32, (wr - 1) as u32, 0u32);
            libc::syscall(libc::SYS_close_range, (wr + 1) as u32, u32::MAX, 0u32);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let msg = match r {
            Ok(Ok(())) => return 0,
            Ok(Err(m)) => m,
            Err(_) => "child panicked".to_string(),
        };
        unsafe { libc::write(wr, msg.as_ptr().cast(), msg.len()) };
        1
    });
    unsafe { libc::close(wr) };
    let mut msg = String::new();
    unsafe { File::from_raw_fd(rd) }
        .read_to_string(&mut msg)
        .unwrap();
    assert_eq!(
        code, 0,
        "as uid {uid} gid {gid} groups {groups:?}: {msg} (exit {code})"
    );
}

/// In a child: an `io::Result` that must be an error with `want`.
pub fn want_errno<T>(what: &str, r: io::Result<T>, want: i32) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, expected errno {want}")),
        Err(e) if e.raw_os_error() == Some(want) => Ok(()),
        Err(e) => Err(format!("{what}: {e}, expected errno {want}")),
    }
}

pub fn ctx<T>(what: &str, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

pub fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// Makes the test's temp dir traversable for unprivileged users.
pub fn open_to_all(m: &Mount) {
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `f` on another thread; fails if it does not finish within `limit`.
#[track_caller]
pub fn within<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(v) => v,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}
