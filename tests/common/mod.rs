//! Shared harness for integration tests: mounts spoolfs for real over
//! temporary partitions and always unmounts, also when a test panics.
#![allow(dead_code)]

pub mod cluster;
pub mod corefs;
pub mod posix;
pub mod quota;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_spoolfs");

/// A spoolfs mount with its temp dir, partitions and daemon. Dropping it
/// unmounts and reaps the daemon.
pub struct Mount {
    pub tmp: tempfile::TempDir,
    pub mnt: PathBuf,
    pub parts: Vec<(String, PathBuf)>,
    pub config: PathBuf,
    pub state: PathBuf,
    pub log: PathBuf,
    /// Extra `spoolfs mount` arguments (e.g. `-o ro`) for the next spawn.
    pub args: Vec<String>,
    /// The daemon's descriptor limit (soft and hard) for the next spawn.
    pub nofile: Option<u64>,
    child: Option<Child>,
}

/// What to mount: partition names (dirs made under the temp dir unless a
/// path is given) and the rest of the TOML config (routes, layout, quota…).
pub struct Spec {
    pub parts: Vec<(String, Option<PathBuf>)>,
    pub extra: String,
    /// Extra `spoolfs mount` arguments.
    pub args: Vec<String>,
}

impl Spec {
    pub fn new(names: &[&str]) -> Spec {
        Spec {
            parts: names.iter().map(|n| (n.to_string(), None)).collect(),
            extra: String::new(),
            args: Vec::new(),
        }
    }

    /// A partition at a given path (e.g. a loop-mounted image).
    pub fn at(names_paths: &[(&str, &Path)]) -> Spec {
        Spec {
            parts: names_paths
                .iter()
                .map(|(n, p)| (n.to_string(), Some(p.to_path_buf())))
                .collect(),
            extra: String::new(),
            args: Vec::new(),
        }
    }

    pub fn extra(mut self, toml: &str) -> Spec {
        self.extra.push_str(toml);
        self.extra.push('\n');
        self
    }

    pub fn args(mut self, args: &[&str]) -> Spec {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    pub fn mount(self) -> Mount {
        Mount::start(self)
    }
}

impl Mount {
    fn start(spec: Spec) -> Mount {
        let tmp = tempfile::Builder::new()
            .prefix("spoolfs-test")
            .tempdir()
            .expect("tempdir");
        let mnt = tmp.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let parts: Vec<(String, PathBuf)> = spec
            .parts
            .iter()
            .map(|(n, p)| {
                let path = p
                    .clone()
                    .unwrap_or_else(|| tmp.path().join(format!("part-{n}")));
                fs::create_dir_all(&path).unwrap();
                (n.clone(), path)
            })
            .collect();
        let state = tmp.path().join("state");
        let mut toml = String::from("[partitions]\n");
        for (n, p) in &parts {
            toml.push_str(&format!("{n} = \"{}\"\n", p.display()));
        }
        toml.push_str(&spec.extra);
        if !spec.extra.contains("[control]") {
            toml.push_str(&format!("[control]\nstate_dir = \"{}\"\n", state.display()));
        }
        let config = tmp.path().join("spoolfs.toml");
        fs::write(&config, toml).unwrap();
        let log = tmp.path().join("daemon.log");
        let mut m = Mount {
            tmp,
            mnt,
            parts,
            config,
            state,
            log,
            args: spec.args.clone(),
            nofile: None,
            child: None,
        };
        m.spawn();
        m
    }

    /// Starts the daemon and waits for the mount to appear.
    pub fn spawn(&mut self) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(BIN);
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                cmd.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                });
            }
        }
        let child = cmd
            .arg("mount")
            .args(&self.args)
            .arg("--config")
            .arg(&self.config)
            .arg(&self.mnt)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn spoolfs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !is_mounted(&self.mnt) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                self.child = None;
                panic!(
                    "spoolfs exited before mounting ({status}):\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mount did not appear:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// The backing path of `rel` on partition `name`.
    pub fn backing(&self, name: &str, rel: &str) -> PathBuf {
        let (_, p) = self
            .parts
            .iter()
            .find(|(n, _)| n == name)
            .expect("partition");
        p.join(rel)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Unmounts and waits for the daemon; returns its exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if is_mounted(&self.mnt) {
            let _ = Command::new("fusermount3")
                .arg("-u")
                .arg(&self.mnt)
                .status();
        }
        // Busy (a forked child of a concurrent test may briefly hold an
        // inherited descriptor): detach; the daemon ends once it is let go.
        if is_mounted(&self.mnt) {
            lazy_unmount(&self.mnt);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let st = child.wait().ok();
                lazy_unmount(&self.mnt);
                return st;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the daemon (a crash) and clears the stale mount.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        lazy_unmount(&self.mnt);
    }

    /// Stops and mounts again on the same partitions and config.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// `spoolfs <args> MOUNTPOINT`, as root; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(BIN)
            .args(args)
            .arg(&self.mnt)
            .output()
            .expect("run spoolfs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into(),
            String::from_utf8_lossy(&out.stderr).into(),
        )
    }

    /// `spoolfs usage --json` parsed.
    pub fn usage(&self) -> serde_json::Value {
        let (ok, out, err) = self.cli(&["usage", "--json"]);
        assert!(ok, "usage failed: {err}");
        serde_json::from_str(&out).expect("usage json")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        self.stop();
        if failed {
            eprintln!("--- spoolfs daemon log ---\n{}", self.log_text());
        }
    }
}

pub fn is_mounted(mnt: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let want = mnt.to_string_lossy();
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.len() > 2 && f[1] == want && f[2] == "fuse.spoolfs"
    })
}

