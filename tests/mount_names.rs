//! Names on a real mount: errno cases, long paths, rename (also
//! `RENAME_EXCHANGE` of directories), hard links, symlinks and FIFOs.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use common::posix::*;
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
// absent names: the kernel keeps them (negative entries)

/// LOOKUPs the daemon has served.
fn lookups(m: &common::Mount) -> u64 {
    let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
    assert!(ok, "usage --requests: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["requests"]["lookup"].as_u64().unwrap_or(0)
}

/// A name found absent is kept absent by the kernel, so the create that
/// follows (Cyrus's stage file: `stat`, then `fopen(w+)`) needs no LOOKUP
/// of its own; and every way a name can appear through the mount shows it
/// at once.
#[test]
fn absent_names_are_kept_and_every_way_of_making_them_shows_at_once() {
    let m = routed();
    let p = |s: &str| m.path(s);
    assert_eq!(errno(fs::metadata(p("stage"))), libc::ENOENT);
    let before = lookups(&m);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p("stage"))
        .unwrap();
    f.write_all(b"msg").unwrap();
    drop(f);
    assert_eq!(lookups(&m), before, "the create looked the name up again");

    fs::write(p("src"), b"moved").unwrap();
    fs::create_dir(p("dir")).unwrap();
    type Maker<'a> = (&'a str, &'a dyn Fn(&Path));
    let makers: [Maker; 5] = [
        ("rename", &|to| fs::rename(p("src"), to).unwrap()),
        ("link", &|to| fs::hard_link(p("stage"), to).unwrap()),
        ("symlink", &|to| {
            std::os::unix::fs::symlink("stage", to).unwrap()
        }),
        ("mkdir", &|to| fs::create_dir(to).unwrap()),
        ("dir rename", &|to| fs::rename(p("dir"), to).unwrap()),
    ];
    for (how, make) in makers {
        let name = p(&format!("new-by-{how}"));
        assert_eq!(errno(fs::symlink_metadata(&name)), libc::ENOENT, "{how}");
        make(&name);
        assert!(fs::symlink_metadata(&name).is_ok(), "{how}: still absent");
    }
    assert_eq!(fs::read(p("new-by-rename")).unwrap(), b"moved");
    // Deleted, the name is absent again; made again, present again.
    fs::remove_file(p("stage")).unwrap();
    assert_eq!(errno(fs::metadata(p("stage"))), libc::ENOENT);
    fs::write(p("stage"), b"again").unwrap();
    assert_eq!(fs::read(p("stage")).unwrap(), b"again");
}
