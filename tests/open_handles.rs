//! `[mount] open_handles = false`: the kernel opens files without asking
//! (OPEN answered `ENOSYS` once, no RELEASE), and the daemon serves every
//! open of a file through one descriptor per file (`src/fs/handles.rs`).
//! What must still hold: contents, O_TRUNC, O_APPEND, O_SYNC, a file read
//! and written after its last name is gone, shared mappings, the limit,
//! more files open than the daemon keeps descriptors for, and several
//! threads at once. The per-open mode is checked for contrast.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use common::quota::*;
use common::{Mount, Spec};

const PER_FILE: &str = "[mount]\nopen_handles = false\n";

/// Requests the daemon has served, by opcode name.
fn requests(m: &Mount, op: &str) -> u64 {
    let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
    assert!(ok, "usage --requests: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    doc["requests"][op].as_u64().unwrap_or(0)
}

fn read_file(m: &Mount, rel: &str) -> Vec<u8> {
    fs::read(m.path(rel)).unwrap()
}

#[test]
fn per_file_descriptors_send_one_open_and_no_release() {
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    // The kernel learns at the first OPEN; CREATEs before it still get a
    // RELEASE (one here).
    fs::write(m.path("first"), b"1").unwrap();
    assert_eq!(read_file(&m, "first"), b"1");
    for i in 0..20 {
        fs::write(m.path(&format!("f{i}")), format!("body {i}\n").repeat(50)).unwrap();
    }
    for round in 0..5 {
        for i in 0..20 {
            let want = format!("body {i}\n").repeat(50) + &"+".repeat(round);
            assert_eq!(read_file(&m, &format!("f{i}")), want.into_bytes());
            let mut f = OpenOptions::new()
                .append(true)
                .open(m.path(&format!("f{i}")))
                .unwrap();
            f.write_all(b"+").unwrap();
        }
    }
    // The first OPEN learns ENOSYS; the kernel asks no more, and sends no
    // RELEASE, not even for the files CREATE opened.
    assert_eq!(requests(&m, "open"), 1);
    assert!(requests(&m, "release") <= 1);
    assert_eq!(requests(&m, "create"), 21);
    let want = format!("{}+++++", "body 3\n".repeat(50));
    assert_eq!(read_file(&m, "f3"), want.into_bytes());
}

#[test]
fn per_open_handles_send_open_and_release() {
    let m = Spec::new(&["a"])
        .extra("[mount]\nopen_handles = true\n")
        .mount();
    fs::write(m.path("f"), b"x").unwrap();
    for _ in 0..10 {
        assert_eq!(read_file(&m, "f"), b"x");
    }
    assert!(requests(&m, "open") >= 10);
    // RELEASE comes asynchronously after close(2).
    common::cluster::eventually("11 releases", std::time::Duration::from_secs(5), || {
        requests(&m, "release") >= 11
    });
}

#[test]
fn truncate_append_and_sync_opens_behave_as_on_a_plain_file() {
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    let p = m.path("msg");
    fs::write(&p, vec![b'a'; 10_000]).unwrap();
    // O_TRUNC on an existing file: the kernel truncates through SETATTR.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&p)
        .unwrap();
    f.write_all(b"short").unwrap();
    drop(f);
    assert_eq!(read_file(&m, "msg"), b"short");
    assert_eq!(fs::metadata(m.backing("a", "msg")).unwrap().len(), 5);
    // O_APPEND writes at the end whatever the offset.
    let mut f = OpenOptions::new().append(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"-tail").unwrap();
    drop(f);
    assert_eq!(read_file(&m, "msg"), b"short-tail");
    // O_SYNC and O_DSYNC writes (the shared descriptor has neither).
    for flag in [libc::O_SYNC, libc::O_DSYNC] {
        let mut f = OpenOptions::new()
            .write(true)
            .custom_flags(flag)
            .open(&p)
            .unwrap();
        f.write_all(b"SYNC").unwrap();
    }
    assert_eq!(read_file(&m, "msg"), b"SYNCt-tail");
    assert_eq!(fs::read(m.backing("a", "msg")).unwrap(), b"SYNCt-tail");
}

#[test]
fn a_file_is_read_and_written_after_its_last_name_is_gone() {
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    let p = m.path("gone");
    fs::write(&p, b"still here").unwrap();
    let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!m.backing("a", "gone").exists());
    let mut got = String::new();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "still here");
    f.write_all(b", and more").unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    got.clear();
    f.read_to_string(&mut got).unwrap();
    assert_eq!(got, "still here, and more");
}

