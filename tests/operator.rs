//! Operator mistakes that would break the limit are refused, loudly: a
//! second daemon over the same spool, a mount point already mounted, an
//! unknown mount option, a mailbox name that can never match. Real mounts.

mod common;

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Mount, Spec, backing_bytes, is_mounted, lazy_unmount, mkdirs, used};

const K: u64 = 1024;
const JOHN: &str = "mail/domain/e/example.org/j/user/john";
const JOHN_MB: &str = "user/john@example.org";

const CYRUS: &str = r#"
[layout]
kind = "cyrus"
[mailboxes."user/john@example.org"]
limit = "64K"
"#;

fn spool() -> Mount {
    let m = Spec::new(&["fast", "slow"]).extra(CYRUS).mount();
    mkdirs(&m, JOHN);
    m
}

fn put(m: &Mount, rel: &str, n: u64) {
    fs::write(m.path(rel), vec![b'x'; n as usize]).unwrap_or_else(|e| panic!("write {rel}: {e}"));
}

#[track_caller]
fn assert_errno<T: std::fmt::Debug>(r: io::Result<T>, errno: i32, what: &str) {
    match r {
        Err(e) if e.raw_os_error() == Some(errno) => {}
        other => panic!("{what}: expected errno {errno}, got {other:?}"),
    }
}

/// Runs `spoolfs mount ARGS` expecting a refusal: returns its exit status
/// and what it printed. A daemon that starts anyway is killed and the
/// mount at `mnt` detached before the test fails.
fn refused(args: &[OsString], mnt: &Path) -> (ExitStatus, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut child = Command::new(BIN)
        .arg("mount")
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(out.reopen().unwrap())
        .stderr(out.reopen().unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, fs::read_to_string(out.path()).unwrap());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            lazy_unmount(mnt);
            panic!(
                "spoolfs mount {args:?} was not refused:\n{}",
                fs::read_to_string(out.path()).unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn mount_args(config: &Path, mnt: &Path, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = extra.iter().map(OsString::from).collect();
    args.extend(["--config".into(), config.into(), mnt.into()]);
    args
}

/// `config` with `state_dir` (or the whole text) changed, written next to it.
fn variant(m: &Mount, name: &str, edit: impl Fn(&str) -> String) -> PathBuf {
    let path = m.tmp.path().join(name);
    fs::write(&path, edit(&fs::read_to_string(&m.config).unwrap())).unwrap();
    path
}

fn spoolfs_mounts_at(mnt: &Path) -> usize {
    let want = mnt.to_string_lossy();
    fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .filter(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            f.len() > 2 && f[1] == want && f[2] == "fuse.spoolfs"
        })
        .count()
}

#[test]
fn a_second_daemon_over_the_same_spool_is_refused_and_the_first_keeps_the_limit() {
    let m = spool();
    put(&m, &format!("{JOHN}/1."), 40 * K);
    let pid = m.pid().to_string();
    let other_mnt = m.tmp.path().join("mnt2");
    fs::create_dir(&other_mnt).unwrap();
    let other_state = m.tmp.path().join("state2");
    let own_state = variant(&m, "own-state.toml", |t| {
        t.replace(&*m.state.to_string_lossy(), &other_state.to_string_lossy())
    });
    // Other partitions, same state_dir.
    let shared_state = variant(&m, "shared-state.toml", |t| {
        t.replace("part-fast", "other-fast")
            .replace("part-slow", "other-slow")
    });
    for d in ["other-fast", "other-slow"] {
        fs::create_dir(m.tmp.path().join(d)).unwrap();
    }
    // A partition inside one of the first daemon's partitions.
    let nested = variant(&m, "nested.toml", |t| {
        t.replace("part-fast", "part-fast/mail")
            .replace("part-slow", "other-slow")
            .replace(&*m.state.to_string_lossy(), &other_state.to_string_lossy())
    });
    let cases = [
        (
            "same mount point",
            mount_args(&m.config, &m.mnt, &[]),
            "partition fast",
        ),
        (
            "another mount point",
            mount_args(&m.config, &other_mnt, &[]),
            "partition fast",
        ),
        (
            "overmount",
            mount_args(&m.config, &m.mnt, &["-o", "overmount"]),
            "partition fast",
        ),
        (
            "another state_dir",
            mount_args(&own_state, &other_mnt, &[]),
            "partition fast",
        ),
        (
            "the same state_dir",
            mount_args(&shared_state, &other_mnt, &[]),
            "state_dir",
        ),
        (
            "a partition inside one of its partitions",
            mount_args(&nested, &other_mnt, &[]),
            "is inside",
        ),
    ];
    for (what, args, names) in cases {
        let (status, out) = refused(&args, &other_mnt);
        assert!(!status.success(), "{what}: exit status {status}");
        assert!(
            out.contains(names) && out.contains(&format!("PID {pid}")),
            "{what}: the refusal should name {names:?} and PID {pid}:\n{out}"
        );
        assert!(
            !out.contains("usage rebuilt"),
            "{what}: scanned before refusing:\n{out}"
        );
        assert_eq!(spoolfs_mounts_at(&m.mnt), 1, "{what}: stacked a mount");
        assert!(!is_mounted(&other_mnt), "{what}: mounted anyway");
    }
    assert!(
        !other_state.exists(),
        "a refused start left its state_dir behind"
    );
    // The locks are on the directories themselves: no lock file anywhere.
    for (name, _) in &m.parts {
        let entries: Vec<_> = fs::read_dir(m.backing(name, ""))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert!(entries.iter().all(|n| n == "mail"), "{name}: {entries:?}");
    }
    // A client's flock on the mount root stays in the kernel's FUSE inode:
    // it neither conflicts with nor reaches the daemon's locks.
    let root = File::open(&m.mnt).unwrap();
    use std::os::fd::AsRawFd;
    assert_eq!(
        unsafe { libc::flock(root.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) },
        0
    );
    let (_, out) = refused(&mount_args(&m.config, &other_mnt, &[]), &other_mnt);
    assert!(out.contains(&format!("PID {pid}")), "{out}");
    drop(root);
    // The first daemon still enforces the limit to the byte.
    put(&m, &format!("{JOHN}/2."), 24 * K);
    let mut f = File::create(m.path(&format!("{JOHN}/3."))).unwrap();
    assert_errno(f.write(b"x"), libc::EDQUOT, "one byte over the limit");
    drop(f);
    let u = m.usage();
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 64 * K);
    assert_eq!(
        used(&u, "mailboxes", JOHN_MB),
        backing_bytes(&m, JOHN),
        "usage = recount"
    );
}

