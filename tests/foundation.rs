//! Issue 2 (foundation): one spool tree over routed partitions, mounted for
//! real and driven from the outside with ordinary syscalls.
//!
//! Every test mounts through `tests/common` (a guard that unmounts on drop,
//! also on panic) and checks exact outcomes: file contents, which backing
//! partition an object landed on, attributes, and errnos.

mod common;

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

// ---------------------------------------------------------------------------
// helpers

/// The configuration of the brief: `fast` by default, `archive/**` on `slow`.
const ROUTES: &str = "[[route]]\nmatch = \"archive/**\"\npartition = \"slow\"\n";
const TOP: &str = "default_partition = \"fast\"";

fn routed() -> Mount {
    Spec::new(&["fast", "slow"])
        .extra(ROUTES)
        .mount_with_top(TOP)
}

fn cs(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn last_errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap()
}

/// The errno of a call that must fail.
#[track_caller]
fn errno<T: std::fmt::Debug>(r: io::Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got Ok({v:?})"),
        Err(e) => e
            .raw_os_error()
            .unwrap_or_else(|| panic!("not an OS error: {e}")),
    }
}

fn ret(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn renameat2(from: &Path, to: &Path, flags: u32) -> io::Result<()> {
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

fn stat_ino(p: &Path) -> u64 {
    fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("lstat {}: {e}", p.display()))
        .ino()
}

fn names(dir: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    v.sort();
    v
}

fn sorted(v: &[&str]) -> Vec<OsString> {
    let mut v: Vec<OsString> = v.iter().map(OsString::from).collect();
    v.sort();
    v
}

fn setxattr(p: &Path, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
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

fn getxattr(p: &Path, name: &str, cap: usize) -> io::Result<Vec<u8>> {
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

fn listxattr(p: &Path) -> io::Result<Vec<String>> {
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
fn as_user_ok(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> Result<(), String>) {
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
fn want_errno<T>(what: &str, r: io::Result<T>, want: i32) -> Result<(), String> {
    match r {
        Ok(_) => Err(format!("{what}: succeeded, expected errno {want}")),
        Err(e) if e.raw_os_error() == Some(want) => Ok(()),
        Err(e) => Err(format!("{what}: {e}, expected errno {want}")),
    }
}

fn ctx<T>(what: &str, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(what()) }
}

/// Makes the test's temp dir traversable for unprivileged users.
fn open_to_all(m: &Mount) {
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

/// Runs `f` on another thread; fails if it does not finish within `limit`.
#[track_caller]
fn within<T: Send + 'static>(
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

// ---------------------------------------------------------------------------
// routing and the union

#[test]
fn routed_placement_and_missing_parents() {
    let m = routed();
    // Default partition.
    fs::create_dir_all(m.path("inbox/sub")).unwrap();
    fs::write(m.path("inbox/sub/m1"), b"hello").unwrap();
    assert_eq!(
        fs::read(m.backing("fast", "inbox/sub/m1")).unwrap(),
        b"hello"
    );
    assert!(!m.backing("slow", "inbox").exists());

    // Routed: the directory and its missing parents land on `slow` only.
    fs::create_dir_all(m.path("archive/2024/q1")).unwrap();
    fs::write(m.path("archive/2024/q1/m2"), b"archived").unwrap();
    assert!(m.backing("slow", "archive/2024/q1").is_dir());
    assert_eq!(
        fs::read(m.backing("slow", "archive/2024/q1/m2")).unwrap(),
        b"archived"
    );
    assert!(
        !m.backing("fast", "archive/2024").exists(),
        "routed dir leaked onto fast"
    );
    assert_eq!(fs::read(m.path("archive/2024/q1/m2")).unwrap(), b"archived");

    // A directory that exists only on `fast` (planted before the route
    // existed): a new entry under it goes to `slow`, and the missing parents
    // made there copy the mode and owner of the directory they stand for.
    drop(m);
    let m = Spec::new(&["fast", "slow"])
        .extra(ROUTES)
        .mount_with_top(TOP);
    let old = m.backing("fast", "archive/old");
    fs::create_dir_all(&old).unwrap();
    fs::set_permissions(&old, fs::Permissions::from_mode(0o750)).unwrap();
    std::os::unix::fs::chown(&old, Some(4242), Some(4343)).unwrap();
    fs::write(m.path("archive/old/new"), b"n").unwrap();
    let made = m.backing("slow", "archive/old");
    let md = fs::metadata(&made).unwrap();
    assert!(md.is_dir());
    assert_eq!(
        (md.mode() & 0o7777, md.uid(), md.gid()),
        (0o750, 4242, 4343)
    );
    assert_eq!(
        fs::read(m.backing("slow", "archive/old/new")).unwrap(),
        b"n"
    );
    assert!(!m.backing("fast", "archive/old/new").exists());
    // One directory in the tree, showing what both copies hold.
    fs::write(old.join("planted"), b"p").unwrap();
    assert_eq!(names(&m.path("archive/old")), sorted(&["new", "planted"]));
    let st = fs::metadata(m.path("archive/old")).unwrap();
    assert_eq!(
        (st.mode() & 0o7777, st.uid(), st.gid()),
        (0o750, 4242, 4343)
    );
}

#[test]
fn default_partition_is_honoured() {
    let m = Spec::new(&["fast", "slow"])
        .extra(ROUTES)
        .mount_with_top("default_partition = \"slow\"");
    fs::create_dir(m.path("inbox")).unwrap();
    fs::write(m.path("inbox/a"), b"a").unwrap();
    fs::write(m.path("top"), b"t").unwrap();
    assert!(m.backing("slow", "inbox/a").is_file());
    assert!(m.backing("slow", "top").is_file());
    assert!(!m.backing("fast", "inbox").exists());
    assert!(!m.backing("fast", "top").exists());
}

#[test]
fn merged_listing_without_duplicates() {
    let m = routed();
    for (part, files) in [
        ("fast", &["a", "dup", "only-fast"][..]),
        ("slow", &["b", "dup", "only-slow"][..]),
    ] {
        let d = m.backing(part, "shared");
        fs::create_dir_all(d.join("sub")).unwrap();
        for f in files {
            fs::write(d.join(f), format!("{part}:{f}")).unwrap();
        }
    }
    let listed: Vec<OsString> = fs::read_dir(m.path("shared"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut uniq = listed.clone();
    uniq.sort();
    uniq.dedup();
    assert_eq!(uniq.len(), listed.len(), "duplicates in {listed:?}");
    assert_eq!(
        uniq,
        sorted(&["a", "b", "dup", "only-fast", "only-slow", "sub"])
    );
    // The first partition's copy of a duplicated file name wins.
    assert_eq!(
        fs::read_to_string(m.path("shared/dup")).unwrap(),
        "fast:dup"
    );
    assert_eq!(
        fs::read_to_string(m.path("shared/only-slow")).unwrap(),
        "slow:only-slow"
    );
    // `.`/`..` and the root listing: the shared dir appears once.
    let root: Vec<OsString> = fs::read_dir(&m.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        root.iter().filter(|n| *n == "shared").count(),
        1,
        "{root:?}"
    );
    // Every listed entry's d_ino is the inode number stat reports.
    for e in fs::read_dir(m.path("shared")).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.ino(), stat_ino(&e.path()), "{:?}", e.file_name());
    }

    // rmdir needs every copy empty: empty on fast, not on slow.
    fs::create_dir(m.backing("fast", "half")).unwrap();
    fs::create_dir(m.backing("slow", "half")).unwrap();
    fs::write(m.backing("slow", "half/x"), b"x").unwrap();
    assert_eq!(errno(fs::remove_dir(m.path("half"))), libc::ENOTEMPTY);
    assert!(
        m.backing("fast", "half").is_dir(),
        "a copy was removed on a failed rmdir"
    );
    fs::remove_file(m.path("half/x")).unwrap();
    assert!(!m.backing("slow", "half/x").exists());
    fs::remove_dir(m.path("half")).unwrap();
    assert!(!m.backing("fast", "half").exists() && !m.backing("slow", "half").exists());
    assert_eq!(errno(fs::metadata(m.path("half"))), libc::ENOENT);
}

#[test]
fn readdir_inode_numbers_match_stat_in_big_directories() {
    let m = routed();
    // Planted behind the daemon's back so no entry is known beforehand, and
    // large enough to need several READDIR(PLUS) requests.
    let d = m.backing("fast", "big");
    fs::create_dir(&d).unwrap();
    for i in 0..600 {
        fs::write(d.join(format!("message-file-number-{i:05}")), b"x").unwrap();
    }
    let entries: Vec<(OsString, u64)> = fs::read_dir(m.path("big"))
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name(), e.ino()))
        .collect();
    assert_eq!(entries.len(), 600);
    let mut bad = Vec::new();
    for (name, ino) in &entries {
        let st = stat_ino(&m.path("big").join(name));
        if st != *ino {
            bad.push((name.clone(), *ino, st));
        }
    }
    assert!(
        bad.is_empty(),
        "{} of 600 entries: d_ino != st_ino, e.g. {:?}",
        bad.len(),
        &bad[..bad.len().min(3)]
    );
    // A second listing reports the same numbers.
    for e in fs::read_dir(m.path("big")).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.ino(), stat_ino(&e.path()));
    }
}

// ---------------------------------------------------------------------------
// errno cases and names

#[test]
fn errno_cases() {
    let m = routed();
    let p = |s: &str| m.path(s);
    assert_eq!(errno(fs::metadata(p("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(p("nope/deeper"))), libc::ENOENT);
    assert_eq!(errno(File::open(p("nope"))), libc::ENOENT);

    fs::create_dir(p("d")).unwrap();
    assert_eq!(errno(fs::create_dir(p("d"))), libc::EEXIST);
    fs::write(p("f"), b"file").unwrap();
    assert_eq!(errno(fs::create_dir(p("f"))), libc::EEXIST);
    assert_eq!(
        errno(OpenOptions::new().write(true).create_new(true).open(p("f"))),
        libc::EEXIST
    );
    // EEXIST also when the name exists only on the other partition.
    fs::write(m.backing("slow", "elsewhere"), b"s").unwrap();
    assert_eq!(errno(fs::create_dir(p("elsewhere"))), libc::EEXIST);
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p("elsewhere"))
        ),
        libc::EEXIST
    );
    assert_eq!(fs::read(m.backing("slow", "elsewhere")).unwrap(), b"s");
    assert!(!m.backing("fast", "elsewhere").exists());

    fs::write(p("d/inner"), b"i").unwrap();
    assert_eq!(errno(fs::remove_dir(p("d"))), libc::ENOTEMPTY);
    assert_eq!(errno(fs::remove_dir(p("f"))), libc::ENOTDIR);
    assert_eq!(errno(fs::remove_file(p("d"))), libc::EISDIR);
    assert_eq!(errno(fs::remove_file(p("nope"))), libc::ENOENT);
    assert_eq!(errno(fs::remove_dir(p("nope"))), libc::ENOENT);
    assert_eq!(
        errno(OpenOptions::new().write(true).open(p("d"))),
        libc::EISDIR
    );
    assert_eq!(
        errno(OpenOptions::new().read(true).write(true).open(p("d"))),
        libc::EISDIR
    );
    assert_eq!(errno(fs::read_dir(p("f"))), libc::ENOTDIR);
    assert_eq!(errno(fs::metadata(p("f/x"))), libc::ENOTDIR);
    assert_eq!(errno(fs::write(p("f/x"), b"")), libc::ENOTDIR);
    assert_eq!(errno(fs::read_link(p("f"))), libc::EINVAL);
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(p("nope/x"))
        ),
        libc::ENOENT
    );

    // Names: 255 bytes work, 256 are ENAMETOOLONG everywhere.
    let n255 = "n".repeat(255);
    let n256 = "n".repeat(256);
    fs::write(p(&n255), b"long").unwrap();
    assert_eq!(fs::read(p(&n255)).unwrap(), b"long");
    assert!(names(&m.mnt).contains(&OsString::from(&n255)));
    assert_eq!(fs::read(m.backing("fast", &n255)).unwrap(), b"long");
    fs::create_dir(p(&format!("d/{n255}"))).unwrap();
    assert!(p(&format!("d/{n255}")).is_dir());
    assert_eq!(errno(fs::write(p(&n256), b"")), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::metadata(p(&n256))), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::create_dir(p(&n256))), libc::ENAMETOOLONG);
    assert_eq!(
        errno(std::os::unix::fs::symlink("t", p(&n256))),
        libc::ENAMETOOLONG
    );
    assert_eq!(errno(fs::rename(p("f"), p(&n256))), libc::ENAMETOOLONG);
    assert_eq!(errno(fs::hard_link(p("f"), p(&n256))), libc::ENAMETOOLONG);
    assert!(p("f").is_file());

    // Non-UTF-8 names are stored byte for byte.
    let raw = OsStr::from_bytes(b"caf\xe9-\xff\xfe");
    fs::write(m.mnt.join(raw), b"latin1").unwrap();
    assert_eq!(fs::read(m.mnt.join(raw)).unwrap(), b"latin1");
    assert!(
        fs::read_dir(&m.mnt)
            .unwrap()
            .any(|e| e.unwrap().file_name() == raw)
    );
    assert_eq!(
        fs::read(m.backing("fast", "").join(raw)).unwrap(),
        b"latin1"
    );
    fs::create_dir(m.mnt.join(OsStr::from_bytes(b"dir\x80"))).unwrap();
    fs::rename(
        m.mnt.join(raw),
        m.mnt.join(OsStr::from_bytes(b"dir\x80/\xc3(")),
    )
    .unwrap();
    assert_eq!(
        fs::read(
            m.backing("fast", "")
                .join(OsStr::from_bytes(b"dir\x80/\xc3("))
        )
        .unwrap(),
        b"latin1"
    );
}

