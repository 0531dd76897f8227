//! Directory listings with the kernel's readdir cache on: what `ls` and a
//! maildir reader see while other processes change the directory.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::Spec;

fn listed(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// The truth: the union of the directory's backing copies.
fn on_disk(m: &common::Mount, rel: &str) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    for (name, _) in &m.parts {
        if let Ok(rd) = fs::read_dir(m.backing(name, rel)) {
            all.extend(rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()));
        }
    }
    all
}

/// Writers create and remove files while readers list the directory; once
/// the writers stop, every listing equals what is on disk. (The kernel can
/// fill its readdir cache from a listing that was in flight across a
/// change; the daemon invalidates such caches.)
#[test]
fn listings_settle_to_the_truth_after_concurrent_changes() {
    let m = Spec::new(&["fast", "slow"]).mount();
    let rel = "user/john";
    let dir = m.path(rel);
    fs::create_dir_all(&dir).unwrap();
    for round in 0..150 {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for w in 0..2u64 {
            let (dir, stop) = (dir.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let name = dir.join(format!("{w}-{}.", i % 16));
                    if i % 32 < 16 {
                        let _ = fs::write(&name, b"m");
                    } else {
                        let _ = fs::remove_file(&name);
                    }
                    i += 1;
                }
            }));
        }
        for _ in 0..2 {
            let (dir, stop) = (dir.clone(), stop.clone());
            threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    listed(&dir);
                }
            }));
        }
        thread::sleep(Duration::from_millis(25));
        stop.store(true, Ordering::Relaxed);
        for t in threads {
            t.join().unwrap();
        }
        let truth = on_disk(&m, rel);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let got = listed(&dir);
            if got == truth {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: listing still differs from disk 2 s after the last change:\n\
                 only listed: {:?}\nonly on disk: {:?}",
                got.difference(&truth).collect::<Vec<_>>(),
                truth.difference(&got).collect::<Vec<_>>()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A listing read in several READDIR requests (a big directory) is one
/// snapshot: no entry that exists throughout is skipped or listed twice,
/// even while another process adds and removes other entries.
#[test]
fn a_long_listing_never_skips_or_repeats_a_stable_entry() {
    let m = Spec::new(&["fast", "slow"]).mount();
    let dir = m.path("user/big");
    fs::create_dir_all(&dir).unwrap();
    // Long names so the listing needs many requests.
    let stable: BTreeSet<String> = (0..3000).map(|i| format!("{i:0>200}")).collect();
    for n in &stable {
        fs::write(dir.join(n), b"").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (dir, stop) = (dir.clone(), stop.clone());
        thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = dir.join(format!("tmp{}", i % 50));
                let _ = if i % 100 < 50 {
                    fs::write(&name, b"")
                } else {
                    fs::remove_file(&name)
                };
                i += 1;
            }
        })
    };
    for round in 0..20 {
        let mut seen = Vec::new();
        for e in fs::read_dir(&dir).unwrap() {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            if !n.starts_with("tmp") {
                seen.push(n);
            }
        }
        let unique: BTreeSet<String> = seen.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            seen.len(),
            "round {round}: an entry listed twice"
        );
        assert_eq!(unique, stable, "round {round}: stable entries missing");
    }
    stop.store(true, Ordering::Relaxed);
    churn.join().unwrap();
}
