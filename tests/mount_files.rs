//! Files on a real mount: create, read, write, truncate, sync, setattr,
//! xattrs, fallocate, `SEEK_DATA`/`SEEK_HOLE`, `copy_file_range`, locks
//! and shared `mmap`.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::time::Duration;

use common::Spec;
use common::posix::*;
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
    drop(r);

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
    // KEEP_SIZE inside the file is passed on; past its end it would take
    // disk no size shows, which no limit could see: EOPNOTSUPP.
    ret(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 1 << 20) }).unwrap();
    let past = ret(unsafe { libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 1 << 20, 1 << 20) });
    assert_eq!(past.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
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
        let p = common::map_shared(&f, len);
        let s = unsafe { std::slice::from_raw_parts_mut(p, len) };
        s[0..5].copy_from_slice(b"HELLO");
        s[5000..5004].copy_from_slice(b"MIDL");
        s[len - 3..].copy_from_slice(b"END");
        assert_eq!(
            unsafe { libc::msync(p.cast(), len, libc::MS_SYNC) },
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
        assert_eq!(unsafe { libc::munmap(p.cast(), len) }, 0);
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

/// Small files are read through the page cache kept across opens, not
/// passthrough: Dovecot's `posix_fadvise(WILLNEED)` on every message it
/// opens then costs no READ once the file is warm (on a passthrough open
/// the kernel would read it through the daemon again each time). Files
/// above 128 KiB stay passthrough: their plain reads reach no daemon.
/// Passthrough needs a descriptor per open (`open_handles = true`).
#[test]
fn small_files_read_from_the_kept_page_cache_large_ones_by_passthrough() {
    let m = Spec::new(&["fast", "slow"])
        .extra(ROUTES)
        .extra("[mount]\nopen_handles = true\n")
        .mount_with_top(TOP);
    fs::create_dir_all(m.path("mail/box")).unwrap();
    let reads = |m: &common::Mount| -> u64 {
        let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
        assert!(ok, "{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
        doc["requests"]["read"].as_u64().unwrap_or(0)
    };
    let open_advise_read = |path: &std::path::Path, advise: bool| {
        let f = File::open(path).unwrap();
        if advise {
            let r = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
            assert_eq!(r, 0);
        }
        let mut data = Vec::new();
        (&f).read_to_end(&mut data).unwrap();
        data.len()
    };
    let small = m.path("mail/box/small.");
    fs::write(&small, vec![b's'; 8 * 1024]).unwrap();
    open_advise_read(&small, true); // warms the page cache
    let before = reads(&m);
    for _ in 0..5 {
        assert_eq!(open_advise_read(&small, true), 8 * 1024);
    }
    assert_eq!(reads(&m), before, "a warm small file costs no READ");

    let large = m.path("mail/box/large.");
    fs::write(&large, vec![b'l'; 256 * 1024]).unwrap();
    // Cold: what the write left in the page cache would hide a daemon
    // serving the reads.
    fs::write("/proc/sys/vm/drop_caches", "1").unwrap();
    let before = reads(&m);
    for _ in 0..5 {
        assert_eq!(open_advise_read(&large, false), 256 * 1024);
    }
    assert_eq!(reads(&m), before, "passthrough reads reach no daemon");
}