#[test]
fn paths_longer_than_path_max_work_relative_to_directories() {
    let m = routed();
    // 24 levels of 200-byte names: the full path is ~4.8 KB, past PATH_MAX,
    // so every step is relative to the previous directory's descriptor.
    let name = CString::new("d".repeat(200)).unwrap();
    let mut dir = File::open(&m.mnt).unwrap();
    for _ in 0..24 {
        ret(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), 0o755) }).unwrap();
        let fd = ret(unsafe {
            libc::openat(
                dir.as_raw_fd(),
                name.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        })
        .unwrap();
        dir = unsafe { File::from_raw_fd(fd) };
    }
    let leaf = CString::new("leaf").unwrap();
    let fd = ret(unsafe {
        libc::openat(
            dir.as_raw_fd(),
            leaf.as_ptr(),
            libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
            0o644,
        )
    })
    .unwrap();
    let mut f = unsafe { File::from_raw_fd(fd) };
    f.write_all(b"deep").unwrap();
    drop(f);
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    ret(unsafe { libc::fstatat(dir.as_raw_fd(), leaf.as_ptr(), &mut st, 0) }).unwrap();
    assert_eq!(st.st_size, 4);
    let two = CString::new("leaf2").unwrap();
    ret(unsafe {
        libc::renameat(
            dir.as_raw_fd(),
            leaf.as_ptr(),
            dir.as_raw_fd(),
            two.as_ptr(),
        )
    })
    .unwrap();
    ret(unsafe {
        libc::linkat(
            dir.as_raw_fd(),
            two.as_ptr(),
            dir.as_raw_fd(),
            leaf.as_ptr(),
            0,
        )
    })
    .unwrap();
    ret(unsafe { libc::fstatat(dir.as_raw_fd(), leaf.as_ptr(), &mut st, 0) }).unwrap();
    assert_eq!(st.st_nlink, 2);
    ret(unsafe { libc::unlinkat(dir.as_raw_fd(), two.as_ptr(), 0) }).unwrap();
    // The deep directory lists, and the file is on the fast partition.
    let listed: Vec<_> = fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(listed, [OsString::from("leaf")]);
    assert_eq!(
        fs::read(format!("/proc/self/fd/{}/leaf", dir.as_raw_fd())).unwrap(),
        b"deep"
    );
    let mut depth = 0;
    let mut b = m.backing("fast", "");
    while b.join("d".repeat(200)).is_dir() {
        b.push("d".repeat(200));
        depth += 1;
        if b.as_os_str().len() > 3000 {
            break; // deep enough to know it is there; std needs full paths
        }
    }
    assert!(depth >= 10, "backing depth {depth}");
}

// ---------------------------------------------------------------------------
// files

#[test]
fn file_io_create_read_write_truncate_sync() {
    let m = routed();
    let f = m.path("msg");
    let mut w = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(&f)
        .unwrap();
    assert_eq!(w.metadata().unwrap().mode() & 0o7777, 0o640 & !0o022);
    w.write_all(b"0123456789").unwrap();
    w.write_all_at(b"AB", 4).unwrap();
    let mut buf = [0u8; 4];
    w.read_exact_at(&mut buf, 3).unwrap();
    assert_eq!(&buf, b"3AB6");
    w.sync_all().unwrap();
    w.sync_data().unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"0123AB6789");
    assert_eq!(fs::read(m.backing("fast", "msg")).unwrap(), b"0123AB6789");

    // A write beyond the end leaves a zero-filled gap.
    w.write_all_at(b"Z", 20).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 21);
    let all = fs::read(&f).unwrap();
    assert_eq!(&all[10..20], &[0u8; 10]);

    // ftruncate down and up.
    w.set_len(4).unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"0123");
    w.set_len(8).unwrap();
    assert_eq!(fs::read(&f).unwrap(), b"0123\0\0\0\0");
    // truncate(2) by path.
    ret(unsafe { libc::truncate(cs(&f).as_ptr(), 2) }).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 2);
    assert_eq!(fs::metadata(m.backing("fast", "msg")).unwrap().len(), 2);
    assert_eq!(
        errno(ret(unsafe { libc::truncate(cs(&m.mnt).as_ptr(), 0) })),
        libc::EISDIR
    );
    drop(w);

    // O_APPEND: the kernel's offsets, appended at the end.
    let mut a = OpenOptions::new().append(true).open(&f).unwrap();
    a.write_all(b"++").unwrap();
    a.write_all(b"--").unwrap();
    drop(a);
    assert_eq!(fs::read(&f).unwrap(), b"01++--");
    // O_TRUNC on open.
    let mut t = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&f)
        .unwrap();
    assert_eq!(fs::metadata(&f).unwrap().len(), 0);
    t.write_all(b"fresh").unwrap();
    drop(t);
    assert_eq!(fs::read(&f).unwrap(), b"fresh");
    // Reading a read-only handle; seeking; EBADF writing it.
    let mut r = File::open(&f).unwrap();
    r.seek(SeekFrom::Start(2)).unwrap();
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "esh");
    assert_eq!(errno(r.write(b"x")), libc::EBADF);
    drop(r); // a read-only passthrough open refuses writers (SEMANTICS.md)

    // A larger file in odd-sized chunks round-trips exactly.
    let data: Vec<u8> = (0..3_000_001u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let mut big = File::create(m.path("big")).unwrap();
    for chunk in data.chunks(77_777) {
        big.write_all(chunk).unwrap();
    }
    big.sync_all().unwrap();
    drop(big);
    assert_eq!(fs::read(m.path("big")).unwrap(), data);
    assert_eq!(fs::read(m.backing("fast", "big")).unwrap(), data);

    // fsyncdir on a directory that has copies on both partitions.
    fs::create_dir(m.backing("slow", "both")).unwrap();
    fs::create_dir(m.backing("fast", "both")).unwrap();
    File::open(m.path("both")).unwrap().sync_all().unwrap();
    File::open(&m.mnt).unwrap().sync_all().unwrap();

    // unlink while open: the open handle keeps working.
    let keep = OpenOptions::new().read(true).write(true).open(&f).unwrap();
    fs::remove_file(&f).unwrap();
    assert_eq!(errno(fs::metadata(&f)), libc::ENOENT);
    assert!(!m.backing("fast", "msg").exists());
    keep.write_all_at(b"still", 0).unwrap();
    let mut b = [0u8; 5];
    keep.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(&b, b"still");
}

#[test]
fn setattr_chmod_chown_utimens() {
    let m = routed();
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o4751)).unwrap();
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o4751);
    assert_eq!(
        fs::metadata(m.backing("fast", "f")).unwrap().mode() & 0o7777,
        0o4751
    );
    fs::set_permissions(&f, fs::Permissions::from_mode(0o600)).unwrap();

    std::os::unix::fs::chown(&f, Some(4242), Some(4343)).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));
    let bmd = fs::metadata(m.backing("fast", "f")).unwrap();
    assert_eq!((bmd.uid(), bmd.gid()), (4242, 4343));
    std::os::unix::fs::chown(&f, None, Some(7)).unwrap();
    assert_eq!(
        (
            fs::metadata(&f).unwrap().uid(),
            fs::metadata(&f).unwrap().gid()
        ),
        (4242, 7)
    );

    // Nanosecond times, set and read back exactly (also before 1970).
    let times = [
        libc::timespec {
            tv_sec: 1_000_000_000,
            tv_nsec: 123_456_789,
        },
        libc::timespec {
            tv_sec: 1_500_000_000,
            tv_nsec: 987_654_321,
        },
    ];
    ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&f).as_ptr(), times.as_ptr(), 0) }).unwrap();
    for path in [f.clone(), m.backing("fast", "f")] {
        let md = fs::metadata(&path).unwrap();
        assert_eq!(
            (md.atime(), md.atime_nsec()),
            (1_000_000_000, 123_456_789),
            "{}",
            path.display()
        );
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 987_654_321),
            "{}",
            path.display()
        );
    }
    let omit_now = [
        libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        libc::timespec {
            tv_sec: -86_400 * 365,
            tv_nsec: 5,
        },
    ];
    ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&f).as_ptr(), omit_now.as_ptr(), 0) }).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert_eq!((md.atime(), md.atime_nsec()), (1_000_000_000, 123_456_789));
    assert_eq!((md.mtime(), md.mtime_nsec()), (-86_400 * 365, 5));
    // UTIME_NOW through an open descriptor (futimens).
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let h = File::open(&f).unwrap();
    let now = [libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_NOW,
    }; 2];
    ret(unsafe { libc::futimens(h.as_raw_fd(), now.as_ptr()) }).unwrap();
    let md = fs::metadata(&f).unwrap();
    assert!(
        md.mtime() >= before && md.atime() >= before,
        "UTIME_NOW gave {}",
        md.mtime()
    );

    // A directory with copies on both partitions changes everywhere.
    fs::create_dir(m.backing("fast", "u")).unwrap();
    fs::create_dir(m.backing("slow", "u")).unwrap();
    fs::set_permissions(m.path("u"), fs::Permissions::from_mode(0o2711)).unwrap();
    std::os::unix::fs::chown(m.path("u"), Some(31), Some(32)).unwrap();
    ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&m.path("u")).as_ptr(), times.as_ptr(), 0) })
        .unwrap();
    for part in ["fast", "slow"] {
        let md = fs::metadata(m.backing(part, "u")).unwrap();
        assert_eq!(
            (md.mode() & 0o7777, md.uid(), md.gid()),
            (0o2711, 31, 32),
            "{part}"
        );
        assert_eq!(
            (md.mtime(), md.mtime_nsec()),
            (1_500_000_000, 987_654_321),
            "{part}"
        );
    }
    // chown of a symlink itself (lchown) leaves its target alone.
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();
    std::os::unix::fs::lchown(m.path("l"), Some(55), Some(56)).unwrap();
    let lmd = fs::symlink_metadata(m.path("l")).unwrap();
    assert_eq!((lmd.uid(), lmd.gid()), (55, 56));
    assert_eq!(fs::metadata(&f).unwrap().uid(), 4242);
}

