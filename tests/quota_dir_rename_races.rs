//! A directory renamed between mailboxes (quota roots) while files inside
//! it change: the kernel locks only the two parent directories, so writes,
//! creates and unlinks inside the moving subtree run during the rename's
//! walk, charge move and backing rename. Afterwards every mailbox's usage
//! must still equal a recount of its backing files, and a limit must hold
//! for bytes that arrive mid-rename.
//!
//! The operations go through a descriptor of the moving directory (or of
//! a file in it), so they follow it across the renames. Each loop is
//! time-boxed; helpers in `tests/common/quota.rs`.

mod common;

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::quota::{EXAMPLE, JANE, JANE_MB, JOHN, JOHN_MB, K, pat};
use common::{Mount, Spec, backing_bytes, mkdirs, used};

/// How long each race runs.
const RACE: Duration = Duration::from_secs(2);

/// Cyrus layout, no limits unless `extra` sets some.
fn mount(extra: &str) -> Mount {
    let m = Spec::new(&["fast", "slow"])
        .extra("[layout]\nkind = \"cyrus\"\n")
        .extra(extra)
        .mount();
    for d in [JOHN, JANE] {
        mkdirs(&m, d);
    }
    mkdirs(&m, &format!("{JOHN}/Sub/cur"));
    m
}

fn sub(mailbox: &str) -> String {
    format!("{mailbox}/Sub")
}

/// Renames `john/Sub` to `jane/Sub` and back until `stop`; leaves it in
/// john. Returns the number of renames.
fn rename_back_and_forth(m: &Mount, stop: &AtomicBool) -> u64 {
    let (john, jane) = (m.path(&sub(JOHN)), m.path(&sub(JANE)));
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) || n % 2 == 1 {
        let (from, to) = if n % 2 == 0 {
            (&john, &jane)
        } else {
            (&jane, &john)
        };
        fs::rename(from, to).unwrap_or_else(|e| panic!("rename {from:?} -> {to:?}: {e}"));
        n += 1;
    }
    n
}

/// `openat(dir, name, flags, 0644)` as a `File`.
fn open_at(dir: &File, name: &str, flags: i32) -> io::Result<File> {
    let c = CString::new(name).unwrap();
    let fd = unsafe { libc::openat(dir.as_raw_fd(), c.as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(unsafe { File::from_raw_fd(fd) })
    }
}

fn unlink_at(dir: &File, name: &str) -> io::Result<()> {
    let c = CString::new(name).unwrap();
    if unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) } < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Each mailbox's and the tenant's usage against the recount of its
/// backing files (each inode once); the differences, one line each.
fn usage_vs_recount(m: &Mount) -> Vec<String> {
    let u = m.usage();
    [
        ("mailbox", JOHN_MB, "mailboxes", JOHN),
        ("mailbox", JANE_MB, "mailboxes", JANE),
        ("tenant", "example.org", "tenants", EXAMPLE),
    ]
    .into_iter()
    .filter_map(|(kind, name, list, dir)| {
        let (usage, recount) = (used(&u, list, name), backing_bytes(m, dir));
        (usage != recount).then(|| {
            let diff = usage as i128 - recount as i128;
            format!(
                "{kind} {name}: usage {usage} != recount {recount} (usage - recount = {diff:+})"
            )
        })
    })
    .collect()
}

#[track_caller]
fn assert_usage_matches_recount(m: &Mount, what: &str) {
    let wrong = usage_vs_recount(m);
    assert!(
        wrong.is_empty(),
        "after {what}, usage differs from the backing files:\n  {}",
        wrong.join("\n  ")
    );
}

#[test]
fn growth_through_an_open_fd_during_dir_renames_between_mailboxes_is_charged_where_the_file_ends_up()
 {
    let m = mount("");
    let dir = File::open(m.path(&format!("{}/cur", sub(JOHN)))).unwrap();
    let f = open_at(&dir, "f", libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND).unwrap();
    let stop = AtomicBool::new(false);
    let chunk = pat(100, 1);
    let (writes, renames) = std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                (&f).write_all(&chunk).expect("append through the open fd");
                n += 1;
            }
            n
        });
        let renamer = s.spawn(|| rename_back_and_forth(&m, &stop));
        std::thread::sleep(RACE);
        stop.store(true, Ordering::Relaxed);
        (writer.join().unwrap(), renamer.join().unwrap())
    });
    drop(f);
    assert_eq!(
        fs::metadata(m.path(&format!("{}/cur/f", sub(JOHN))))
            .unwrap()
            .len(),
        writes * 100,
        "the appends all landed"
    );
    assert_usage_matches_recount(
        &m,
        &format!("{writes} appends of 100 B racing {renames} renames of the file's directory"),
    );
}