pub fn lazy_unmount(mnt: &Path) {
    let c = std::ffi::CString::new(mnt.as_os_str().as_encoded_bytes()).unwrap();
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

/// Runs `f` in a forked child as `uid`/`gid` (with no supplementary
/// groups unless given); returns the child's exit code.
pub fn as_user(uid: u32, gid: u32, groups: &[u32], f: impl FnOnce() -> i32) -> i32 {
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let ok = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setgid(gid) == 0
                && libc::setuid(uid) == 0;
            let code = if ok { f() } else { 99 };
            libc::_exit(code);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
        if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }
    }
}

/// Σ st_size of the regular files under `dir` (recursive), each file once
/// per quota root however many names it has there (SEMANTICS.md): the
/// root of a path is its directory right below a `user` directory (the
/// Cyrus named layout's mailbox), elsewhere `dir` itself.
pub fn recount(dir: &Path) -> u64 {
    recount_in(dir, dir, None, &mut std::collections::HashSet::new())
}

/// `recount(dir)` leaving out the subtree `skip` (a nested quota root).
pub fn recount_without(dir: &Path, skip: &Path) -> u64 {
    recount_in(dir, dir, Some(skip), &mut std::collections::HashSet::new())
}

fn recount_in(
    dir: &Path,
    root: &Path,
    skip: Option<&Path>,
    seen: &mut std::collections::HashSet<(PathBuf, u64, u64)>,
) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    for e in rd.flatten() {
        let md = fs::symlink_metadata(e.path()).unwrap();
        if md.is_dir() {
            let path = e.path();
            if skip == Some(path.as_path()) {
                continue;
            }
            let child_root = if dir.file_name() == Some("user".as_ref()) {
                path.clone()
            } else {
                root.to_path_buf()
            };
            total += recount_in(&path, &child_root, skip, seen);
        } else if md.is_file() && seen.insert((root.to_path_buf(), md.dev(), md.ino())) {
            total += md.len();
        }
    }
    total
}

/// A small loop-mounted ext4 image (no reserved blocks, so root fills it
/// exactly like anyone else). Unmounted and detached on drop.
pub struct LoopFs {
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl LoopFs {
    pub fn ext4(size_mb: u64) -> LoopFs {
        let tmp = tempfile::Builder::new()
            .prefix("spoolfs-loop")
            .tempdir()
            .unwrap();
        let img = tmp.path().join("img");
        let dir = tmp.path().join("fs");
        fs::create_dir(&dir).unwrap();
        let f = fs::File::create(&img).unwrap();
        f.set_len(size_mb << 20).unwrap();
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-m", "0", "-O", "^has_journal"])
            .arg(&img));
        run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&img)
            .arg(&dir));
        LoopFs { dir, _tmp: tmp }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        let quiet = |args: &[&str]| {
            Command::new("umount")
                .args(args)
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
        };
        // Still busy (a daemon that has not quite exited): detach lazily;
        // the loop device (autoclear) goes with the last user.
        if !quiet(&[]).is_ok_and(|s| s.success()) {
            let _ = quiet(&["-l"]);
        }
    }
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Spec {
    /// Like [`Spec::mount`], with root-level TOML keys (`default_partition`
    /// and the like) placed before the `[partitions]` table they cannot
    /// follow.
    pub fn mount_with_top(self, top: &str) -> Mount {
        let mut m = Mount::start(self);
        m.stop();
        let old = fs::read_to_string(&m.config).unwrap();
        fs::write(&m.config, format!("{top}\n{old}")).unwrap();
        m.spawn();
        m
    }
}

// --- helpers appended for tests/faults.rs and tests/stress.rs ----------------

impl Mount {
    /// Waits up to `timeout` for the daemon to exit by itself (after a
    /// signal); returns its status, or None if it is still running (it is
    /// left running: dropping the Mount stops it).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(st)) = child.try_wait() {
                self.child = None;
                return Some(st);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The daemon's resident set size in KiB (VmRSS), if it is running.
    pub fn rss_kib(&self) -> Option<u64> {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.as_ref()?.id())).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    }
}

impl LoopFs {
    /// `mount -o remount,<opts>` of the loop filesystem; retried while the
    /// kernel reports it busy (files still open for writing).
    pub fn remount(&self, opts: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = Command::new("mount")
                .args(["-o", &format!("remount,{opts}")])
                .arg(&self.dir)
                .output()
                .map_err(|e| e.to_string())?;
            if out.status.success() {
                return Ok(());
            }
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            if Instant::now() > deadline {
                return Err(err);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// SplitMix64: tiny and deterministic; the stress run and the fuzzers
/// draw their seeded choices from it.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    /// An index into something `len` long (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

/// Sum of file sizes under `rel` on every partition of `m`: what a
/// mailbox or tenant directory's usage must equal.
pub fn backing_bytes(m: &Mount, rel: &str) -> u64 {
    m.parts
        .iter()
        .map(|(n, _)| recount(&m.backing(n, rel)))
        .sum()
}

/// `mkdir -p` of a spool path through the mount.
pub fn mkdirs(m: &Mount, rel: &str) {
    fs::create_dir_all(m.path(rel)).unwrap_or_else(|e| panic!("mkdir -p {rel}: {e}"));
}

/// The bytes used by `name` in a usage report's `list` ("mailboxes" or
/// "tenants"); 0 when it is not listed.
pub fn used(u: &serde_json::Value, list: &str, name: &str) -> u64 {
    u[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .map_or(0, |e| e["used"].as_u64().expect("used is an integer"))
}

/// A read-write shared mapping of the first `len` bytes of `f`; panics with
/// the error if the kernel refuses it. Unmap with `libc::munmap`.
pub fn map_shared(f: &fs::File, len: usize) -> *mut u8 {
    use std::os::fd::AsRawFd;
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}
