//! Everything that knows about the spoolfs daemon: its config file, how to
//! start `spoolfs mount`, how to know it is mounted, and how to stop it.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::sys::{self, Ctx, Result};

/// Number of mail domains (tenants) every workload uses: `d00.example` … `d19.example`.
pub const DOMAINS: usize = 20;

pub fn domain_name(d: usize) -> String {
    format!("d{d:02}.example")
}

/// The route that sends half of the domains (`d10…d19`) to partition p2.
pub const ROUTE_TO_P2: &str = "d1*/**";

/// Does the route send domain `d` to p2? (Mirror of `ROUTE_TO_P2`, used when
/// writing the mount-scan corpus straight to the partitions.)
pub fn domain_on_p2(d: usize) -> bool {
    domain_name(d).starts_with("d1")
}

pub struct SpoolfsConfig<'a> {
    pub p1: &'a Path,
    pub p2: &'a Path,
    pub state_dir: &'a Path,
    pub threads: usize,
    /// Cluster mode: a `[cluster]` section on this etcd.
    pub cluster: Option<&'a ClusterSection>,
}

/// The `[cluster]` section of the cluster-mode target: one host on one
/// etcd, with the default grant, so every tenant's limit is escrowed.
pub struct ClusterSection {
    pub etcd: String,
    pub prefix: String,
}