// ---------------------------------------------------------------------------
// names: rename, link, symlink, mknod

#[test]
fn rename_variants_and_stable_inodes() {
    let m = routed();
    let p = |s: &str| m.path(s);
    fs::write(p("a"), b"A").unwrap();
    fs::write(p("b"), b"B").unwrap();
    let (ia, ib) = (stat_ino(&p("a")), stat_ino(&p("b")));
    assert_ne!(ia, ib);

    // Plain rename keeps the inode number.
    fs::rename(p("a"), p("a2")).unwrap();
    assert_eq!(stat_ino(&p("a2")), ia);
    assert_eq!(errno(fs::metadata(p("a"))), libc::ENOENT);
    assert!(m.backing("fast", "a2").is_file() && !m.backing("fast", "a").exists());

    // Over an existing file: atomically replaced.
    fs::rename(p("a2"), p("b")).unwrap();
    assert_eq!(fs::read(p("b")).unwrap(), b"A");
    assert_eq!(stat_ino(&p("b")), ia);
    assert_eq!(errno(fs::metadata(p("a2"))), libc::ENOENT);
    assert_eq!(names(&m.backing("fast", "")), sorted(&["b"]));

    // RENAME_NOREPLACE.
    fs::write(p("c"), b"C").unwrap();
    assert_eq!(
        errno(renameat2(&p("c"), &p("b"), libc::RENAME_NOREPLACE)),
        libc::EEXIST
    );
    assert_eq!(fs::read(p("b")).unwrap(), b"A");
    assert_eq!(fs::read(p("c")).unwrap(), b"C");
    renameat2(&p("c"), &p("c2"), libc::RENAME_NOREPLACE).unwrap();
    assert_eq!(fs::read(p("c2")).unwrap(), b"C");

    // RENAME_EXCHANGE of two files.
    let ic = stat_ino(&p("c2"));
    renameat2(&p("b"), &p("c2"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(p("b")).unwrap(), b"C");
    assert_eq!(fs::read(p("c2")).unwrap(), b"A");
    assert_eq!((stat_ino(&p("b")), stat_ino(&p("c2"))), (ic, ia));
    assert_eq!(
        errno(renameat2(&p("b"), &p("missing"), libc::RENAME_EXCHANGE)),
        libc::ENOENT
    );
    assert_eq!(
        errno(renameat2(
            &p("b"),
            &p("c2"),
            libc::RENAME_EXCHANGE | libc::RENAME_NOREPLACE
        )),
        libc::EINVAL
    );

    // Directories: rename with contents, inode numbers stable inside.
    fs::create_dir_all(p("d1/sub")).unwrap();
    fs::write(p("d1/sub/m"), b"M").unwrap();
    let (id, im) = (stat_ino(&p("d1")), stat_ino(&p("d1/sub/m")));
    fs::rename(p("d1"), p("d2")).unwrap();
    assert_eq!(stat_ino(&p("d2")), id);
    assert_eq!(stat_ino(&p("d2/sub/m")), im);
    assert_eq!(fs::read(p("d2/sub/m")).unwrap(), b"M");
    assert_eq!(errno(fs::metadata(p("d1"))), libc::ENOENT);
    assert!(m.backing("fast", "d2/sub/m").is_file() && !m.backing("fast", "d1").exists());
    // A new file in the renamed directory lands under its new name.
    fs::write(p("d2/sub/new"), b"N").unwrap();
    assert!(m.backing("fast", "d2/sub/new").is_file());
    // Move a file into another directory and back.
    fs::rename(p("b"), p("d2/sub/b")).unwrap();
    assert_eq!(stat_ino(&p("d2/sub/b")), ic);
    fs::rename(p("d2/sub/b"), p("b")).unwrap();

    // Directory over an empty directory works; over a non-empty one not.
    fs::create_dir(p("empty")).unwrap();
    fs::rename(p("d2/sub"), p("empty")).unwrap();
    assert_eq!(fs::read(p("empty/m")).unwrap(), b"M");
    fs::create_dir_all(p("full/x")).unwrap();
    assert_eq!(errno(fs::rename(p("empty"), p("full"))), libc::ENOTEMPTY);
    assert!(p("empty/m").is_file() && p("full/x").is_dir());
    // Kind mismatches.
    assert_eq!(errno(fs::rename(p("b"), p("full"))), libc::EISDIR);
    assert_eq!(errno(fs::rename(p("full"), p("b"))), libc::ENOTDIR);
    // Into its own subdirectory.
    assert_eq!(errno(fs::rename(p("full"), p("full/x/y"))), libc::EINVAL);
    assert_eq!(errno(fs::rename(p("nothing"), p("x"))), libc::ENOENT);

    // Inode numbers stay stable for the life of the mount.
    let ino = stat_ino(&p("c2"));
    fs::create_dir(p("x1")).unwrap();
    fs::rename(p("c2"), p("x1/c3")).unwrap();
    fs::rename(p("x1"), p("x9")).unwrap();
    assert_eq!(stat_ino(&p("x9/c3")), ino);
}

#[test]
fn rename_exchange_of_directories() {
    let m = routed();
    let p = |s: &str| m.path(s);
    fs::write(p("b"), b"C").unwrap();
    // RENAME_EXCHANGE of two directories on one partition, and of a file
    // with a directory, as on ext4.
    fs::create_dir(p("x1")).unwrap();
    fs::write(p("x1/in1"), b"1").unwrap();
    fs::create_dir(p("x2")).unwrap();
    fs::write(p("x2/in2"), b"2").unwrap();
    renameat2(&p("x1"), &p("x2"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(p("x1/in2")).unwrap(), b"2");
    assert_eq!(fs::read(p("x2/in1")).unwrap(), b"1");
    fs::write(p("x2/after"), b"a").unwrap();
    assert!(m.backing("fast", "x2/after").is_file() && m.backing("fast", "x2/in1").is_file());
    renameat2(&p("b"), &p("x1"), libc::RENAME_EXCHANGE).unwrap();
    assert_eq!(fs::read(p("x1")).unwrap(), b"C");
    assert_eq!(fs::read(p("b/in2")).unwrap(), b"2");
    // The exchanged directory lives on under its new name.
    fs::write(p("b/later"), b"l").unwrap();
    assert!(m.backing("fast", "b/later").is_file());
    fs::rename(p("b"), p("x9")).unwrap();
    assert_eq!(fs::read(p("x9/later")).unwrap(), b"l");

    // Directories whose paths route to different partitions are not
    // swapped (as for a plain directory rename): EXDEV, nothing changes.
    fs::create_dir_all(m.backing("fast", "archive/a")).unwrap();
    fs::write(m.backing("fast", "archive/a/was-archive"), b"w").unwrap();
    fs::create_dir(p("inbox")).unwrap();
    fs::write(p("inbox/was-inbox"), b"i").unwrap();
    let err = renameat2(&p("inbox"), &p("archive/a"), libc::RENAME_EXCHANGE).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EXDEV));
    assert_eq!(fs::read(p("inbox/was-inbox")).unwrap(), b"i");
    assert_eq!(fs::read(p("archive/a/was-archive")).unwrap(), b"w");
}

#[test]
fn hard_links() {
    let m = routed();
    let p = |s: &str| m.path(s);
    fs::create_dir(p("d")).unwrap();
    fs::write(p("orig"), b"linked").unwrap();
    let ino = stat_ino(&p("orig"));
    assert_eq!(fs::metadata(p("orig")).unwrap().nlink(), 1);
    fs::hard_link(p("orig"), p("d/second")).unwrap();
    // Right after link, without waiting for any cache to expire.
    for n in ["orig", "d/second"] {
        let md = fs::symlink_metadata(p(n)).unwrap();
        assert_eq!((md.ino(), md.nlink()), (ino, 2), "{n}");
    }
    assert_eq!(
        fs::metadata(m.backing("fast", "orig")).unwrap().ino(),
        fs::metadata(m.backing("fast", "d/second")).unwrap().ino()
    );
    // Writes through one name show through the other.
    OpenOptions::new()
        .write(true)
        .open(p("d/second"))
        .unwrap()
        .write_all_at(b"L", 0)
        .unwrap();
    assert_eq!(fs::read(p("orig")).unwrap(), b"Linked");
    fs::hard_link(p("orig"), p("third")).unwrap();
    assert_eq!(fs::metadata(p("d/second")).unwrap().nlink(), 3);
    fs::remove_file(p("orig")).unwrap();
    assert_eq!(fs::metadata(p("third")).unwrap().nlink(), 2);
    assert_eq!(fs::metadata(p("d/second")).unwrap().nlink(), 2);
    assert_eq!(stat_ino(&p("third")), ino);
    // Listing shows the same number.
    let e = fs::read_dir(p("d")).unwrap().next().unwrap().unwrap();
    assert_eq!(e.ino(), ino);
    // Errors.
    assert_eq!(
        errno(fs::hard_link(p("third"), p("d/second"))),
        libc::EEXIST
    );
    assert_eq!(errno(fs::hard_link(p("d"), p("dlink"))), libc::EPERM);
    assert_eq!(errno(fs::hard_link(p("missing"), p("x"))), libc::ENOENT);
    // A symlink can be hard-linked too (the link itself).
    std::os::unix::fs::symlink("third", p("sl")).unwrap();
    fs::hard_link(p("sl"), p("sl2")).unwrap();
    assert_eq!(fs::read_link(p("sl2")).unwrap(), Path::new("third"));
    assert_eq!(fs::symlink_metadata(p("sl")).unwrap().nlink(), 2);
}

