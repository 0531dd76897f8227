//! Run-time control on a real mount: limits set and persisted, who may use
//! the control socket, `df`, the usage report, refusal and warning logs.
//!
//! Split from the former `tests/quota.rs`; helpers in `tests/common/quota.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::process::Command;

use common::quota::*;
use common::{Mount, mkdirs, used};
use serde_json::Value;

// --- run-time control -------------------------------------------------------------------

#[test]
fn quota_set_takes_effect_at_once_and_survives_a_remount() {
    let mut m = boxes("", &[JOHN]);
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    let (ok, _, err) = m.cli(&["quota", "set", "--mailbox", JOHN_MB, "128K"]);
    assert!(ok, "quota set: {err}");
    let (ok, out, err) = m.cli(&["quota", "get", "--mailbox", JOHN_MB]);
    assert!(ok, "quota get: {err}");
    assert!(
        out.contains("131072") || out.contains("128"),
        "quota get shows the new limit: {out}"
    );
    put_n(&m, &format!("{JOHN}/2."), 28 * K, 2);
    let mut f = File::create(m.path(&format!("{JOHN}/3."))).unwrap();
    assert_edquot(f.write(b"x"), "new run-time limit");
    drop(f);
    // Tenant limit lowered below current usage: nothing more fits, deletes do.
    let (ok, _, err) = m.cli(&["quota", "set", "--tenant", "example.org", "100K"]);
    assert!(ok, "{err}");
    mkdirs(&m, JANE);
    let mut f = File::create(m.path(&format!("{JANE}/1."))).unwrap();
    assert_edquot(f.write(b"x"), "tenant lowered below usage");
    drop(f);
    let u = m.usage();
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 128 * K);
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        100 * K
    );

    // Only root may change what the next start loads.
    use std::os::unix::fs::PermissionsExt;
    for p in [m.state.clone(), m.state.join("limits.json")] {
        let mode = fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o022,
            0,
            "{} is writable by others: {mode:o}",
            p.display()
        );
    }

    m.restart();
    let u = m.usage();
    assert_eq!(
        entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"],
        128 * K,
        "survives a remount"
    );
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        100 * K,
        "survives a remount"
    );
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 128 * K);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/3.")))
        .unwrap();
    assert_edquot(f.write(b"x"), "after restart");
    drop(f);
    // Unlimited at run time, then unset back to the configured limits.
    let (ok, _, err) = m.cli(&["quota", "set", "--tenant", "example.org", "none"]);
    assert!(ok, "{err}");
    let (ok, _, err) = m.cli(&["quota", "unset", "--mailbox", JOHN_MB]);
    assert!(ok, "{err}");
    put_n(&m, &format!("{JOHN}/4."), 128 * K, 4);
    let mut f = File::create(m.path(&format!("{JOHN}/5."))).unwrap();
    assert_edquot(f.write(b"x"), "config limit 256K back after unset");
    drop(f);
    let u = m.usage();
    assert_eq!(
        entry(&u, "tenants", "example.org").unwrap()["limit"],
        Value::Null
    );
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 256 * K);
    // A run-time limit on a folder makes it its own quota root at once.
    mkdirs(&m, &format!("{JOHN}/Archive"));
    let (ok, _, err) = m.cli(&[
        "quota",
        "set",
        "--mailbox",
        "user/john/Archive@example.org",
        "8K",
    ]);
    assert!(ok, "{err}");
    put_n(&m, &format!("{JOHN}/Archive/1."), 8 * K, 5);
    let mut f = File::create(m.path(&format!("{JOHN}/Archive/2."))).unwrap();
    assert_edquot(f.write(b"x"), "run-time nested root");
    drop(f);
    m.restart();
    assert_eq!(mb(&m, "user/john/Archive@example.org"), 8 * K);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
}

