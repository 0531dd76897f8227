//! Concurrency and crashes on a real mount: threads and processes never
//! overshoot; usage after `SIGKILL` mid-write equals a recount.
//!
//! Split from the former `tests/quota.rs`; helpers in `tests/common/quota.rs`.

mod common;

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use common::quota::*;
use common::{backing_bytes, mkdirs, used};

// --- concurrency -----------------------------------------------------------------------

/// Writes 4K chunks until EDQUOT; any other error fails the test.
fn fill(path: &Path, seed: u8) -> u64 {
    let mut f = File::create(path).unwrap();
    let chunk = pat(4 * K, seed);
    let mut written = 0;
    loop {
        match f.write(&chunk) {
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => return written,
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
}

#[test]
fn eight_concurrent_threads_never_overshoot_the_tenant() {
    let m = cyrus("");
    let boxes: Vec<String> = (0..8).map(|i| format!("{EXAMPLE}/u/user/u{i}")).collect();
    for b in &boxes {
        mkdirs(&m, b);
    }
    let barrier = Arc::new(Barrier::new(8));
    let written: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = boxes
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let (p, barrier) = (m.path(&format!("{b}/1.")), barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    fill(&p, i as u8)
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let used = tn(&m, "example.org");
    assert!(used <= 1024 * K, "tenant overshot: {used}");
    assert_eq!(used, backing_bytes(&m, EXAMPLE), "usage = bytes on disk");
    assert_eq!(
        used, written,
        "usage = bytes the writers were told were written"
    );
    // Every writer wrote 4K chunks until refused: the tenant is exactly full.
    assert_eq!(used, 1024 * K);
}

#[test]
fn eight_concurrent_processes_never_overshoot_a_mailbox_or_tenant() {
    // Processes (dd) into john (256K) and seven other mailboxes (tenant 1M),
    // with odd block sizes so the limits are hit mid-block.
    let m = cyrus("");
    let mut dirs = vec![JOHN.to_string(), JOHN.to_string()];
    dirs.extend((0..6).map(|i| format!("{EXAMPLE}/p/user/p{i}")));
    for d in &dirs {
        mkdirs(&m, d);
    }
    let children: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            Command::new("dd")
                .arg("if=/dev/zero")
                .arg(format!("of={}", m.path(&format!("{d}/{i}.")).display()))
                .arg(format!("bs={}", 3000 + i * 517))
                .arg("count=1000")
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "dd should have hit a limit: {err}");
        assert!(err.contains("quota exceeded"), "dd failed otherwise: {err}");
    }
    let u = m.usage();
    let john = used(&u, "mailboxes", JOHN_MB);
    let tenant = used(&u, "tenants", "example.org");
    assert!(john <= 256 * K, "john overshot: {john}");
    assert!(tenant <= 1024 * K, "tenant overshot: {tenant}");
    assert_eq!(john, backing_bytes(&m, JOHN));
    assert_eq!(tenant, backing_bytes(&m, EXAMPLE));
    // The tenant is full to within one block of the largest writer.
    assert!(
        tenant > 1024 * K - 8 * 7000,
        "writers gave up early: {tenant}"
    );
}

// --- crash ---------------------------------------------------------------------------------

#[test]
fn usage_after_sigkill_mid_write_equals_a_recount() {
    let mut m = cyrus("[tenants.\"big.org\"]\nlimit = \"none\"\n");
    let dirs: Vec<String> = (0..4)
        .map(|i| format!("mail/domain/b/big.org/u/user/u{i}"))
        .collect();
    for d in &dirs {
        mkdirs(&m, d);
    }
    mkdirs(&m, JOHN);
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = dirs
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let p = m.path(&format!("{d}/1."));
            let trunc = m.path(&format!("{d}/2."));
            let stop = stop.clone();
            std::thread::spawn(move || {
                let chunk = pat(64 * K, i as u8);
                let Ok(mut f) = File::create(&p) else { return };
                let _ = fs::write(&trunc, pat(300 * K, 1));
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if f.write_all(&chunk).is_err() {
                        return;
                    }
                    // Shrinks too, so a crash may hit a refund.
                    if path_truncate(&trunc, 1000).is_err()
                        || fs::write(&trunc, pat(300 * K, 2)).is_err()
                    {
                        return;
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(400));
    m.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    // Change a file while unmounted too.
    fs::write(
        m.backing("fast", &format!("{JOHN}/offline.")),
        pat(7 * K, 3),
    )
    .unwrap();
    m.spawn();
    let u = m.usage();
    let big = backing_bytes(&m, "mail/domain/b/big.org");
    assert!(big > 0, "the writers wrote nothing before the kill");
    assert_eq!(used(&u, "tenants", "big.org"), big);
    for d in &dirs {
        let name = format!("user/{}@big.org", d.rsplit('/').next().unwrap());
        assert_eq!(used(&u, "mailboxes", &name), backing_bytes(&m, d), "{name}");
    }
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 207 * K);
    assert_matches_disk(&m);
}