#[test]
fn symlinks_and_fifos() {
    let m = routed();
    let p = |s: &str| m.path(s);
    fs::write(p("target"), b"T").unwrap();
    std::os::unix::fs::symlink("target", p("rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", p("abs")).unwrap();
    std::os::unix::fs::symlink("dangling/nowhere", p("dang")).unwrap();
    assert_eq!(fs::read_link(p("rel")).unwrap(), Path::new("target"));
    assert_eq!(fs::read_link(p("abs")).unwrap(), Path::new("/etc/hostname"));
    assert!(
        fs::symlink_metadata(p("rel"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::symlink_metadata(p("rel")).unwrap().len(), 6);
    assert_eq!(fs::read(p("rel")).unwrap(), b"T");
    assert_eq!(
        fs::read(p("abs")).unwrap(),
        fs::read("/etc/hostname").unwrap()
    );
    assert_eq!(errno(fs::read(p("dang"))), libc::ENOENT);
    assert_eq!(
        fs::read_link(m.backing("fast", "abs")).unwrap(),
        Path::new("/etc/hostname")
    );
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", p("rel"))),
        libc::EEXIST
    );
    // O_NOFOLLOW on a symlink.
    assert_eq!(
        errno(
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(p("rel"))
        ),
        libc::ELOOP
    );
    // A symlink in a routed directory lands on the routed partition.
    fs::create_dir(p("archive")).unwrap();
    std::os::unix::fs::symlink("../target", p("archive/up")).unwrap();
    assert!(
        fs::symlink_metadata(m.backing("slow", "archive/up"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(p("archive/up")).unwrap(), b"T");
    // A max-length target.
    let long = "x/".repeat(2047) + "y";
    std::os::unix::fs::symlink(&long, p("longlink")).unwrap();
    assert_eq!(fs::read_link(p("longlink")).unwrap(), Path::new(&long));
    fs::remove_file(p("rel")).unwrap();
    assert!(p("target").is_file());

    // FIFOs.
    ret(unsafe { libc::mkfifo(cs(&p("fifo")).as_ptr(), 0o640) }).unwrap();
    let md = fs::symlink_metadata(p("fifo")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&md.file_type()));
    assert_eq!(md.mode() & 0o777, 0o640 & !0o022);
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(
        &fs::symlink_metadata(m.backing("fast", "fifo"))
            .unwrap()
            .file_type()
    ));
    // No reader: a non-blocking writer gets ENXIO.
    assert_eq!(
        errno(
            OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(p("fifo"))
        ),
        libc::ENXIO
    );
    let path = p("fifo");
    let reader = std::thread::spawn(move || fs::read(path).unwrap());
    let mut w = OpenOptions::new().write(true).open(p("fifo")).unwrap();
    w.write_all(b"through the pipe").unwrap();
    drop(w);
    assert_eq!(reader.join().unwrap(), b"through the pipe");
    assert_eq!(
        errno(ret(unsafe { libc::mkfifo(cs(&p("fifo")).as_ptr(), 0o600) })),
        libc::EEXIST
    );
    // Other node types the daemon stores: a socket-file via mknod.
    ret(unsafe { libc::mknod(cs(&p("sock")).as_ptr(), libc::S_IFSOCK | 0o600, 0) }).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &fs::symlink_metadata(p("sock")).unwrap().file_type()
    ));
    // The mount is nodev: a device node can be made but never opened as one.
    fs::remove_file(p("fifo")).unwrap();
    assert_eq!(errno(fs::symlink_metadata(p("fifo"))), libc::ENOENT);
}

// ---------------------------------------------------------------------------
// xattrs, fallocate, seek, copy_file_range

#[test]
fn xattrs() {
    let m = routed();
    let f = m.path("f");
    fs::write(&f, b"x").unwrap();
    setxattr(&f, "user.color", b"blue", 0).unwrap();
    assert_eq!(getxattr(&f, "user.color", 64).unwrap(), b"blue");
    assert_eq!(
        getxattr(&m.backing("fast", "f"), "user.color", 64).unwrap(),
        b"blue"
    );
    assert_eq!(errno(getxattr(&f, "user.color", 2)), libc::ERANGE);
    // Size query.
    let n = CString::new("user.color").unwrap();
    let size = unsafe { libc::getxattr(cs(&f).as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    assert_eq!(size, 4);
    setxattr(&f, "user.empty", b"", 0).unwrap();
    assert_eq!(getxattr(&f, "user.empty", 64).unwrap(), b"");
    let mut l = listxattr(&f).unwrap();
    l.sort();
    assert_eq!(l, ["user.color", "user.empty"]);
    assert_eq!(
        errno(setxattr(&f, "user.color", b"red", libc::XATTR_CREATE)),
        libc::EEXIST
    );
    assert_eq!(
        errno(setxattr(&f, "user.new", b"v", libc::XATTR_REPLACE)),
        libc::ENODATA
    );
    setxattr(&f, "user.color", b"red", libc::XATTR_REPLACE).unwrap();
    assert_eq!(getxattr(&f, "user.color", 64).unwrap(), b"red");
    let big = vec![7u8; 3000];
    setxattr(&f, "user.big", &big, 0).unwrap();
    assert_eq!(getxattr(&f, "user.big", 4096).unwrap(), big);
    let n = CString::new("user.color").unwrap();
    ret(unsafe { libc::removexattr(cs(&f).as_ptr(), n.as_ptr()) }).unwrap();
    assert_eq!(errno(getxattr(&f, "user.color", 64)), libc::ENODATA);
    assert_eq!(
        errno(ret(unsafe {
            libc::removexattr(cs(&f).as_ptr(), n.as_ptr())
        })),
        libc::ENODATA
    );
    assert_eq!(
        errno(getxattr(&m.path("missing"), "user.x", 8)),
        libc::ENOENT
    );
    // On a directory with copies on both partitions.
    fs::create_dir(m.backing("fast", "d")).unwrap();
    fs::create_dir(m.backing("slow", "d")).unwrap();
    setxattr(&m.path("d"), "user.dir", b"both", 0).unwrap();
    assert_eq!(getxattr(&m.path("d"), "user.dir", 64).unwrap(), b"both");
    for part in ["fast", "slow"] {
        assert_eq!(
            getxattr(&m.backing(part, "d"), "user.dir", 64).unwrap(),
            b"both",
            "{part}"
        );
    }
    // trusted.* as root works as on ext4.
    setxattr(&f, "trusted.t", b"1", 0).unwrap();
    assert_eq!(getxattr(&f, "trusted.t", 8).unwrap(), b"1");
    // A symlink: user xattrs are refused as on ext4, lgetxattr finds nothing.
    std::os::unix::fs::symlink("f", m.path("l")).unwrap();
    let name = CString::new("user.x").unwrap();
    let r = unsafe {
        libc::lsetxattr(
            cs(&m.path("l")).as_ptr(),
            name.as_ptr(),
            b"v".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!((r, last_errno()), (-1, libc::EPERM));
    let mut buf = [0u8; 8];
    let r = unsafe {
        libc::lgetxattr(
            cs(&m.path("l")).as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            8,
        )
    };
    assert_eq!((r, last_errno()), (-1, libc::ENODATA));
}

#[test]
fn fallocate_and_seek_data_hole() {
    let m = routed();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("sparse"))
        .unwrap();
    let fd = f.as_raw_fd();
    ret(unsafe { libc::fallocate(fd, 0, 0, 1 << 20) }).unwrap();
    let md = f.metadata().unwrap();
    assert_eq!(md.len(), 1 << 20);
    assert!(
        md.blocks() >= 2048,
        "fallocate allocated {} blocks",
        md.blocks()
    );
    ret(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) }).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);
    assert_eq!(
        fs::metadata(m.backing("fast", "sparse")).unwrap().len(),
        1 << 20
    );
    ret(unsafe {
        libc::fallocate(
            fd,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            1 << 20,
        )
    })
    .unwrap();
    assert_eq!(f.metadata().unwrap().len(), 1 << 20);

    // A sparse file: data at 0..4096 and at 1 MiB..1 MiB+4096.
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("holes"))
        .unwrap();
    g.write_all_at(&[1u8; 4096], 0).unwrap();
    g.write_all_at(&[2u8; 4096], 1 << 20).unwrap();
    g.sync_all().unwrap();
    let gfd = g.as_raw_fd();
    let seek = |off: i64, whence| {
        let r = unsafe { libc::lseek(gfd, off, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r)
        }
    };
    assert_eq!(seek(0, libc::SEEK_DATA).unwrap(), 0);
    assert_eq!(seek(0, libc::SEEK_HOLE).unwrap(), 4096);
    assert_eq!(seek(4096, libc::SEEK_DATA).unwrap(), 1 << 20);
    assert_eq!(
        seek((1 << 20) + 10, libc::SEEK_HOLE).unwrap(),
        (1 << 20) + 4096
    );
    assert_eq!(errno(seek((1 << 20) + 4096, libc::SEEK_DATA)), libc::ENXIO);
    assert_eq!(seek(0, libc::SEEK_END).unwrap(), (1 << 20) + 4096);
    let mut all = Vec::new();
    File::open(m.path("holes"))
        .unwrap()
        .read_to_end(&mut all)
        .unwrap();
    assert_eq!(all.len(), (1 << 20) + 4096);
    assert!(all[4096..1 << 20].iter().all(|b| *b == 0));
    // A read-only open seeks the same way.
    let r = File::open(m.path("holes")).unwrap();
    let off = unsafe { libc::lseek(r.as_raw_fd(), 4096, libc::SEEK_DATA) };
    assert_eq!(off, 1 << 20);
}