#[test]
fn non_root_cannot_use_the_control_interface() {
    let m = boxes("", &[JOHN]);
    put_n(&m, &format!("{JOHN}/1."), 10 * K, 1);
    // Let nobody reach the mount point, so only the control check can refuse.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = Command::new(common::BIN)
            .args(args)
            .arg(&m.mnt)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    // nobody can see the mount (allow_other) …
    let out = Command::new("ls")
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "nobody cannot even list the mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // … but not the control interface.
    let (ok, out, err) = as_nobody(&["usage", "--json"]);
    assert!(!ok, "nobody read usage: {out}");
    assert!(
        err.to_lowercase().contains("permission denied"),
        "why: {err}"
    );
    assert!(!out.contains("example.org"), "usage leaked: {out}");
    let (ok, _, err) = as_nobody(&["quota", "set", "--mailbox", JOHN_MB, "1G"]);
    assert!(
        !ok && err.to_lowercase().contains("permission denied"),
        "nobody set a limit: {err}"
    );
    let (ok, _, err) = as_nobody(&["quota", "get", "--tenant", "example.org"]);
    assert!(
        !ok && err.to_lowercase().contains("permission denied"),
        "nobody read a limit: {err}"
    );
    assert_eq!(
        entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"],
        256 * K
    );
    assert!(
        !m.state.join("limits.json").exists()
            || !fs::read_to_string(m.state.join("limits.json"))
                .unwrap()
                .contains("john")
    );
}

trait UidGid {
    fn uid_gid(&mut self, id: u32) -> &mut Self;
}

impl UidGid for Command {
    fn uid_gid(&mut self, id: u32) -> &mut Self {
        use std::os::unix::process::CommandExt;
        self.uid(id).gid(id)
    }
}

#[test]
fn a_configured_admin_uid_may_use_the_control_interface() {
    let m = cyrus_with("", "[control]\nadmin_uids = [65534]\n");
    mkdirs(&m, JOHN);
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.tmp.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new(common::BIN)
        .args(["usage", "--json"])
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin uid refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let u: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(entry(&u, "mailboxes", JOHN_MB).unwrap()["limit"], 256 * K);
    let out = Command::new(common::BIN)
        .args(["quota", "set", "--mailbox", JOHN_MB, "1K"])
        .arg(&m.mnt)
        .uid_gid(65534)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "admin uid refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"], K);
}

// --- df ------------------------------------------------------------------------------------

fn statvfs(p: &Path) -> libc::statvfs {
    let mut v: libc::statvfs = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::statvfs(cpath(p).as_ptr(), &mut v) };
    assert_eq!(
        r,
        0,
        "statvfs {}: {}",
        p.display(),
        io::Error::last_os_error()
    );
    v
}

#[test]
fn df_on_a_mailbox_directory_shows_its_quota() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    let v = statvfs(&m.path(JOHN));
    let bs = v.f_frsize;
    assert_eq!(v.f_blocks * bs, 256 * K, "total = john's limit");
    assert_eq!(v.f_bavail * bs, 156 * K, "free = limit - usage");
    assert_eq!(v.f_bfree * bs, 156 * K);
    // A folder below shows its root's quota.
    mkdirs(&m, &format!("{JOHN}/Sent"));
    let v = statvfs(&m.path(&format!("{JOHN}/Sent")));
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (256 * K, 156 * K));
    // jane has no mailbox limit: the tenant's (1M, 100K used) is the tightest.
    let v = statvfs(&m.path(JANE));
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (1024 * K, 924 * K));
    // Tightest: fill the tenant so it has less room than john's mailbox.
    put_n(&m, &format!("{JANE}/1."), 900 * K, 2);
    let v = statvfs(&m.path(JOHN));
    assert_eq!(
        (v.f_blocks * bs, v.f_bavail * bs),
        (1024 * K, 24 * K),
        "tenant is tighter now"
    );
    // The spool root shows the real partitions.
    let root = statvfs(&m.mnt);
    let real = statvfs(&m.backing("fast", ""));
    assert_eq!(root.f_blocks * root.f_frsize, real.f_blocks * real.f_frsize);
    // `df` itself agrees (1K blocks).
    let out = Command::new("df")
        .arg("-k")
        .arg(m.path(JANE))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap();
    let cols: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cols[1], "1024", "df size: {text}");
    assert_eq!(cols[3], "24", "df avail: {text}");
}

#[test]
fn df_on_a_tenant_directory_shows_the_tenant_quota() {
    let m = boxes("", &[JANE]);
    put_n(&m, &format!("{JANE}/1."), 100 * K, 1);
    let v = statvfs(&m.path(EXAMPLE));
    let bs = v.f_frsize;
    assert_eq!((v.f_blocks * bs, v.f_bavail * bs), (1024 * K, 924 * K));
}

