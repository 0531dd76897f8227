//! Concurrency on a real mount: many writers, racing renames, and one slow
//! request not stalling the others.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use common::posix::*;
use common::*;
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
    let (m, _fast) = routed_with_slow(&slow);
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