#[test]
fn a_killed_daemon_releases_its_locks_and_a_restart_succeeds_at_once() {
    let mut m = spool();
    put(&m, &format!("{JOHN}/1."), 10 * K);
    // Killed with its mount left behind: a start names the dead mount.
    unsafe { libc::kill(m.pid() as i32, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while fs::metadata(&m.mnt).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the killed daemon's mount still answers"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (status, out) = refused(&mount_args(&m.config, &m.mnt, &[]), &m.mnt);
    assert!(!status.success());
    assert!(
        out.contains("dead FUSE mount") && out.contains("fusermount3 -u"),
        "{out}"
    );
    m.kill9(); // reaps it and clears the dead mount
    // The dead daemon's socket is still there; the restart replaces it.
    assert!(m.state.join("control.sock").exists());
    let started = Instant::now();
    m.spawn();
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "restart took {:?}",
        started.elapsed()
    );
    assert!(!m.log_text().contains("already served"), "{}", m.log_text());
    let u = m.usage();
    assert_eq!(used(&u, "mailboxes", JOHN_MB), backing_bytes(&m, JOHN));
    assert_eq!(used(&u, "mailboxes", JOHN_MB), 10 * K);
}

#[test]
fn a_failed_start_leaves_the_running_daemon_and_nothing_else_behind() {
    let m = spool();
    put(&m, &format!("{JOHN}/1."), 3 * K);
    let missing = m.tmp.path().join("no-such-dir");
    let (status, out) = refused(&mount_args(&m.config, &missing, &[]), &missing);
    assert!(!status.success());
    assert!(out.contains("does not exist"), "{out}");
    assert!(
        m.state.join("control.sock").exists(),
        "the running daemon's socket was removed"
    );
    assert_eq!(used(&m.usage(), "mailboxes", JOHN_MB), 3 * K);
    // The built-in configuration creates its data directory only for a
    // start that gets somewhere: not for a missing mount point, and a start
    // refused later (the mount point is mounted) removes what it created.
    let data = m.tmp.path().join("builtin-data");
    for mnt in [&missing, &m.mnt] {
        let args: Vec<OsString> = vec!["--data-dir".into(), data.clone().into(), mnt.into()];
        let (status, out) = refused(&args, mnt);
        assert!(!status.success(), "{out}");
        assert!(
            !data.exists(),
            "a failed start left {} behind:\n{out}",
            data.display()
        );
    }
    assert_eq!(used(&m.usage(), "mailboxes", JOHN_MB), 3 * K);
}

/// A tmpfs mounted on a fresh directory; unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    fn new() -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("spoolfs-tmpfs")
            .tempdir()
            .unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount -t tmpfs");
        Tmpfs(dir)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        lazy_unmount(self.0.path());
    }
}

