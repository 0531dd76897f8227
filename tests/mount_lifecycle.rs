//! The daemon's life: signals, unmounting, refusing a bad start, and inode
//! numbers across remounts.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::fs::{self, File};
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::posix::*;
use common::*;
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
