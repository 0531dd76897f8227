//! Routing and the union of partitions on a real mount: placement, missing
//! parents, merged listings, `statfs`, `EXDEV` and `ENOSPC` on separate
//! filesystems.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirEntryExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::posix::*;
use common::*;
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
    let (m, fast) = routed_with_slow(&slow);
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
