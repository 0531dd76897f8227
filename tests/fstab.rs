//! The fstab path: `mount -t fuse.spoolfs CONFIG MOUNTPOINT -o OPTIONS`
//! and an fstab line, through mount(8) and the shipped helper
//! `mount-scripts/mount.fuse.spoolfs` (installed as /sbin/mount.fuse.spoolfs).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{BIN, is_mounted};

/// Unmounts on drop and waits for the background daemon to exit.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
        wait_for_daemon_exit(&self.0);
    }
}

fn daemon_running(mnt: &Path) -> bool {
    let Ok(out) = Command::new("pgrep")
        .args(["-f", &format!("spoolfs mount .* {}$", mnt.display())])
        .output()
    else {
        return false;
    };
    !out.stdout.is_empty()
}

fn wait_for_daemon_exit(mnt: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while daemon_running(mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Installs the helper once per test run, atomically (copy, then rename),
/// so tests running in parallel never execute a half-written file.
fn install_helper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("mount-scripts/mount.fuse.spoolfs");
        let tmp = format!("/sbin/.mount.fuse.spoolfs.{}", std::process::id());
        fs::copy(&src, &tmp).expect("copy the helper to /sbin (tests run as root)");
        fs::rename(&tmp, "/sbin/mount.fuse.spoolfs").expect("install /sbin/mount.fuse.spoolfs");
    });
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    install_helper();
    let tmp = tempfile::Builder::new()
        .prefix("spoolfs-fstab")
        .tempdir()
        .unwrap();
    let (fast, slow, mnt) = (
        tmp.path().join("fast"),
        tmp.path().join("slow"),
        tmp.path().join("mnt"),
    );
    for d in [&fast, &slow, &mnt] {
        fs::create_dir(d).unwrap();
    }
    let config = tmp.path().join("spoolfs.toml");
    let toml = format!(
        "[partitions]\nfast = \"{}\"\nslow = \"{}\"\n[[route]]\nmatch = \"archive/**\"\npartition = \"slow\"\n[control]\nstate_dir = \"{}\"\n",
        fast.display(),
        slow.display(),
        tmp.path().join("state").display()
    );
    fs::write(&config, toml).unwrap();
    (tmp, config, mnt)
}

fn mount_cmd(tmp: &Path) -> Command {
    let mut c = Command::new("mount");
    c.env("SPOOLFS_BIN", BIN)
        .env("SPOOLFS_LOG", tmp.join("daemon.log"));
    c
}

fn check_working(mnt: &Path, tmp: &Path) {
    assert!(
        is_mounted(mnt),
        "not mounted; log:\n{}",
        fs::read_to_string(tmp.join("daemon.log")).unwrap_or_default()
    );
    fs::create_dir_all(mnt.join("archive/x")).unwrap();
    fs::write(mnt.join("archive/x/m"), b"hello").unwrap();
    assert_eq!(fs::read(tmp.join("slow/archive/x/m")).unwrap(), b"hello");
}

#[test]
fn mount_t_fuse_spoolfs_works_and_umount_stops_the_daemon() {
    let (tmp, config, mnt) = setup();
    let st = mount_cmd(tmp.path())
        .args(["-t", "fuse.spoolfs", "-o", "allow_other"])
        .arg(&config)
        .arg(&mnt)
        .status()
        .unwrap();
    let guard = Mounted(mnt.clone());
    assert!(st.success(), "mount -t fuse.spoolfs failed");
    check_working(&mnt, tmp.path());
    assert!(Command::new("umount").arg(&mnt).status().unwrap().success());
    wait_for_daemon_exit(&mnt);
    assert!(!is_mounted(&mnt));
    assert!(!daemon_running(&mnt), "daemon still running after umount");
    drop(guard);
}

#[test]
fn fstab_line_mounts() {
    let (tmp, mnt, _guard) = fstab_mount("defaults,allow_other");
    check_working(&mnt, tmp.path());
}

/// `mount -T FSTAB MOUNTPOINT` with a one-line fstab giving `options`;
/// asserts it succeeded.
fn fstab_mount(options: &str) -> (tempfile::TempDir, PathBuf, Mounted) {
    let (tmp, config, mnt) = setup();
    let fstab = tmp.path().join("fstab");
    fs::write(
        &fstab,
        format!(
            "{} {} fuse.spoolfs {options} 0 0\n",
            config.display(),
            mnt.display()
        ),
    )
    .unwrap();
    let st = mount_cmd(tmp.path())
        .arg("-T")
        .arg(&fstab)
        .arg(&mnt)
        .status()
        .unwrap();
    let guard = Mounted(mnt.clone());
    assert!(st.success(), "mount via fstab line failed");
    (tmp, mnt, guard)
}

#[test]
fn helper_reports_a_bad_config() {
    let (tmp, config, mnt) = setup();
    fs::write(
        &config,
        "[partitions]\nfast = \"/nonexistent/spoolfs-partition\"\n",
    )
    .unwrap();
    let out = mount_t(tmp.path(), &config, &mnt, None);
    let _guard = Mounted(mnt.clone());
    assert_refused(&out, &mnt, tmp.path(), "partitions.fast");
}

/// `mount -t fuse.spoolfs [-o OPTIONS] CONFIG MOUNTPOINT`.
fn mount_t(tmp: &Path, config: &Path, mnt: &Path, options: Option<&str>) -> std::process::Output {
    let mut cmd = mount_cmd(tmp);
    cmd.args(["-t", "fuse.spoolfs"]);
    if let Some(options) = options {
        cmd.args(["-o", options]);
    }
    cmd.arg(config).arg(mnt).output().unwrap()
}

/// mount(8) failed, nothing was mounted, and the daemon's log says `why`.
#[track_caller]
fn assert_refused(out: &std::process::Output, mnt: &Path, tmp: &Path, why: &str) {
    assert!(!out.status.success(), "mount succeeded");
    assert!(!is_mounted(mnt));
    let log = fs::read_to_string(tmp.join("daemon.log")).unwrap();
    assert!(log.contains(why), "the log should say {why:?}: {log}");
}

#[test]
fn fstab_line_with_generic_and_fstab_only_options_mounts_read_only() {
    let (_tmp, mnt, _guard) =
        fstab_mount("ro,noatime,nosuid,nofail,_netdev,x-systemd.automount,allow_other");
    assert!(is_mounted(&mnt));
    let err = fs::create_dir(mnt.join("x")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
}

#[test]
fn helper_reports_an_unknown_option_by_name() {
    let (tmp, config, mnt) = setup();
    let out = mount_t(tmp.path(), &config, &mnt, Some("allow_other,bogus_opt"));
    let _guard = Mounted(mnt.clone());
    assert_refused(&out, &mnt, tmp.path(), "unknown mount option \"bogus_opt\"");
}

#[test]
fn a_second_mount_of_the_same_spool_fails() {
    let (tmp, config, mnt) = setup();
    let first = mount_t(tmp.path(), &config, &mnt, Some("allow_other"));
    let _guard = Mounted(mnt.clone());
    assert!(first.status.success());
    let out = mount_t(tmp.path(), &config, &mnt, Some("allow_other"));
    assert!(!out.status.success(), "a second mount was accepted");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("already served"), "{said}");
    check_working(&mnt, tmp.path());
}