#[test]
fn a_shared_mapping_sees_writes_through_another_descriptor_at_once() {
    // Cyrus maps cyrus.index and cyrus.cache while writing them with write().
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    let p = m.path("cyrus.index");
    fs::write(&p, vec![0u8; 8192]).unwrap();
    let reader = File::open(&p).unwrap();
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            8192,
            libc::PROT_READ,
            libc::MAP_SHARED,
            reader.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let bytes = unsafe { std::slice::from_raw_parts(map as *const u8, 8192) };
    assert_eq!(bytes[4100], 0);
    let mut w = OpenOptions::new().write(true).open(&p).unwrap();
    w.seek(SeekFrom::Start(4096)).unwrap();
    w.write_all(b"RECORD").unwrap();
    assert_eq!(&bytes[4096..4102], b"RECORD");
    let mut back = vec![0u8; 6];
    let mut r2 = File::open(&p).unwrap();
    r2.seek(SeekFrom::Start(4096)).unwrap();
    r2.read_exact(&mut back).unwrap();
    assert_eq!(back, b"RECORD");
    unsafe { libc::munmap(map, 8192) };
}

#[test]
fn a_reopened_file_is_held_to_the_limit_and_refunded_on_truncate() {
    let m = boxes(PER_FILE, &[JOHN]);
    // Reopened (no CREATE): the write goes through the per-file descriptor.
    let (f1, _) = fill_john_then_refuse_an_append(&m);
    // O_TRUNC refunds, and the room is usable at once.
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&f1))
        .unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 0);
    put_n(&m, &format!("{JOHN}/2."), 200 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 200 * K);
    assert_matches_disk(&m);
}

#[test]
fn more_files_open_than_descriptors_kept() {
    // Beyond the daemon's 4096 per-file descriptors, idle ones are closed
    // and reopened at their file's next request.
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    raise_fd_limit(6000);
    let n = 5000;
    let files: Vec<File> = (0..n)
        .map(|i| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(m.path(&format!("m{i}")))
                .unwrap();
            f.write_all(format!("{i}:").as_bytes()).unwrap();
            f
        })
        .collect();
    for (i, mut f) in files.into_iter().enumerate() {
        f.write_all(b"again").unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut got = String::new();
        f.read_to_string(&mut got).unwrap();
        assert_eq!(got, format!("{i}:again"));
    }
    let held = descriptors_under(m.pid(), &m.backing("a", ""), |_| true);
    assert!(
        (4096 * 3 / 4..=4096).contains(&held),
        "daemon holds {held} file descriptors for {n} open files"
    );
}

/// How many of `pid`'s descriptors are files opened for I/O (not `O_PATH`
/// anchors) under `dir` whose open flags pass `wanted`.
fn descriptors_under(pid: u32, dir: &std::path::Path, wanted: impl Fn(i32) -> bool) -> usize {
    let fds = fs::read_dir(format!("/proc/{pid}/fd")).unwrap();
    fds.filter_map(|e| {
        let e = e.ok()?;
        let target = fs::read_link(e.path()).ok()?;
        let info = fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", e.file_name().to_str()?));
        let flags = info.ok()?.lines().find_map(|l| {
            let v = l.strip_prefix("flags:")?.trim();
            i32::from_str_radix(v, 8).ok()
        })?;
        (target.starts_with(dir) && flags & libc::O_PATH == 0 && wanted(flags)).then_some(())
    })
    .count()
}