// --- reports and logs -----------------------------------------------------------------------

#[test]
fn usage_json_has_exactly_the_documented_shape() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 10 * K, 1);
    put_n(&m, &format!("{JANE}/1."), 20 * K, 2);
    let u = m.usage();
    let top: Vec<&String> = u.as_object().unwrap().keys().collect();
    assert_eq!(top, ["mailboxes", "tenants"], "top-level keys: {u}");
    for t in u["tenants"].as_array().unwrap() {
        let mut keys: Vec<&String> = t.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            ["limit", "name", "percent", "used"],
            "tenant keys: {t}"
        );
        assert!(
            t["used"].is_u64() && (t["limit"].is_u64() || t["limit"].is_null()),
            "{t}"
        );
    }
    for mbx in u["mailboxes"].as_array().unwrap() {
        let mut keys: Vec<&String> = mbx.as_object().unwrap().keys().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "limit",
                "name",
                "partition",
                "partitions",
                "percent",
                "tenant",
                "used"
            ],
            "mailbox keys: {mbx}"
        );
        assert!(
            mbx["used"].is_u64() && (mbx["limit"].is_u64() || mbx["limit"].is_null()),
            "{mbx}"
        );
    }
    let john = entry(&u, "mailboxes", JOHN_MB).unwrap();
    assert_eq!(john["tenant"], "example.org");
    assert_eq!(john["used"], 10 * K);
    assert_eq!(john["limit"], 256 * K);
    assert_eq!(john["partition"], "fast");
    let jane = entry(&u, "mailboxes", JANE_MB).unwrap();
    assert_eq!(jane["limit"], Value::Null, "no limit is null");
    assert_eq!(jane["partition"], "fast");
    let t = entry(&u, "tenants", "example.org").unwrap();
    assert_eq!(
        (t["used"].as_u64(), t["limit"].as_u64()),
        (Some(30 * K), Some(1024 * K))
    );
    // The table form works too.
    let (ok, out, err) = m.cli(&["usage"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(JOHN_MB) && out.contains("example.org"),
        "{out}"
    );
}

#[test]
fn each_refusal_logs_one_complete_line() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/1."), 256 * K, 1);
    let before = edquot_lines(&m).len();
    let mut f = File::create(m.path(&format!("{JOHN}/2."))).unwrap();
    assert_edquot(f.write(&pat(3000, 1)), "write");
    drop(f);
    let lines = edquot_lines(&m);
    assert_eq!(lines.len(), before + 1, "one line per refusal: {lines:#?}");
    let l = lines.last().unwrap();
    for want in [
        "write",
        &format!("{JOHN}/2."),
        JOHN_MB,
        "example.org",
        "262144",
        "used 262144",
        "asked 3000",
    ] {
        assert!(l.contains(want), "refusal line lacks {want:?}: {l}");
    }
    // A tenant refusal names the mailbox too.
    put_n(&m, &format!("{JANE}/1."), 768 * K, 2);
    let mut f = File::create(m.path(&format!("{JANE}/2."))).unwrap();
    assert_edquot(f.write(&pat(10, 1)), "write");
    drop(f);
    assert_edquot(
        fs::hard_link(m.path(&format!("{JOHN}/1.")), m.path(&format!("{JANE}/3."))),
        "link",
    );
    assert_edquot(
        path_truncate(&m.path(&format!("{JANE}/1.")), 800 * K),
        "truncate",
    );
    let lines = edquot_lines(&m);
    assert_eq!(lines.len(), before + 4, "one line per refusal: {lines:#?}");
    for (l, (op, path, asked)) in lines[before + 1..].iter().zip([
        ("write", format!("{JANE}/2."), 10),
        ("link", format!("{JANE}/3."), 256 * K),
        ("truncate", format!("{JANE}/1."), 32 * K),
    ]) {
        for want in [
            op,
            &path,
            JANE_MB,
            "tenant example.org",
            "limit 1048576",
            "used 1048576",
            &format!("asked {asked}"),
        ] {
            assert!(l.contains(want), "refusal line lacks {want:?}: {l}");
        }
    }
}

