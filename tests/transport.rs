//! The transport (`[mount] io_uring`, `-o io_uring=`): requests come over
//! the one asked for, the log says which and why, and `on` refuses to
//! mount where the kernel cannot carry FUSE over io_uring.

mod common;

use std::io::{Read, Write};
use std::process::Command;

use common::{BIN, Spec, is_mounted};

const PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether this kernel carries FUSE over io_uring now.
fn kernel_has_uring() -> bool {
    std::fs::read_to_string(PARAMETER).is_ok_and(|v| v.trim() == "Y")
}

/// Creates, writes, fsyncs, reads back, renames, lists and unlinks from
/// four threads: every kind of request a mail daemon makes.
fn mail_like_work(root: &std::path::Path) {
    std::thread::scope(|s| {
        for t in 0..4 {
            s.spawn(move || {
                let dir = root.join(format!("box{t}"));
                std::fs::create_dir(&dir).unwrap();
                for i in 0..50 {
                    let tmp = dir.join(format!("tmp.{i}"));
                    let body = format!("message {t}/{i}\n").repeat(100 + i);
                    let mut f = std::fs::File::create(&tmp).unwrap();
                    f.write_all(body.as_bytes()).unwrap();
                    f.sync_all().unwrap();
                    drop(f);
                    let done = dir.join(format!("{i}."));
                    std::fs::rename(&tmp, &done).unwrap();
                    let mut back = String::new();
                    std::fs::File::open(&done)
                        .unwrap()
                        .read_to_string(&mut back)
                        .unwrap();
                    assert_eq!(back, body, "{}", done.display());
                }
                assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 50);
                for i in (0..50).step_by(2) {
                    std::fs::remove_file(dir.join(format!("{i}."))).unwrap();
                }
                assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 25);
            });
        }
    });
}

/// (requests served in all, of which over io_uring, FORGETs), from the
/// daemon itself.
fn request_counts(m: &common::Mount) -> (u64, u64, u64) {
    let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
    assert!(ok, "usage --requests: {err}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let by_op = doc["requests"].as_object().expect("requests by op");
    let total = by_op.values().map(|n| n.as_u64().unwrap()).sum();
    let forgets = by_op.get("forget").and_then(|n| n.as_u64()).unwrap_or(0);
    (total, doc["over_io_uring"].as_u64().unwrap(), forgets)
}

#[test]
fn io_uring_on_serves_every_request_but_forget_over_the_ring() {
    if !kernel_has_uring() {
        eprintln!("skipped: {PARAMETER} is not Y (scripts/test.sh turns it on where it exists)");
        return;
    }
    let m = Spec::new(&["a"]).args(&["-o", "io_uring=on"]).mount();
    mail_like_work(&m.mnt);
    let (total, over_ring, forgets) = request_counts(&m);
    assert!(total > 1000, "only {total} requests");
    // FORGET (and INTERRUPT) stay on /dev/fuse, as the kernel sends them.
    assert_eq!(
        over_ring,
        total - forgets,
        "{total} requests, {forgets} forgets"
    );
    assert!(
        m.log_text().contains("requests over io_uring"),
        "{}",
        m.log_text()
    );
}

#[test]
fn io_uring_off_serves_everything_over_dev_fuse() {
    let m = Spec::new(&["a"]).args(&["-o", "io_uring=off"]).mount();
    mail_like_work(&m.mnt);
    let (total, over_ring, _) = request_counts(&m);
    assert!(total > 1000, "only {total} requests");
    assert_eq!(over_ring, 0);
    let log = m.log_text();
    assert!(
        log.contains("requests over /dev/fuse: io_uring is off"),
        "{log}"
    );
}

#[test]
fn io_uring_on_without_kernel_support_refuses_to_mount_and_names_why() {
    if kernel_has_uring() {
        eprintln!("skipped: this kernel carries FUSE over io_uring");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(BIN)
        .args(["mount", "-o", "io_uring=on", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg(&mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!is_mounted(&mnt));
    assert!(stderr.contains("io_uring is on, but"), "{stderr}");
    assert!(
        stderr.contains("enable_uring") || stderr.contains("6.14"),
        "{stderr}"
    );
}

#[test]
fn a_bad_transport_name_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let out = Command::new(BIN)
        .args(["mount", "--data-dir"])
        .arg(tmp.path().join("data"))
        .arg(&mnt)
        .env("SPOOLFS_IO_URING", "fast")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!is_mounted(&mnt));
    assert!(
        stderr.contains("SPOOLFS_IO_URING=fast: expected auto, on or off"),
        "{stderr}"
    );
}