fn copy_range(from: &File, off_in: i64, to: &File, off_out: i64, len: usize) -> io::Result<usize> {
    let (mut a, mut b) = (off_in, off_out);
    let n =
        unsafe { libc::copy_file_range(from.as_raw_fd(), &mut a, to.as_raw_fd(), &mut b, len, 0) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[test]
fn copy_file_range_within_and_across_partitions() {
    let m = routed();
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(m.path("src"), &data).unwrap();
    fs::create_dir(m.path("archive")).unwrap();
    let src = File::open(m.path("src")).unwrap();
    for dst in ["dst", "archive/dst"] {
        let out = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(m.path(dst))
            .unwrap();
        let mut done = 0;
        while done < data.len() {
            let n = copy_range(&src, done as i64, &out, done as i64, data.len() - done).unwrap();
            assert!(n > 0, "copy_file_range returned 0 at {done} for {dst}");
            done += n;
        }
        // Past the end of the source: nothing more.
        assert_eq!(
            copy_range(&src, data.len() as i64, &out, 0, 100).unwrap(),
            0
        );
        // A partial range at an offset.
        assert_eq!(
            copy_range(&src, 10, &out, data.len() as i64 + 5, 20).unwrap(),
            20
        );
        drop(out);
        let got = fs::read(m.path(dst)).unwrap();
        assert_eq!(got.len(), data.len() + 25, "{dst}");
        assert_eq!(&got[..data.len()], &data[..], "{dst}");
        assert_eq!(&got[data.len() + 5..], &data[10..30], "{dst}");
    }
    assert_eq!(
        fs::read(m.backing("slow", "archive/dst")).unwrap().len(),
        data.len() + 25
    );
    assert_eq!(
        fs::read(m.backing("fast", "dst")).unwrap().len(),
        data.len() + 25
    );
    // A read-only destination is EBADF.
    let ro = File::open(m.path("dst")).unwrap();
    assert_eq!(errno(copy_range(&src, 0, &ro, 0, 10)), libc::EBADF);
}

// ---------------------------------------------------------------------------
// locks and mmap

#[test]
fn posix_locks_and_flock_between_processes() {
    let m = routed();
    let path = m.path("lockfile");
    fs::write(&path, vec![0u8; 100]).unwrap();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let lock = |fd: i32, ty: i32, start: i64, len: i64, cmd: i32| {
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = ty as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = start;
        fl.l_len = len;
        let r = unsafe { libc::fcntl(fd, cmd, &mut fl) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fl)
        }
    };
    lock(f.as_raw_fd(), libc::F_WRLCK, 0, 10, libc::F_SETLK).unwrap();
    let me = std::process::id() as i32;
    let p2 = path.clone();
    as_user_ok(0, 0, &[], move || {
        let g = ctx("open", OpenOptions::new().read(true).write(true).open(&p2))?;
        let fd = g.as_raw_fd();
        want_errno(
            "F_SETLK on a locked range",
            lock(fd, libc::F_WRLCK, 5, 10, libc::F_SETLK),
            libc::EAGAIN,
        )?;
        want_errno(
            "F_SETLK read on a write-locked range",
            lock(fd, libc::F_RDLCK, 0, 1, libc::F_SETLK),
            libc::EAGAIN,
        )?;
        let fl = ctx("F_GETLK", lock(fd, libc::F_WRLCK, 0, 100, libc::F_GETLK))?;
        check(
            fl.l_type == libc::F_WRLCK as i16
                && fl.l_pid == me
                && fl.l_start == 0
                && fl.l_len == 10,
            || {
                format!(
                    "F_GETLK: type {} pid {} (want {me}) {}+{}",
                    fl.l_type, fl.l_pid, fl.l_start, fl.l_len
                )
            },
        )?;
        ctx(
            "F_SETLK on a free range",
            lock(fd, libc::F_WRLCK, 10, 10, libc::F_SETLK),
        )?;
        Ok(())
    });
    // The child's lock died with it: the range is free again.
    lock(f.as_raw_fd(), libc::F_WRLCK, 10, 10, libc::F_SETLK).unwrap();
    lock(f.as_raw_fd(), libc::F_UNLCK, 0, 0, libc::F_SETLK).unwrap();
    let p3 = path.clone();
    as_user_ok(0, 0, &[], move || {
        let g = ctx("open", OpenOptions::new().read(true).write(true).open(&p3))?;
        ctx(
            "F_SETLK after unlock",
            lock(g.as_raw_fd(), libc::F_WRLCK, 0, 0, libc::F_SETLK),
        )
        .map(drop)
    });

    // flock: exclusive conflicts with another open file description.
    ret(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }).unwrap();
    let p4 = path.clone();
    as_user_ok(0, 0, &[], move || {
        let g = ctx("open", File::open(&p4))?;
        want_errno(
            "flock LOCK_EX|LOCK_NB",
            ret(unsafe { libc::flock(g.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }),
            libc::EWOULDBLOCK,
        )?;
        want_errno(
            "flock LOCK_SH|LOCK_NB",
            ret(unsafe { libc::flock(g.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) }),
            libc::EWOULDBLOCK,
        )
    });
    ret(unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_SH) }).unwrap();
    let p5 = path.clone();
    as_user_ok(0, 0, &[], move || {
        let g = ctx("open", File::open(&p5))?;
        ctx(
            "shared flock",
            ret(unsafe { libc::flock(g.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) }),
        )?;
        want_errno(
            "flock LOCK_EX|LOCK_NB over a shared lock",
            ret(unsafe { libc::flock(g.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) }),
            libc::EWOULDBLOCK,
        )
    });
    // A blocking F_SETLKW waits for the holder and then gets the lock.
    lock(f.as_raw_fd(), libc::F_WRLCK, 0, 0, libc::F_SETLK).unwrap();
    let p6 = path.clone();
    let waiter = std::thread::spawn(move || {
        as_user_ok(0, 0, &[], move || {
            let g = ctx("open", OpenOptions::new().read(true).write(true).open(&p6))?;
            ctx(
                "F_SETLKW",
                lock(g.as_raw_fd(), libc::F_WRLCK, 0, 0, libc::F_SETLKW),
            )
            .map(drop)
        })
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !waiter.is_finished(),
        "F_SETLKW did not wait for the holder"
    );
    lock(f.as_raw_fd(), libc::F_UNLCK, 0, 0, libc::F_SETLK).unwrap();
    within(
        Duration::from_secs(30),
        "F_SETLKW after unlock",
        move || waiter.join().unwrap(),
    );
}

#[test]
fn shared_mmap_write_through() {
    let m = routed();
    for (rel, part) in [("index", "fast"), ("archive/index", "slow")] {
        if rel.contains('/') {
            fs::create_dir_all(m.path("archive")).unwrap();
        }
        let path = m.path(rel);
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        f.set_len(3 * 4096).unwrap();
        let len = 3 * 4096;
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap: {}", io::Error::last_os_error());
        let s = unsafe { std::slice::from_raw_parts_mut(p as *mut u8, len) };
        s[0..5].copy_from_slice(b"HELLO");
        s[5000..5004].copy_from_slice(b"MIDL");
        s[len - 3..].copy_from_slice(b"END");
        assert_eq!(
            unsafe { libc::msync(p, len, libc::MS_SYNC) },
            0,
            "msync: {}",
            io::Error::last_os_error()
        );
        // Visible through the backing file right after msync.
        let back = fs::read(m.backing(part, rel)).unwrap();
        assert_eq!(&back[0..5], b"HELLO", "{rel}");
        assert_eq!(&back[5000..5004], b"MIDL");
        assert_eq!(&back[len - 3..], b"END");
        // A write(2) is seen by the mapping.
        f.write_all_at(b"w", 1).unwrap();
        assert_eq!(s[1], b'w');
        s[2] = b'!';
        assert_eq!(unsafe { libc::munmap(p, len) }, 0);
        drop(f);
        let via_mount = fs::read(&path).unwrap();
        assert_eq!(&via_mount[0..5], b"Hw!LO");
        assert_eq!(&via_mount[5000..5004], b"MIDL");
        assert_eq!(&via_mount[len - 3..], b"END");
        assert_eq!(via_mount.len(), len);
        assert_eq!(
            fs::read(m.backing(part, rel)).unwrap(),
            via_mount,
            "{rel}: backing differs after munmap"
        );
    }
    // A read-only mapping of a file open read-only.
    let r = File::open(m.path("index")).unwrap();
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ,
            libc::MAP_SHARED,
            r.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    assert_eq!(
        unsafe { std::slice::from_raw_parts(p as *const u8, 5) },
        b"Hw!LO"
    );
    unsafe { libc::munmap(p, 4096) };
}

// ---------------------------------------------------------------------------
// statfs, EXDEV and ENOSPC on real separate filesystems

fn statvfs(p: &Path) -> libc::statvfs {
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    ret(unsafe { libc::statvfs(cs(p).as_ptr(), &mut st) }).unwrap();
    st
}

#[test]
fn statfs_of_root_reports_partition_space() {
    let m = routed();
    // Both partitions are on one filesystem: counted once.
    let mine = statvfs(&m.mnt);
    let real = statvfs(&m.backing("fast", ""));
    let bytes = |s: &libc::statvfs, n: u64| n as u128 * s.f_frsize as u128;
    assert_eq!(bytes(&mine, mine.f_blocks), bytes(&real, real.f_blocks));
    let slack = 256u128 << 20; // other tests write meanwhile
    assert!(bytes(&mine, mine.f_bavail).abs_diff(bytes(&real, real.f_bavail)) < slack);
    assert!(bytes(&mine, mine.f_bfree).abs_diff(bytes(&real, real.f_bfree)) < slack);
    assert_eq!(mine.f_namemax, 255);
    assert!(mine.f_bsize > 0 && mine.f_frsize > 0);
    // statfs of a subdirectory and of a file (no quota layout): the same.
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), b"x").unwrap();
    assert_eq!(statvfs(&m.path("d")).f_blocks, mine.f_blocks);
    assert_eq!(statvfs(&m.path("d/f")).f_blocks, mine.f_blocks);
}