#[test]
fn crossing_warn_percent_is_logged_once_per_crossing() {
    let m = cyrus_with("warn_percent = 50\n", "");
    mkdirs(&m, JOHN);
    let warnings = |m: &Mount| {
        m.log_text()
            .lines()
            .filter(|l| l.contains(&format!("mailbox {JOHN_MB} at")))
            .count()
    };
    put_n(&m, &format!("{JOHN}/1."), 100 * K, 1);
    assert_eq!(warnings(&m), 0, "below 50%");
    put_n(&m, &format!("{JOHN}/2."), 40 * K, 2);
    assert_eq!(warnings(&m), 1, "crossed 50% (140K of 256K)");
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/2.")))
        .unwrap();
    for _ in 0..20 {
        f.write_all(&pat(K, 3)).unwrap();
    }
    drop(f);
    assert_eq!(warnings(&m), 1, "logged once while above");
    fs::remove_file(m.path(&format!("{JOHN}/2."))).unwrap();
    put_n(&m, &format!("{JOHN}/3."), 10 * K, 4);
    assert_eq!(warnings(&m), 1, "below again: no line");
    put_n(&m, &format!("{JOHN}/4."), 40 * K, 5);
    assert_eq!(warnings(&m), 2, "second crossing logged");
    let l = m
        .log_text()
        .lines()
        .rfind(|l| l.contains(&format!("mailbox {JOHN_MB} at")))
        .unwrap()
        .to_string();
    assert!(l.contains("limit 262144"), "{l}");
}