/// The daemon cannot know when the last writer closed a file, so it closes
/// read-write descriptors no write used for 2 s: a partition can then be
/// remounted read-only, as without spoolfs (see also `tests/faults.rs`).
#[test]
fn writable_descriptors_close_once_writes_stop() {
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    let dir = m.backing("a", "");
    let writers = |m: &Mount| descriptors_under(m.pid(), &dir, |f| f & libc::O_ACCMODE != 0);
    for i in 0..10 {
        fs::write(m.path(&format!("w{i}")), format!("{i}")).unwrap();
    }
    assert_eq!(
        writers(&m),
        10,
        "CREATE's descriptors are kept for the writes"
    );
    common::cluster::eventually(
        "idle writable descriptors closed",
        std::time::Duration::from_secs(6),
        || writers(&m) == 0,
    );
    // Reads reopen read-only; a write reopens read-write.
    assert_eq!(read_file(&m, "w3"), b"3");
    assert_eq!(writers(&m), 0);
    let mut f = OpenOptions::new().append(true).open(m.path("w3")).unwrap();
    f.write_all(b"+").unwrap();
    assert_eq!(writers(&m), 1);
    drop(f);
    assert_eq!(read_file(&m, "w3"), b"3+");
    // Truncates reach a file whose descriptor is read-only: open(O_TRUNC)
    // (by path) and ftruncate (with handle 0, through that descriptor).
    assert_eq!(read_file(&m, "w5"), b"5");
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path("w5"))
        .unwrap();
    assert_eq!(fs::metadata(m.path("w5")).unwrap().len(), 0);
    f.set_len(3).unwrap();
    assert_eq!(read_file(&m, "w5"), b"\0\0\0");
    assert_eq!(fs::metadata(m.backing("a", "w5")).unwrap().len(), 3);
}

/// A file about to lose its last name keeps its descriptor until FORGET
/// (it may be open); when the rename over it is refused, the name stays and
/// so does the usual sweep of its idle read-write descriptor.
#[test]
fn a_refused_rename_over_a_file_leaves_it_unpinned() {
    let m = boxes(PER_FILE, &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), K, 1);
    put_n(&m, &format!("{JOHN}/2."), 250 * K, 2);
    put_n(&m, &format!("{JANE}/9."), 100 * K, 3);
    let r = fs::rename(m.path(&format!("{JANE}/9.")), m.path(&format!("{JOHN}/1.")));
    assert_edquot(r, "rename over john's file past his limit");
    assert_file(&m, &format!("{JOHN}/1."), &pat(K, 1));
    let john = m.backing("fast", JOHN);
    let writers = || descriptors_under(m.pid(), &john, |f| f & libc::O_ACCMODE != 0);
    common::cluster::eventually(
        "john's idle writable descriptors closed",
        std::time::Duration::from_secs(6),
        || writers() == 0,
    );
    assert_matches_disk(&m);
}

#[test]
fn threads_share_files_and_keep_every_byte() {
    let m = Spec::new(&["a"]).extra(PER_FILE).mount();
    let root = m.mnt.clone();
    std::thread::scope(|s| {
        for t in 0..4 {
            let root = root.clone();
            s.spawn(move || {
                for i in 0..100 {
                    // Each thread appends its records to one common log and
                    // writes, rereads and renames files of its own.
                    let mut log = OpenOptions::new()
                        .append(true)
                        .create(true)
                        .open(root.join("common.log"))
                        .unwrap();
                    log.write_all(format!("t{t} r{i:03}\n").as_bytes()).unwrap();
                    let tmp = root.join(format!("t{t}.{i}.tmp"));
                    let body = format!("{t}/{i} ").repeat(300 + i);
                    fs::write(&tmp, &body).unwrap();
                    assert_eq!(fs::read_to_string(&tmp).unwrap(), body);
                    fs::rename(&tmp, root.join(format!("t{t}.{i}"))).unwrap();
                }
            });
        }
    });
    let log = fs::read_to_string(m.path("common.log")).unwrap();
    assert_eq!(log.lines().count(), 400);
    for t in 0..4 {
        for i in 0..100 {
            assert!(log.contains(&format!("t{t} r{i:03}\n")));
            let body = format!("{t}/{i} ").repeat(300 + i);
            assert_eq!(read_file(&m, &format!("t{t}.{i}")), body.into_bytes());
        }
    }
}

fn raise_fd_limit(n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n.max(unsafe {
            let mut cur = std::mem::zeroed::<libc::rlimit>();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut cur);
            cur.rlim_max
        }),
    };
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) }, 0);
}