#[test]
fn a_mounted_mount_point_is_refused_unless_overmount() {
    // Anything mounted there: a tmpfs.
    let t = Tmpfs::new();
    let mut m = spool();
    m.stop();
    let (status, out) = refused(&mount_args(&m.config, t.0.path(), &[]), t.0.path());
    assert!(!status.success());
    assert!(
        out.contains("already mounted") && out.contains("tmpfs") && out.contains("-o overmount"),
        "{out}"
    );
    drop(t);
    // A spoolfs mount of another spool there: refused, then allowed on request.
    let first = Spec::new(&["a"]).extra(CYRUS).mount();
    fs::write(first.path("below"), b"first").unwrap();
    let (status, out) = refused(&mount_args(&m.config, &first.mnt, &[]), &first.mnt);
    assert!(!status.success());
    assert!(
        out.contains("already mounted") && out.contains("fuse.spoolfs"),
        "{out}"
    );
    assert!(
        !out.contains("usage rebuilt"),
        "scanned before refusing:\n{out}"
    );
    m.mnt = first.mnt.clone();
    m.args = vec!["-o".into(), "overmount".into()];
    m.spawn();
    let deadline = Instant::now() + Duration::from_secs(30);
    while spoolfs_mounts_at(&m.mnt) < 2 {
        assert!(
            Instant::now() < deadline,
            "overmount did not appear:\n{}",
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(m.path(JOHN).is_dir(), "the top mount is the second spool");
    assert!(!m.path("below").exists());
    // Unmount only the top one (the harness's stop would detach both).
    assert!(
        Command::new("umount")
            .arg(&m.mnt)
            .status()
            .unwrap()
            .success()
    );
    let status = m
        .wait_exit(Duration::from_secs(30))
        .expect("top daemon exits");
    assert!(status.success(), "{status}");
    assert_eq!(fs::read(first.path("below")).unwrap(), b"first");
}

#[test]
fn ro_refuses_writes_with_erofs_and_reads_work() {
    let mut m = spool();
    put(&m, &format!("{JOHN}/1."), 5 * K);
    m.stop();
    m.args = vec!["-o".into(), "ro,noatime,nosuid".into()];
    m.spawn();
    let mount_line = fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(1) == Some(&*m.mnt.to_string_lossy()))
        .unwrap()
        .to_string();
    let opts = mount_line
        .split(' ')
        .nth(3)
        .unwrap()
        .split(',')
        .collect::<Vec<_>>();
    for want in ["ro", "nosuid", "nodev", "noatime"] {
        assert!(opts.contains(&want), "{want} missing: {mount_line}");
    }
    assert_eq!(
        fs::read(m.path(&format!("{JOHN}/1."))).unwrap().len(),
        5 * K as usize
    );
    let file = m.path(&format!("{JOHN}/1."));
    assert_errno(
        File::create(m.path(&format!("{JOHN}/2."))),
        libc::EROFS,
        "create",
    );
    assert_errno(
        OpenOptions::new().append(true).open(&file),
        libc::EROFS,
        "open for append",
    );
    assert_errno(
        fs::create_dir(m.path(&format!("{JOHN}/Sub"))),
        libc::EROFS,
        "mkdir",
    );
    assert_errno(fs::remove_file(&file), libc::EROFS, "unlink");
    let u = m.usage();
    assert_eq!(
        used(&u, "mailboxes", JOHN_MB),
        5 * K,
        "quota state untouched"
    );
    assert_eq!(used(&u, "mailboxes", JOHN_MB), backing_bytes(&m, JOHN));
}

#[test]
fn an_unknown_mount_option_is_refused_by_name() {
    let mut m = spool();
    m.stop();
    let fresh_state = m.tmp.path().join("fresh-state");
    let config = variant(&m, "fresh.toml", |t| {
        t.replace(&*m.state.to_string_lossy(), &fresh_state.to_string_lossy())
    });
    let args = mount_args(&config, &m.mnt, &["-o", "allow_other,frobnicate=3,noatime"]);
    let (status, out) = refused(&args, &m.mnt);
    assert!(!status.success());
    assert!(out.contains("unknown mount option \"frobnicate\""), "{out}");
    assert!(!fresh_state.exists(), "refused before anything was created");
    // fstab-only and spoolfs options are accepted.
    m.args = vec![
        "-o".into(),
        "defaults,nofail,_netdev,x-systemd.automount,comment=x,allow_other,nopassthrough".into(),
    ];
    m.spawn();
    assert!(is_mounted(&m.mnt));
}

#[test]
fn quota_set_checks_names_against_the_layout_and_notes_provisioning() {
    // Mailboxes without a domain belong to example.org: every name needs one.
    let m = Spec::new(&["fast"])
        .extra(&CYRUS.replace(
            "kind = \"cyrus\"",
            "kind = \"cyrus\"\ndefault_tenant = \"example.org\"",
        ))
        .mount();
    mkdirs(&m, JOHN);
    put(&m, &format!("{JOHN}/1."), 2 * K);
    for (args, want) in [
        (&["--mailbox", "john"][..], "user/NAME@DOMAIN"),
        (&["--mailbox", "user/john"][..], "user/NAME@DOMAIN"),
        (&["--mailbox", "user@example.org"][..], "user/NAME@DOMAIN"),
        (&["--tenant", "user/john@example.org"][..], "mail domain"),
    ] {
        let mut full = vec!["quota", "set"];
        full.extend(args);
        full.push("1M");
        let (ok, _, err) = m.cli(&full);
        assert!(!ok, "{args:?} accepted");
        assert!(
            err.contains(want),
            "{args:?}: the refusal should show {want:?}: {err}"
        );
    }
    assert!(
        !m.state.join("limits.json").exists(),
        "a refused name was persisted"
    );
    let (ok, out, err) = m.cli(&["quota", "set", "--mailbox", "user/newbie@example.org", "2M"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("limit set to 2 MiB for mailbox user/newbie@example.org")
            && out.contains("no data yet"),
        "{out}"
    );
    let (ok, out, err) = m.cli(&["quota", "set", "--mailbox", JOHN_MB, "10K"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("used 2 KiB") && !out.contains("no data yet"),
        "{out}"
    );
    let log = m.log_text();
    assert!(
        log.contains("limit set to 10 KiB for mailbox user/john@example.org by uid 0"),
        "{log}"
    );
    assert!(
        !log.contains("Some("),
        "debug formatting in the log:\n{log}"
    );
    let u = m.usage();
    let newbie = u["mailboxes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "user/newbie@example.org")
        .expect("provisioned mailbox listed");
    assert_eq!(newbie["limit"], 2 * K * K);
}

#[test]
fn usage_and_quota_work_from_any_path_inside_the_mount() {
    let m = Spec::new(&["fast", "slow"])
        .extra(CYRUS)
        .extra("[[route]]\nmatch = \"**/Archive\"\npartition = \"slow\"\n[[route]]\nmatch = \"**/Archive/**\"\npartition = \"slow\"")
        .mount();
    mkdirs(&m, &format!("{JOHN}/Archive"));
    put(&m, &format!("{JOHN}/1."), 16 * K);
    put(&m, &format!("{JOHN}/Archive/1."), 32 * K);
    let run = |args: &[&str], cwd: &Path| {
        let out = Command::new(BIN)
            .args(args)
            .current_dir(cwd)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let deep = m.path(&format!("{JOHN}/Archive"));
    let file = m.path(&format!("{JOHN}/1."));
    for path in [deep.to_str().unwrap(), file.to_str().unwrap(), "."] {
        let json: serde_json::Value =
            serde_json::from_str(&run(&["usage", "--json", path], &deep)).unwrap();
        let john = json["mailboxes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == JOHN_MB)
            .unwrap()
            .clone();
        assert_eq!(john["used"], 48 * K);
        assert_eq!(john["percent"], 75.0, "{john}");
        assert_eq!(
            john["partitions"],
            serde_json::json!([{"name": "fast", "bytes": 16 * K}, {"name": "slow", "bytes": 32 * K}]),
            "{john}"
        );
        let out = run(&["quota", "get", "--mailbox", JOHN_MB, path], &deep);
        assert!(out.contains("used 48.0K"), "{out}");
    }
    // Outside any spoolfs mount: said plainly.
    let out = Command::new(BIN).args(["usage", "/tmp"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not inside a spoolfs mount"));
}