#[test]
fn moving_mail_between_folders_of_a_full_mailbox_is_allowed() {
    let m = cyrus("");
    let (sent, trash) = (format!("{JOHN}/Sent"), format!("{JOHN}/Trash"));
    for d in [JOHN, sent.as_str(), trash.as_str()] {
        mkdirs(&m, d);
    }
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    put_n(&m, &format!("{sent}/1."), 56 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    fs::rename(
        m.path(&format!("{JOHN}/1.")),
        m.path(&format!("{trash}/1.")),
    )
    .unwrap();
    fs::rename(m.path(&sent), m.path(&format!("{JOHN}/Old Sent"))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let mut f = File::create(m.path(&format!("{trash}/2."))).unwrap();
    assert_edquot(f.write(b"x"), "still full");
    drop(f);
    assert_matches_disk(&m);
}

#[test]
fn an_open_file_follows_its_name_to_another_mailbox() {
    let m = boxes("", &[JOHN, JANE]);
    put_n(&m, &format!("{JOHN}/0."), 250 * K, 1);
    let mut f = File::create(m.path(&format!("{JANE}/1."))).unwrap();
    f.write_all(&pat(10 * K, 2)).unwrap();
    // Renamed into john (6K of room) while open: later growth is john's.
    assert_edquot(
        fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/1."))),
        "10K into 6K of room",
    );
    fs::remove_file(m.path(&format!("{JOHN}/0."))).unwrap();
    fs::rename(m.path(&format!("{JANE}/1.")), m.path(&format!("{JOHN}/1."))).unwrap();
    f.write_all(&pat(6 * K, 3)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (16 * K, 0));
    put_n(&m, &format!("{JOHN}/2."), 240 * K, 4);
    assert_edquot(
        f.write(b"x"),
        "growth through a descriptor opened in jane, now in full john",
    );
    drop(f);
    // The refusal names the file by its current path.
    let l = edquot_lines(&m).last().unwrap().clone();
    assert!(l.contains(&format!("{JOHN}/1.")), "{l}");
    assert_matches_disk(&m);
}

#[test]
fn a_sparse_write_is_charged_by_apparent_size() {
    let m = boxes("", &[JOHN]);
    let f = File::create(m.path(&format!("{JOHN}/1."))).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_at(b"x", 200 * K).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 200 * K + 1);
    assert_edquot(
        f.write_at(b"y", 256 * K),
        "sparse write ending one byte past the limit",
    );
    f.write_at(b"y", 256 * K - 1).unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

#[test]
fn quota_cli_rejects_bad_input_and_changes_nothing() {
    let m = cyrus("");
    for args in [
        &["quota", "set", "--mailbox", JOHN_MB, "12Q"][..],
        &["quota", "set", "--mailbox", "", "1M"][..],
        &["quota", "set", "--tenant", " ", "1M"][..],
        &["quota", "set", "--mailbox", "user/../x@example.org", "1M"][..],
    ] {
        let (ok, _, err) = m.cli(args);
        assert!(!ok, "{args:?} accepted");
        assert!(!err.is_empty(), "{args:?}: no reason given");
    }
    assert_eq!(
        entry(&m.usage(), "mailboxes", JOHN_MB).unwrap()["limit"],
        256 * K
    );
    assert!(
        !m.state.join("limits.json").exists(),
        "a refused change was persisted"
    );
}

/// Anyone may connect to the control socket: nobody may make the daemon
/// hold much or long. Others than root are answered without a thread; an
/// admin's request line is bounded in size and time.
#[test]
fn control_clients_cannot_make_the_daemon_hold_memory_or_threads() {
    use std::os::unix::net::UnixStream;
    let m = boxes("", &[JOHN]);
    let socket = m.state.join("control.sock");
    let threads = || {
        let status = fs::read_to_string(format!("/proc/{}/status", m.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line[8..].trim().parse::<usize>().unwrap()
    };
    let before = threads();
    // 200 connections from nobody, held open, sending nothing.
    let _holder = python_as_nobody(&format!(
        "import socket,time\ns=[socket.socket(socket.AF_UNIX) for _ in range(200)]\n\
         [x.connect('{}') for x in s]\nprint('ready',flush=True)\ntime.sleep(30)",
        socket.display()
    ));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(threads() < before + 5, "threads: {before} -> {}", threads());
    // Root, meanwhile: an endless line is cut off, not buffered whole ...
    let mut s = UnixStream::connect(&socket).unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    assert!(sent < 64 << 20, "the daemon took a 64 MiB request line");
    // ... and the control interface still answers.
    let u = m.usage();
    assert!(u["mailboxes"].is_array(), "{u}");
}

/// Runs a Python script as nobody and waits until it prints `ready`;
/// the process is killed when the returned guard drops.
fn python_as_nobody(script: &str) -> KillOnDrop {
    use std::os::unix::process::CommandExt;
    let mut child = KillOnDrop(
        Command::new("python3")
            .args(["-c", script])
            .uid(65534)
            .gid(65534)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = child.0.stdout.take().unwrap();
    let mut ready = [0u8; 5];
    io::Read::read_exact(&mut out, &mut ready).unwrap();
    assert_eq!(&ready, b"ready");
    child
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The CLI finds the socket through an xattr, which any filesystem a user
/// owns can carry (or a registry entry a crashed daemon left for a device
/// number another filesystem has since): only a spoolfs mount is asked.
#[test]
fn the_cli_asks_only_a_spoolfs_mount() {
    let tmp = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o777)).unwrap();
    let fake = tmp.path().join("fake.sock");
    let _server = python_as_nobody(&format!(
        "import socket,time\ns=socket.socket(socket.AF_UNIX)\ns.bind('{}')\ns.listen(5)\n\
         print('ready',flush=True)\nc,_=s.accept()\nc.recv(100)\n\
         c.sendall(b'{{\"error\":\"fake\"}}\\n')\ntime.sleep(5)",
        fake.display()
    ));
    // A directory on a filesystem root that names the fake socket.
    let root = tempfile::tempdir().unwrap();
    let mount = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "spoolfs-fake"])
        .arg(root.path())
        .status()
        .unwrap();
    assert!(mount.success());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(root.path());
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_bytes()).unwrap();
    let (at, value) = (c(root.path()), fake.as_os_str().as_bytes());
    let set = unsafe {
        libc::setxattr(
            at.as_ptr(),
            c"user.spoolfs.control".as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        set,
        0,
        "user xattr on tmpfs: {}",
        io::Error::last_os_error()
    );
    let out = Command::new(common::BIN)
        .args(["usage"])
        .arg(root.path())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the CLI trusted a fake daemon");
    assert!(
        err.contains("not inside a spoolfs mount (tmpfs from spoolfs-fake)"),
        "why: {err}"
    );
}