#[test]
fn cross_partition_exdev_on_loop_filesystems() {
    let (l1, l2) = (LoopFs::ext4(16), LoopFs::ext4(24));
    let m = Spec::at(&[("fast", &l1.dir), ("slow", &l2.dir)])
        .extra(ROUTES)
        .mount_with_top(TOP);
    let p = |s: &str| m.path(s);

    // statfs of the root = both filesystems together.
    let mine = statvfs(&m.mnt);
    let (a, b) = (statvfs(&l1.dir), statvfs(&l2.dir));
    let total = |s: &libc::statvfs| s.f_blocks as u128 * s.f_frsize as u128;
    let free = |s: &libc::statvfs| s.f_bavail as u128 * s.f_frsize as u128;
    assert!(
        total(&mine).abs_diff(total(&a) + total(&b)) <= 8192,
        "{} vs {}",
        total(&mine),
        total(&a) + total(&b)
    );
    assert!(free(&mine).abs_diff(free(&a) + free(&b)) <= 8192);

    fs::create_dir_all(p("inbox")).unwrap();
    fs::create_dir_all(p("archive/2024")).unwrap();
    fs::write(p("inbox/m1"), b"one").unwrap();
    fs::write(p("archive/2024/old"), b"old").unwrap();
    assert!(l1.dir.join("inbox/m1").is_file() && l2.dir.join("archive/2024/old").is_file());
    // File rename and link across: EXDEV, nothing moved or copied.
    assert_eq!(
        errno(fs::rename(p("inbox/m1"), p("archive/2024/m1"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(fs::hard_link(p("inbox/m1"), p("archive/2024/m1"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(fs::rename(p("archive/2024/old"), p("inbox/old"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(fs::hard_link(p("archive/2024/old"), p("inbox/old"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(renameat2(
            &p("inbox/m1"),
            &p("archive/2024/old"),
            libc::RENAME_EXCHANGE
        )),
        libc::EXDEV
    );
    assert_eq!(
        errno(renameat2(
            &p("inbox/m1"),
            &p("archive/2024/x"),
            libc::RENAME_NOREPLACE
        )),
        libc::EXDEV
    );
    // Over an existing name on the other partition: also EXDEV, target kept.
    assert_eq!(
        errno(fs::rename(p("inbox/m1"), p("archive/2024/old"))),
        libc::EXDEV
    );
    assert_eq!(fs::read(p("archive/2024/old")).unwrap(), b"old");
    assert_eq!(fs::read(p("inbox/m1")).unwrap(), b"one");
    assert!(!p("archive/2024/m1").exists() && !p("inbox/old").exists());
    assert!(!l2.dir.join("archive/2024/m1").exists() && !l1.dir.join("archive").exists());
    // Directory rename across routes: EXDEV.
    fs::create_dir(p("inbox/folder")).unwrap();
    assert_eq!(
        errno(fs::rename(p("inbox/folder"), p("archive/folder"))),
        libc::EXDEV
    );
    assert_eq!(
        errno(fs::rename(p("archive/2024"), p("y2024"))),
        libc::EXDEV
    );
    assert!(p("inbox/folder").is_dir() && p("archive/2024/old").is_file());
    // `mv` falls back to copying, which works.
    let st = Command::new("mv")
        .arg(p("inbox/m1"))
        .arg(p("archive/2024/m1"))
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(fs::read(l2.dir.join("archive/2024/m1")).unwrap(), b"one");
    assert!(!l1.dir.join("inbox/m1").exists());
    // Within one partition: native and atomic.
    fs::rename(p("archive/2024/m1"), p("archive/m1")).unwrap();
    fs::hard_link(p("archive/m1"), p("archive/2024/m1-link")).unwrap();
    assert_eq!(fs::metadata(l2.dir.join("archive/m1")).unwrap().nlink(), 2);
    fs::rename(p("archive/2024"), p("archive/y2024")).unwrap();
    assert!(l2.dir.join("archive/y2024/old").is_file());
    drop(m);
}

#[test]
fn enospc_when_a_partition_fills() {
    let slow = LoopFs::ext4(8);
    let fast = tempfile::Builder::new()
        .prefix("spoolfs-fast")
        .tempdir()
        .unwrap();
    let m = Spec::at(&[("fast", fast.path()), ("slow", &slow.dir)])
        .extra(ROUTES)
        .mount_with_top(TOP);
    fs::create_dir(m.path("archive")).unwrap();
    let keep: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("archive/keep"), &keep).unwrap();

    let mut fill = File::create(m.path("archive/fill")).unwrap();
    let chunk = vec![0xabu8; 256 * 1024];
    let mut written = 0u64;
    let err = loop {
        match fill.write_all(&chunk) {
            Ok(()) => written += chunk.len() as u64,
            Err(e) => break e,
        }
        assert!(
            written < 64 << 20,
            "wrote {written} bytes into an 8 MiB filesystem"
        );
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written > 2 << 20, "only {written} bytes fit");
    drop(fill);
    // Other files are intact, the mount and the other partition still work.
    assert_eq!(fs::read(m.path("archive/keep")).unwrap(), keep);
    assert_eq!(
        errno(fs::write(m.path("archive/more"), vec![1u8; 1 << 20])),
        libc::ENOSPC
    );
    fs::write(m.path("inbox-file"), vec![7u8; 2 << 20]).unwrap();
    assert_eq!(
        fs::read(fast.path().join("inbox-file")).unwrap().len(),
        2 << 20
    );
    assert!(fs::metadata(m.path("archive/fill")).unwrap().len() >= written);
    // Freeing space makes the partition writable again.
    fs::remove_file(m.path("archive/fill")).unwrap();
    let _ = fs::remove_file(m.path("archive/more"));
    // The blocks are freed when the daemon drops its last descriptor on the
    // file, i.e. when the kernel's (asynchronous) RELEASE and FORGET arrive:
    // within moments, not necessarily before unlink(2) returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let v = statvfs(&slow.dir);
        if v.f_bavail * v.f_frsize >= 4 << 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "space of the unlinked file never came back"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    fs::write(m.path("archive/after"), vec![3u8; 1 << 20]).unwrap();
    assert_eq!(
        fs::read(slow.dir.join("archive/after")).unwrap().len(),
        1 << 20
    );
    drop(m);
}

// ---------------------------------------------------------------------------
// permissions

#[test]
fn permissions_as_unprivileged_users() {
    let m = routed();
    open_to_all(&m);
    let p = |s: &str| m.path(s);
    fs::create_dir(p("pub")).unwrap();
    fs::set_permissions(p("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(p("secret"), b"root only").unwrap();
    fs::set_permissions(p("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(p("pub/rootfile"), b"r").unwrap();
    fs::set_permissions(p("pub/rootfile"), fs::Permissions::from_mode(0o644)).unwrap();

    let (pub_, secret, root) = (p("pub"), p("secret"), m.mnt.clone());
    as_user_ok(65534, 65534, &[], move || {
        unsafe { libc::umask(0o027) };
        let f = pub_.join("by-nobody");
        let mut h = ctx(
            "create",
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&f),
        )?;
        ctx("write", h.write_all(b"mine"))?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (65534, 65534, 0o640),
            || {
                format!(
                    "new file: uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        ctx("mkdir", fs::create_dir(pub_.join("dir-by-nobody")))?;
        let md = ctx("stat dir", fs::metadata(pub_.join("dir-by-nobody")))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (65534, 65534, 0o750),
            || {
                format!(
                    "new dir: uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        ctx(
            "symlink",
            std::os::unix::fs::symlink("by-nobody", pub_.join("link-by-nobody")),
        )?;
        let md = ctx(
            "lstat link",
            fs::symlink_metadata(pub_.join("link-by-nobody")),
        )?;
        check((md.uid(), md.gid()) == (65534, 65534), || {
            format!("symlink owned by {}:{}", md.uid(), md.gid())
        })?;
        ctx(
            "mkfifo",
            ret(unsafe { libc::mkfifo(cs(&pub_.join("fifo-by-nobody")).as_ptr(), 0o666) }),
        )?;
        let md = ctx(
            "lstat fifo",
            fs::symlink_metadata(pub_.join("fifo-by-nobody")),
        )?;
        check((md.uid(), md.mode() & 0o777) == (65534, 0o640), || {
            format!("fifo {} {:o}", md.uid(), md.mode())
        })?;
        // Root's files: EACCES where ext4 says so.
        want_errno("read 0600 root file", File::open(&secret), libc::EACCES)?;
        want_errno(
            "write 0600 root file",
            OpenOptions::new().write(true).open(&secret),
            libc::EACCES,
        )?;
        want_errno(
            "write 0644 root file",
            OpenOptions::new().write(true).open(pub_.join("rootfile")),
            libc::EACCES,
        )?;
        ctx("read 0644 root file", fs::read(pub_.join("rootfile")))?;
        want_errno(
            "access W_OK",
            ret(unsafe { libc::access(cs(&secret).as_ptr(), libc::W_OK) }),
            libc::EACCES,
        )?;
        want_errno(
            "create in root's 0755 dir",
            fs::write(root.join("nope"), b""),
            libc::EACCES,
        )?;
        want_errno(
            "mkdir in root's 0755 dir",
            fs::create_dir(root.join("nope")),
            libc::EACCES,
        )?;
        want_errno(
            "unlink root's file in root's dir",
            fs::remove_file(&secret),
            libc::EACCES,
        )?;
        want_errno(
            "chmod root's file",
            fs::set_permissions(pub_.join("rootfile"), fs::Permissions::from_mode(0o777)),
            libc::EPERM,
        )?;
        want_errno(
            "chown to root",
            std::os::unix::fs::chown(&f, Some(0), None),
            libc::EPERM,
        )?;
        want_errno(
            "chown to a group not mine",
            std::os::unix::fs::chown(&f, None, Some(0)),
            libc::EPERM,
        )?;
        let t = [libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        }; 2];
        want_errno(
            "utimens on root's file",
            ret(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    cs(&pub_.join("rootfile")).as_ptr(),
                    t.as_ptr(),
                    0,
                )
            }),
            libc::EPERM,
        )?;
        want_errno(
            "setxattr on root's file",
            setxattr(&pub_.join("rootfile"), "user.x", b"1", 0),
            libc::EACCES,
        )?;
        ctx("setxattr on own file", setxattr(&f, "user.x", b"1", 0))?;
        ctx(
            "chmod own file",
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)),
        )?;
        ctx(
            "utimens own file",
            ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&f).as_ptr(), t.as_ptr(), 0) }),
        )?;
        ctx("rename own file", fs::rename(&f, pub_.join("renamed")))?;
        ctx("unlink own file", fs::remove_file(pub_.join("renamed")))?;
        Ok(())
    });
    for (rel, want) in [
        ("pub/dir-by-nobody", (65534, 65534, 0o750)),
        ("pub/fifo-by-nobody", (65534, 65534, 0o640)),
    ] {
        let md = fs::symlink_metadata(m.backing("fast", rel)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            want,
            "backing {rel}"
        );
    }
    assert_eq!(fs::read(p("secret")).unwrap(), b"root only");

    // A made-up user and group with no passwd entry.
    let pub2 = p("pub");
    as_user_ok(4242, 4343, &[], move || {
        unsafe { libc::umask(0o002) };
        let f = pub2.join("by-4242");
        ctx("write", fs::write(&f, b"x"))?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (4242, 4343, 0o664),
            || {
                format!(
                    "uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        // Nobody's private directory is closed to us.
        want_errno(
            "list nobody's 0750 dir",
            fs::read_dir(pub2.join("dir-by-nobody")),
            libc::EACCES,
        )?;
        want_errno(
            "create in nobody's 0750 dir",
            fs::write(pub2.join("dir-by-nobody/x"), b""),
            libc::EACCES,
        )?;
        Ok(())
    });
    let md = fs::metadata(m.backing("fast", "pub/by-4242")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));

    // A set-group-ID directory passes its group on, and its bit to subdirs.
    fs::create_dir(p("sgid")).unwrap();
    std::os::unix::fs::chown(p("sgid"), None, Some(5555)).unwrap();
    fs::set_permissions(p("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();
    let sg = p("sgid");
    as_user_ok(4242, 4343, &[], move || {
        unsafe { libc::umask(0) };
        ctx("create", fs::write(sg.join("f"), b"x"))?;
        ctx("mkdir", fs::create_dir(sg.join("d")))?;
        let f = ctx("stat f", fs::metadata(sg.join("f")))?;
        let d = ctx("stat d", fs::metadata(sg.join("d")))?;
        check((f.uid(), f.gid()) == (4242, 5555), || {
            format!("file in sgid dir: {}:{}", f.uid(), f.gid())
        })?;
        check(
            (d.uid(), d.gid()) == (4242, 5555) && d.mode() & 0o2000 != 0,
            || {
                format!(
                    "dir in sgid dir: {}:{} mode {:o}",
                    d.uid(),
                    d.gid(),
                    d.mode()
                )
            },
        )
    });
    // Writing to a setuid/setgid file as another user clears the bits.
    fs::write(p("pub/suid"), b"0").unwrap();
    std::os::unix::fs::chown(p("pub/suid"), Some(4242), Some(4343)).unwrap();
    fs::set_permissions(p("pub/suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    let su = p("pub/suid");
    as_user_ok(5000, 5000, &[], move || {
        ctx("write", fs::write(&su, b"changed"))
    });
    assert_eq!(fs::metadata(p("pub/suid")).unwrap().mode() & 0o7777, 0o777);
    assert_eq!(
        fs::metadata(m.backing("fast", "pub/suid")).unwrap().mode() & 0o7777,
        0o777
    );
}

#[test]
fn supplementary_group_chown() {
    let m = routed();
    open_to_all(&m);
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let dir = m.path("pub");
    as_user_ok(4242, 4343, &[4343, 5555, 6000], move || {
        let f = dir.join("f");
        ctx("create", fs::write(&f, b"x"))?;
        ctx(
            "chgrp to a supplementary group",
            std::os::unix::fs::chown(&f, None, Some(5555)),
        )?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(md.gid() == 5555, || format!("gid {} after chgrp", md.gid()))?;
        ctx(
            "chown to self, other supplementary group",
            std::os::unix::fs::chown(&f, Some(4242), Some(6000)),
        )?;
        want_errno(
            "chgrp to a group not mine",
            std::os::unix::fs::chown(&f, None, Some(7777)),
            libc::EPERM,
        )?;
        // The group bits work for a member of a supplementary group.
        ctx(
            "chmod 0060",
            fs::set_permissions(&f, fs::Permissions::from_mode(0o060)),
        )?;
        // The owner class wins over the group class, as on ext4.
        want_errno("owner read with 0060", fs::read(&f), libc::EACCES)?;
        Ok(())
    });
    // Another member of the file's group (a supplementary group) may read.
    let g = m.path("pub/f");
    as_user_ok(4245, 4245, &[6000], move || {
        ctx("read via supplementary group", fs::read(&g)).map(drop)
    });
    let md = fs::metadata(m.backing("fast", "pub/f")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (4242, 6000, 0o060));
    // Someone outside those groups is refused by the group bits.
    let f = m.path("pub/f");
    as_user_ok(4244, 4244, &[5555], move || {
        want_errno("read as non-member", fs::read(&f), libc::EACCES)
    });
}

// ---------------------------------------------------------------------------
// escapes

#[test]
fn planted_symlinks_are_returned_not_followed() {
    let m = routed();
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    fs::write(outside.path().join("canary"), b"outside").unwrap();
    let b = |s: &str| m.backing("fast", s);
    fs::create_dir(b("box")).unwrap();
    std::os::unix::fs::symlink("/etc", b("box/etc")).unwrap();
    std::os::unix::fs::symlink("../../", b("box/up")).unwrap();
    std::os::unix::fs::symlink(outside.path(), b("box/out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("canary"), b("box/canary")).unwrap();

    for (name, target) in [
        ("etc", PathBuf::from("/etc")),
        ("up", PathBuf::from("../../")),
        ("out", outside.path().into()),
    ] {
        let md = fs::symlink_metadata(m.path("box").join(name)).unwrap();
        assert!(
            md.file_type().is_symlink(),
            "{name} is not shown as a symlink"
        );
        assert_eq!(fs::read_link(m.path("box").join(name)).unwrap(), target);
    }
    // Listing shows them as symlinks.
    for e in fs::read_dir(m.path("box")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_symlink());
    }
    // Following happens in the caller's namespace, like any symlink.
    assert_eq!(
        fs::read(m.path("box/etc/hostname")).unwrap(),
        fs::read("/etc/hostname").unwrap()
    );
    assert_eq!(fs::read(m.path("box/canary")).unwrap(), b"outside");
    // `../../` from box resolves in the mount: box/.. is the root, root/.. is
    // the mount point's parent (the test's temp dir) — not a partition path.
    let up = fs::canonicalize(m.path("box/up")).unwrap();
    assert_eq!(up, fs::canonicalize(m.tmp.path()).unwrap());

    // Operations on the symlink itself never reach its target.
    fs::set_permissions(
        outside.path().join("canary"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::lchown(m.path("box/canary"), Some(4242), Some(4242)).unwrap();
    let cmd = fs::metadata(outside.path().join("canary")).unwrap();
    assert_eq!(
        (cmd.uid(), cmd.gid()),
        (0, 0),
        "lchown through the mount changed the target"
    );
    fs::remove_file(m.path("box/canary")).unwrap();
    assert!(outside.path().join("canary").is_file());
    fs::rename(m.path("box/out"), m.path("box/out2")).unwrap();
    assert!(outside.path().is_dir());
    assert_eq!(names(outside.path()), sorted(&["canary"]));
    // truncate through the daemon of a symlink's node is refused, not followed:
    // the kernel follows `truncate(path)` itself, so use the inode directly.
    let lpath = m.path("box/etc");
    let fd = OpenOptions::new()
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .read(true)
        .open(&lpath)
        .unwrap();
    let n = CString::new("user.x").unwrap();
    let proc = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    let r = unsafe { libc::lsetxattr(proc.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(fs::metadata("/etc").unwrap().uid(), 0);
}

#[test]
fn metadata_changes_on_planted_symlinks_stay_on_the_link() {
    let m = routed();
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"v").unwrap();
    let t0 = [libc::timespec {
        tv_sec: 1_000,
        tv_nsec: 0,
    }; 2];
    ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&victim).as_ptr(), t0.as_ptr(), 0) }).unwrap();
    std::os::unix::fs::symlink(&victim, m.backing("fast", "planted")).unwrap();
    let link = m.path("planted");

    // lutimes: the link's times change, the target's do not.
    let t = [libc::timespec {
        tv_sec: 2_000_000,
        tv_nsec: 42,
    }; 2];
    ret(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cs(&link).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap();
    let lmd = fs::symlink_metadata(&link).unwrap();
    assert_eq!((lmd.mtime(), lmd.mtime_nsec()), (2_000_000, 42));
    let vmd = fs::metadata(&victim).unwrap();
    assert_eq!(
        vmd.mtime(),
        1_000,
        "lutimes through the mount changed a file outside the partitions"
    );
    // lchown likewise.
    std::os::unix::fs::lchown(&link, Some(4242), Some(4242)).unwrap();
    let vmd = fs::metadata(&victim).unwrap();
    assert_eq!((vmd.uid(), vmd.gid()), (0, 0));
    // xattrs on the link: none listed, none settable (as on ext4), and the
    // target untouched.
    let mut buf = [0u8; 256];
    let n = unsafe { libc::llistxattr(cs(&link).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr on a symlink: {}",
        io::Error::last_os_error()
    );
    assert!(!buf[..n as usize].windows(5).any(|w| w == b"user."));
    let name = CString::new("user.evil").unwrap();
    let r = unsafe {
        libc::lsetxattr(
            cs(&link).as_ptr(),
            name.as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!((r, last_errno()), (-1, libc::EPERM));
    assert_eq!(errno(getxattr(&victim, "user.evil", 8)), libc::ENODATA);
    // On a FIFO the daemon made: an empty list, as on ext4.
    ret(unsafe { libc::mkfifo(cs(&m.path("fifo")).as_ptr(), 0o644) }).unwrap();
    let n = unsafe {
        libc::llistxattr(
            cs(&m.path("fifo")).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "llistxattr on a fifo: {}",
        io::Error::last_os_error()
    );
    assert_eq!(fs::read(&victim).unwrap(), b"v");
}

#[test]
fn planted_symlink_parents_never_lead_outside() {
    let routes = format!("{ROUTES}[[route]]\nmatch = \"vault/**\"\npartition = \"slow\"\n");
    let m = Spec::new(&["fast", "slow"])
        .extra(&routes)
        .mount_with_top(TOP);
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    let out = outside.path();
    // `archive` is a real directory on fast, but on slow (where routing
    // sends its new entries) a symlink to a directory outside.
    fs::create_dir(m.backing("fast", "archive")).unwrap();
    fs::write(m.backing("fast", "archive/existing"), b"e").unwrap();
    std::os::unix::fs::symlink(out, m.backing("slow", "archive")).unwrap();
    // Deeper: `vault` is real on both, `vault/box` real on fast and a
    // planted symlink on slow.
    fs::create_dir_all(m.backing("fast", "vault/box")).unwrap();
    fs::write(m.backing("fast", "vault/box/existing"), b"e").unwrap();
    fs::create_dir_all(m.backing("slow", "vault")).unwrap();
    std::os::unix::fs::symlink(out, m.backing("slow", "vault/box")).unwrap();

    assert!(m.path("archive").is_dir());
    assert_eq!(names(&m.path("archive")), sorted(&["existing"]));
    assert!(m.path("vault/box").is_dir());
    assert_eq!(names(&m.path("vault/box")), sorted(&["existing"]));
    type Op = Box<dyn Fn(&Path) -> io::Result<()>>;
    let attempts: Vec<(&str, Op)> = vec![
        ("create", Box::new(|p: &Path| fs::write(p, b"escaped"))),
        ("mkdir", Box::new(|p: &Path| fs::create_dir(p))),
        (
            "symlink",
            Box::new(|p: &Path| std::os::unix::fs::symlink("x", p)),
        ),
        (
            "mkfifo",
            Box::new(|p: &Path| ret(unsafe { libc::mkfifo(cs(p).as_ptr(), 0o644) }).map(drop)),
        ),
        (
            "link",
            Box::new(|p: &Path| fs::hard_link(p.parent().unwrap().join("existing"), p)),
        ),
        (
            "rename",
            Box::new(|p: &Path| {
                // Succeeds natively on fast (where the file lives); put it back.
                let existing = p.parent().unwrap().join("existing");
                fs::rename(&existing, p)?;
                fs::rename(p, &existing)
            }),
        ),
        (
            "mkdir -p",
            Box::new(|p: &Path| fs::create_dir_all(p.join("a/b/c"))),
        ),
    ];
    for dir in ["archive", "vault/box"] {
        for (what, op) in &attempts {
            let target = m.path(dir).join(format!("via-{what}"));
            let _ = op(&target);
            let leaked: Vec<_> = fs::read_dir(out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                leaked.is_empty(),
                "{what} in {dir} created {leaked:?} outside the partitions"
            );
        }
        assert_eq!(
            fs::read(m.path(dir).join("existing")).unwrap(),
            b"e",
            "{dir}"
        );
    }
    // The symlinks on slow are left alone.
    assert!(
        fs::symlink_metadata(m.backing("slow", "archive"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(m.backing("slow", "vault/box"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A planted symlink in the place of a partition's copy of the *root*'s
    // child is not merged either: nothing under `out` is listed.
    fs::write(out.join("canary"), b"c").unwrap();
    for dir in ["archive", "vault/box"] {
        let listed = names(&m.path(dir));
        assert!(
            !listed.contains(&OsString::from("canary")),
            "{dir}: {listed:?}"
        );
        assert_eq!(
            errno(fs::metadata(m.path(dir).join("canary"))),
            libc::ENOENT
        );
    }
    fs::remove_file(out.join("canary")).unwrap();
}

// ---------------------------------------------------------------------------
// concurrency

#[test]
fn eight_threads_write_200_files_each() {
    let m = routed();
    fs::create_dir(m.path("archive")).unwrap();
    let content = |t: usize, i: usize| -> Vec<u8> {
        let n = 1 + (t * 7919 + i * 104729) % 20000;
        (0..n).map(|k| ((k * 31 + t * 7 + i) % 256) as u8).collect()
    };
    let workers: Vec<_> = (0..8)
        .map(|t| {
            let root = m.mnt.clone();
            std::thread::spawn(move || {
                let dir = if t % 2 == 0 {
                    root.join(format!("t{t}"))
                } else {
                    root.join(format!("archive/t{t}"))
                };
                fs::create_dir(&dir).unwrap();
                for i in 0..200 {
                    let mut f = File::create(dir.join(format!("f{i}"))).unwrap();
                    let c = content(t, i);
                    let (a, b) = c.split_at(c.len() / 2);
                    f.write_all(a).unwrap();
                    f.write_all(b).unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    for t in 0..8 {
        let (rel, part) = if t % 2 == 0 {
            (format!("t{t}"), "fast")
        } else {
            (format!("archive/t{t}"), "slow")
        };
        assert_eq!(fs::read_dir(m.path(&rel)).unwrap().count(), 200);
        for i in 0..200 {
            let want = content(t, i);
            assert_eq!(
                fs::read(m.path(&format!("{rel}/f{i}"))).unwrap(),
                want,
                "{rel}/f{i}"
            );
            assert_eq!(
                fs::read(m.backing(part, &format!("{rel}/f{i}"))).unwrap(),
                want,
                "backing {rel}/f{i}"
            );
        }
    }
}

#[test]
fn concurrent_create_rename_unlink_in_one_directory() {
    let m = routed();
    fs::create_dir(m.path("spool")).unwrap();
    let workers: Vec<_> = (0..6)
        .map(|t| {
            let dir = m.path("spool");
            std::thread::spawn(move || {
                for i in 0..150 {
                    let tmp = dir.join(format!("tmp-{t}-{i}"));
                    fs::write(&tmp, format!("{t}:{i}")).unwrap();
                    fs::rename(&tmp, dir.join(format!("msg-{t}-{i}"))).unwrap();
                    if i % 3 == 0 {
                        fs::remove_file(dir.join(format!("msg-{t}-{i}"))).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let listed = names(&m.path("spool"));
    assert_eq!(listed.len(), 6 * 100);
    for t in 0..6 {
        for i in (0..150).filter(|i| i % 3 != 0) {
            assert_eq!(
                fs::read_to_string(m.path(&format!("spool/msg-{t}-{i}"))).unwrap(),
                format!("{t}:{i}")
            );
        }
    }
    assert_eq!(names(&m.backing("fast", "spool")), listed);
}

/// A frozen filesystem (FIFREEZE), thawed on drop — in-process, so a failing
/// test never needs to spawn anything (whose exec would close inherited
/// descriptors) to leave the daemon and the unmount unstuck.
struct Frozen(File);

const FIFREEZE: libc::c_ulong = 0xC004_5877;
const FITHAW: libc::c_ulong = 0xC004_5878;

/// A frozen filesystem blocks `sync(2)` machine-wide, so a watchdog thaws
/// it after a bound even if the test is stuck and never drops the guard.
const FREEZE_BOUND: Duration = Duration::from_secs(20);

impl Frozen {
    fn freeze(dir: &Path) -> Frozen {
        let f = File::open(dir).unwrap();
        ret(unsafe { libc::ioctl(f.as_raw_fd(), FIFREEZE, 0) }).expect("FIFREEZE");
        let watchdog = f.try_clone().unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(FREEZE_BOUND);
            unsafe { libc::ioctl(watchdog.as_raw_fd(), FITHAW, 0) };
        });
        Frozen(f)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        unsafe { libc::ioctl(self.0.as_raw_fd(), FITHAW, 0) };
    }
}

#[test]
fn one_slow_request_does_not_stall_others() {
    let slow = LoopFs::ext4(16);
    let fast = tempfile::Builder::new()
        .prefix("spoolfs-fast")
        .tempdir()
        .unwrap();
    let m = Spec::at(&[("fast", fast.path()), ("slow", &slow.dir)])
        .extra(ROUTES)
        .mount_with_top(TOP);
    fs::create_dir(m.path("archive")).unwrap();
    fs::write(m.path("archive/frozen"), b"before").unwrap();
    for i in 0..50 {
        fs::write(m.path(&format!("f{i}")), format!("{i}")).unwrap();
    }
    // Freeze the archive partition: a write there blocks inside the daemon
    // (in the backing pwrite) until it is thawed.
    let thaw = Frozen::freeze(&slow.dir);
    let frozen = m.path("archive/frozen");
    let writer = std::thread::spawn(move || {
        let mut f = OpenOptions::new().write(true).open(&frozen).unwrap();
        f.write_all(b"after thaw").unwrap();
    });
    // A second slow request: a FIFO open that waits for a writer.
    ret(unsafe { libc::mkfifo(cs(&m.path("fifo")).as_ptr(), 0o600) }).unwrap();
    let fifo = m.path("fifo");
    let fifo_reader = std::thread::spawn(move || fs::read(fifo).unwrap());
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !writer.is_finished(),
        "the write to a frozen partition did not block"
    );

    // Meanwhile everything else keeps being served.
    let root = m.mnt.clone();
    within(
        Duration::from_secs(30),
        "requests while one is stuck",
        move || {
            for round in 0..20 {
                for i in 0..50 {
                    let p = root.join(format!("f{i}"));
                    assert_eq!(fs::read_to_string(&p).unwrap(), format!("{i}"));
                    fs::metadata(&p).unwrap();
                }
                fs::write(root.join(format!("new{round}")), b"n").unwrap();
                fs::read_dir(&root).unwrap().count();
                fs::metadata(root.join("archive/frozen")).unwrap();
                // Opening and closing the very file being written.
                drop(File::open(root.join("archive/frozen")).unwrap());
            }
        },
    );
    assert!(
        !writer.is_finished(),
        "the frozen write finished before thaw"
    );
    drop(thaw);
    within(
        Duration::from_secs(30),
        "the frozen write after thaw",
        move || writer.join().unwrap(),
    );
    fs::write(m.path("fifo"), b"wake").unwrap();
    assert_eq!(
        within(Duration::from_secs(30), "fifo reader", move || fifo_reader
            .join()
            .unwrap()),
        b"wake"
    );
    assert_eq!(fs::read(m.path("archive/frozen")).unwrap(), b"after thaw");
    drop(m);
}

// ---------------------------------------------------------------------------
// the daemon's life

#[test]
fn sigterm_unmounts_and_exits_0() {
    let mut m = routed();
    fs::write(m.path("f"), b"x").unwrap();
    let _open = File::open(m.path("f")).unwrap(); // an open file does not prevent it
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGTERM) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(&m.mnt) {
        assert!(
            Instant::now() < deadline,
            "still mounted 20 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(_open);
    let status = m.stop().expect("daemon was running");
    assert!(status.success(), "exit status {status}:\n{}", m.log_text());
    assert!(m.log_text().contains("unmounted"), "{}", m.log_text());
    // The data is on the partition, and the mount point is an empty dir again.
    assert_eq!(fs::read(m.backing("fast", "f")).unwrap(), b"x");
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

#[test]
fn sigint_and_fusermount_also_end_cleanly() {
    let mut m = routed();
    assert_eq!(unsafe { libc::kill(m.pid() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while is_mounted(&m.mnt) {
        assert!(Instant::now() < deadline, "still mounted 20 s after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m.stop().unwrap().success());
    m.spawn();
    fs::write(m.path("g"), b"y").unwrap();
    let st = m.stop().unwrap(); // fusermount3 -u
    assert!(st.success(), "exit after fusermount3 -u: {st}");
    assert!(!is_mounted(&m.mnt));
}

#[test]
fn mounting_with_a_missing_partition_is_refused() {
    let tmp = tempfile::Builder::new()
        .prefix("spoolfs-missing")
        .tempdir()
        .unwrap();
    let mnt = tmp.path().join("mnt");
    let fast = tmp.path().join("fast");
    fs::create_dir_all(&mnt).unwrap();
    fs::create_dir_all(&fast).unwrap();
    let missing = tmp.path().join("no-such-dir");
    let cfg = tmp.path().join("spoolfs.toml");
    fs::write(
        &cfg,
        format!(
            "default_partition = \"fast\"\n[partitions]\nfast = \"{}\"\nslowdisk = \"{}\"\n{ROUTES}[control]\nstate_dir = \"{}\"\n",
            fast.display(),
            missing.display(),
            tmp.path().join("state").display()
        )
        .replace("partition = \"slow\"", "partition = \"slowdisk\""),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(&cfg)
        .arg(&mnt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = within(
        Duration::from_secs(30),
        "spoolfs mount with a missing partition",
        move || child.wait_with_output().unwrap(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    if is_mounted(&mnt) {
        let _ = Command::new("fusermount3").arg("-u").arg(&mnt).status();
        panic!("mounted despite a missing partition");
    }
    assert!(!out.status.success(), "exit status {}", out.status);
    assert!(
        stderr.contains("slowdisk"),
        "stderr does not name the partition: {stderr}"
    );
    assert!(
        stderr.contains(&*missing.to_string_lossy()),
        "stderr does not name the path: {stderr}"
    );
    assert!(
        stderr.contains(&*cfg.to_string_lossy()),
        "stderr does not name the config file: {stderr}"
    );
    assert!(!missing.exists(), "the missing partition was created");

    // `check` refuses it the same way, and a file in its place too.
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("slowdisk"));
    fs::write(&missing, b"not a dir").unwrap();
    let out = Command::new(BIN)
        .args(["mount", "--config"])
        .arg(&cfg)
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("slowdisk") && stderr.contains("not a directory"),
        "{stderr}"
    );
    assert!(!is_mounted(&mnt));
}

#[test]
fn unlinked_and_recreated_names_get_fresh_objects() {
    // Backing inode numbers are reused after unlink; the tree must not
    // confuse a new file with a forgotten old one.
    let m = routed();
    for round in 0..50 {
        let p = m.path("reused");
        fs::write(&p, format!("round {round}")).unwrap();
        assert_eq!(fs::read_to_string(&p).unwrap(), format!("round {round}"));
        let md = fs::metadata(&p).unwrap();
        assert_eq!(
            (md.len(), md.nlink()),
            (format!("round {round}").len() as u64, 1)
        );
        fs::remove_file(&p).unwrap();
        fs::create_dir(&p).unwrap();
        assert!(fs::metadata(&p).unwrap().is_dir());
        fs::remove_dir(&p).unwrap();
    }
}

#[test]
fn inode_numbers_survive_a_remount_and_match_listings() {
    let mut m = routed();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/f"), b"x").unwrap();
    fs::hard_link(m.path("a/b/f"), m.path("a/g")).unwrap();
    let before: Vec<u64> = ["a", "a/b", "a/b/f", "a/g"]
        .iter()
        .map(|p| stat_ino(&m.path(p)))
        .collect();
    assert_eq!(before[2], before[3], "hard links share a number");
    m.restart();
    // Looked up in the opposite order: numbers handed out in lookup order
    // would differ; numbers derived from the backing objects do not.
    let mut after: Vec<u64> = ["a/g", "a/b/f", "a/b", "a"]
        .iter()
        .map(|p| stat_ino(&m.path(p)))
        .collect();
    after.reverse();
    assert_eq!(before, after);
    for e in fs::read_dir(m.path("a")).unwrap() {
        let e = e.unwrap();
        assert_eq!(e.ino(), stat_ino(&e.path()), "{:?}", e.file_name());
    }
}