#[test]
fn creates_and_unlinks_during_dir_renames_between_mailboxes_are_charged_where_the_dir_ends_up() {
    const BEFORE: usize = 1500;
    let m = mount("");
    let dir = File::open(m.path(&format!("{}/cur", sub(JOHN)))).unwrap();
    let body = pat(K, 2);
    for i in 0..BEFORE {
        fs::write(m.path(&format!("{}/cur/p{i}", sub(JOHN))), &body).unwrap();
    }
    assert_usage_matches_recount(&m, "filling the directory");
    let stop = AtomicBool::new(false);
    let (created, unlinked) = (AtomicU64::new(0), AtomicU64::new(0));
    let renames = std::thread::scope(|s| {
        let worker = s.spawn(|| {
            for i in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let f = open_at(&dir, &format!("c{i}"), libc::O_WRONLY | libc::O_CREAT)
                    .expect("create in the moving directory");
                f.write_all_at(&body, 0).unwrap();
                drop(f);
                created.fetch_add(1, Ordering::Relaxed);
                if i < BEFORE {
                    unlink_at(&dir, &format!("p{i}")).expect("unlink in the moving directory");
                    unlinked.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let renamer = s.spawn(|| rename_back_and_forth(&m, &stop));
        std::thread::sleep(RACE);
        stop.store(true, Ordering::Relaxed);
        worker.join().unwrap();
        renamer.join().unwrap()
    });
    assert_usage_matches_recount(
        &m,
        &format!(
            "{} creates and {} unlinks racing {renames} renames of their directory",
            created.into_inner(),
            unlinked.into_inner()
        ),
    );
}

#[test]
fn a_file_appended_to_until_edquot_while_its_dir_moves_into_a_limited_mailbox_stays_within_the_limit()
 {
    const LIMIT: u64 = 100 * K;
    let m = mount(&format!(
        "[mailboxes.\"{JANE_MB}\"]\nlimit = \"{}K\"\n",
        LIMIT / K
    ));
    let (in_john, in_jane) = (m.path(&sub(JOHN)), m.path(&sub(JANE)));
    // Empty messages beside the file: no bytes, but a longer walk, so the
    // appends hit the rename's window more often.
    for i in 0..100 {
        fs::write(m.path(&format!("{}/cur/e{i}", sub(JOHN))), b"").unwrap();
    }
    let dir = File::open(m.path(&format!("{}/cur", sub(JOHN)))).unwrap();
    let f = open_at(&dir, "f", libc::O_RDWR | libc::O_CREAT).unwrap();
    let chunk = pat(1000, 3);
    let deadline = Instant::now() + RACE;
    let (mut trials, mut moved) = (0, 0);
    while Instant::now() < deadline {
        trials += 1;
        // 30000 bytes short of jane's limit, in john (no limit).
        f.set_len(0).unwrap();
        f.write_all_at(&pat(LIMIT - 30000, 4), 0).unwrap();
        let stop = AtomicBool::new(false);
        let renamed = std::thread::scope(|s| {
            let writer = s.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let end = f.metadata().unwrap().len();
                    match f.write_at(&chunk, end) {
                        Ok(_) => {}
                        Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => return,
                        Err(e) => panic!("append: {e}"),
                    }
                }
            });
            // Refused when the file already outgrew jane's room: retry.
            let renamed = fs::rename(&in_john, &in_jane);
            if renamed.is_err() {
                stop.store(true, Ordering::Relaxed);
            }
            let waited = Instant::now();
            while !writer.is_finished() && waited.elapsed() < Duration::from_secs(1) {
                std::thread::sleep(Duration::from_millis(1));
            }
            stop.store(true, Ordering::Relaxed);
            writer.join().unwrap();
            renamed
        });
        match renamed {
            Ok(()) => moved += 1,
            Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => continue,
            Err(e) => panic!("rename into jane: {e}"),
        }
        let real = backing_bytes(&m, JANE);
        let usage = used(&m.usage(), "mailboxes", JANE_MB);
        assert!(
            real <= LIMIT,
            "trial {trial}: {JANE_MB} holds {real} real bytes, over its limit {LIMIT} by {over} \
             (its usage says {usage}, usage - recount = {diff:+})",
            trial = trials,
            over = real - LIMIT,
            diff = usage as i128 - real as i128,
        );
        assert_usage_matches_recount(
            &m,
            &format!("trial {trials}: an append until EDQUOT racing the rename into jane"),
        );
        fs::rename(&in_jane, &in_john).unwrap();
    }
    assert!(
        moved > 0,
        "no rename into jane succeeded in {trials} trials"
    );
    assert_usage_matches_recount(&m, &format!("{trials} trials ({moved} moved)"));
}