fn toml_str(p: &Path) -> String {
    // Basic TOML string; paths we create contain no quotes or backslashes,
    // but escape anyway.
    let s = p.to_string_lossy();
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

pub fn write_config(path: &Path, c: &SpoolfsConfig) -> Result<()> {
    let text = format!(
        r#"# written by spoolfs-bench
default_partition = "p1"

[partitions]
p1 = {p1}
p2 = {p2}

[[route]]
match = "{route}"
partition = "p2"

[mount]
threads = {threads}
allow_other = true

[layout]
kind = "pattern"
pattern = "{{tenant}}/{{mailbox}}/**"

# Limits that are never hit: quota accounting is on, refusals never happen.
[quota]
mailbox_limit = "100G"
tenant_limit = "1T"

[control]
state_dir = {state}
{cluster}"#,
        p1 = toml_str(c.p1),
        p2 = toml_str(c.p2),
        route = ROUTE_TO_P2,
        threads = c.threads,
        state = toml_str(c.state_dir),
        cluster = c.cluster.map_or_else(String::new, |k| format!(
            "\n[cluster]\netcd_endpoints = [\"{}\"]\nhost_id = \"bench\"\nprefix = \"{}\"\n",
            k.etcd, k.prefix
        )),
    );
    fs::write(path, text).ctx(|| format!("writing {}", path.display()))
}

/// A running `spoolfs mount`. Dropping it unmounts (`fusermount3 -u`) and
/// reaps the daemon — on success, on error and on panic alike.
pub struct MountGuard {
    child: Option<Child>,
    /// Pid of the daemon (the child, or the process it forked into).
    pub pid: u32,
    pub mountpoint: PathBuf,
    pub fstype: String,
    /// From just before spawning until the mount showed up in /proc/mounts.
    pub mount_time: Duration,
    log: PathBuf,
    unmounted: bool,
}

fn log_tail(log: &Path) -> String {
    let s = fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    let from = lines.len().saturating_sub(20);
    if lines.is_empty() {
        "(daemon printed nothing)".into()
    } else {
        lines[from..].join("\n    ")
    }
}

impl MountGuard {
    /// `BIN mount --config CFG [-o OPTIONS] MNT`, stdout+stderr to `log`; waits until MNT
    /// is a `fuse.spoolfs` mount in /proc/mounts (or the daemon dies, or
    /// `timeout` passes).
    pub fn mount(bin: &Path, cfg: &Path, mnt: &Path, log: &Path, timeout: Duration, options: Option<&str>) -> Result<MountGuard> {
        use std::os::unix::process::CommandExt;
        if sys::mount_at(mnt).is_some() {
            return Err(format!("{} is already a mount point", mnt.display()).into());
        }
        let out = fs::File::create(log).ctx(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut watch = sys::MountWatch::new()?;
        let mut cmd = Command::new(bin);
        cmd.arg("mount").arg("--config").arg(cfg);
        if let Some(o) = options {
            cmd.arg("-o").arg(o);
        }
        cmd.arg(mnt)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            // Own process group: a Ctrl-C at the terminal reaches only the
            // bench, which then unmounts in order.
            .process_group(0);
        let t0 = Instant::now();
        let child = cmd.spawn().ctx(|| format!("starting {} mount", bin.display()))?;
        let pid = child.id();
        let mut g = MountGuard {
            child: Some(child),
            pid,
            mountpoint: mnt.to_path_buf(),
            fstype: String::new(),
            mount_time: Duration::ZERO,
            log: log.to_path_buf(),
            unmounted: false,
        };
        let mut daemonized = false;
        loop {
            if let Some(m) = watch.read().into_iter().rev().find(|m| m.mountpoint == mnt) {
                g.mount_time = t0.elapsed();
                if m.fstype != "fuse.spoolfs" {
                    eprintln!("warning: {} mounted as {:?}, expected fuse.spoolfs", mnt.display(), m.fstype);
                }
                g.fstype = m.fstype;
                break;
            }
            if !daemonized {
                if let Some(st) = g.child.as_mut().unwrap().try_wait()? {
                    if st.success() {
                        // Forked into the background? Keep waiting for the mount.
                        daemonized = true;
                        g.child = None;
                    } else {
                        g.unmounted = true;
                        return Err(format!(
                            "spoolfs exited ({st}) before {} was mounted; its output:\n    {}",
                            mnt.display(),
                            log_tail(log)
                        )
                        .into());
                    }
                }
            }
            if t0.elapsed() > timeout {
                return Err(format!(
                    "{} not mounted after {:?}; daemon output:\n    {}",
                    mnt.display(),
                    timeout,
                    log_tail(log)
                )
                .into());
            }
            if sys::interrupted() {
                return Err("interrupted".into());
            }
            watch.wait(Duration::from_millis(20));
        }
        if daemonized {
            eprintln!("warning: `spoolfs mount` returned before unmount (daemonized); finding its pid");
            if let Some(p) = sys::pids_with_arg(mnt).into_iter().next() {
                g.pid = p;
            }
        }
        Ok(g)
    }

    /// Unmount and reap the daemon; errors are returned (Drop only logs them).
    pub fn unmount(&mut self) -> Result<()> {
        if self.unmounted {
            return Ok(());
        }
        self.unmounted = true;
        let mnt = self.mountpoint.clone();
        let mut last = String::new();
        for attempt in 0..20 {
            if sys::mount_at(&mnt).is_none() {
                break;
            }
            let out = Command::new("fusermount3").arg("-u").arg(&mnt).output();
            match out {
                Ok(o) if o.status.success() => break,
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_string(),
                Err(e) => last = format!("running fusermount3: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100 * (attempt + 1).min(5)));
        }
        let mut result: Result<()> = Ok(());
        if sys::mount_at(&mnt).is_some() {
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&mnt).status();
            result = Err(format!("fusermount3 -u {} failed ({last}); lazily unmounted", mnt.display()).into());
        }
        // Reap the daemon: it should exit by itself once unmounted.
        let deadline = Instant::now() + Duration::from_secs(30);
        if let Some(child) = self.child.as_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(st)) => {
                        if !st.success() && result.is_ok() {
                            result = Err(format!(
                                "spoolfs exited with {st} after unmount; output:\n    {}",
                                log_tail(&self.log)
                            )
                            .into());
                        }
                        break;
                    }
                    Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                    Ok(None) => {
                        eprintln!("warning: spoolfs (pid {}) still running 30 s after unmount; killing it", child.id());
                        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                        std::thread::sleep(Duration::from_secs(2));
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                    Err(e) => {
                        result = Err(format!("waiting for spoolfs: {e}").into());
                        break;
                    }
                }
            }
        } else {
            // Daemonized: wait for its pid to disappear.
            while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        result
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            eprintln!("warning: {e}");
        }
    }
}

/// Where to find the spoolfs binary when `--spoolfs-bin` is not given:
/// `spoolfs` next to this binary, then `target/release/spoolfs` of the repo
/// (found from this binary's path or from where the bench was built).
pub fn default_bin() -> Option<PathBuf> {
    let mut cands = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            cands.push(dir.join("spoolfs"));
        }
        for anc in exe.ancestors().skip(1) {
            if anc.join("Cargo.toml").is_file() && anc.join("src").is_dir() && anc.join("bench").is_dir() {
                cands.push(anc.join("target/release/spoolfs"));
            }
        }
    }
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    if let Some(repo) = manifest.parent() {
        cands.push(repo.join("target/release/spoolfs"));
    }
    cands.into_iter().find(|p| p.is_file())
}
