//! Small wrappers over the OS: errors with context, caches, mounts, machine facts.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

/// Attach a human context ("creating /x/y") to an error.
pub trait Ctx<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T, E: std::fmt::Display> Ctx<T> for std::result::Result<T, E> {
    fn ctx(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| format!("{}: {}", what(), e).into())
    }
}

// ---------------------------------------------------------------- interrupts

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag; workloads stop at the next check and every
/// guard (mounts, temp dirs) cleans up on the way out.
pub fn install_signal_handlers() {
    unsafe {
        libc::signal(libc::SIGINT, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t);
    }
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

pub fn check_interrupt() -> Result<()> {
    if interrupted() {
        Err("interrupted".into())
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------- caches

pub fn sync() {
    unsafe { libc::sync() };
}

static DROP_WARNED: AtomicBool = AtomicBool::new(false);

/// `sync; echo LEVEL > /proc/sys/vm/drop_caches`. Returns false (and warns
/// once) when that is not possible, e.g. when not root.
pub fn drop_caches(level: u8) -> bool {
    sync();
    match fs::write("/proc/sys/vm/drop_caches", format!("{level}\n")) {
        Ok(()) => true,
        Err(e) => {
            if !DROP_WARNED.swap(true, Ordering::SeqCst) {
                eprintln!("warning: cannot drop caches ({e}); \"cold\" results are NOT cold");
            }
            false
        }
    }
}

pub fn drop_caches_works() -> bool {
    !DROP_WARNED.load(Ordering::SeqCst)
}

// ---------------------------------------------------------------- paths

pub fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path with NUL byte")
}

// ---------------------------------------------------------------- mounts

#[derive(Clone, Debug, Serialize)]
pub struct MountEntry {
    pub source: String,
    pub mountpoint: PathBuf,
    pub fstype: String,
}

/// Undo the octal escapes (`\040` for space etc.) of /proc/mounts fields.
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                out.push((oct[0] - b'0') * 64 + (oct[1] - b'0') * 8 + (oct[2] - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

pub fn parse_mounts(text: &str) -> Vec<MountEntry> {
    use std::os::unix::ffi::OsStringExt;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let source = f.next()?;
            let mnt = f.next()?;
            let fstype = f.next()?;
            Some(MountEntry {
                source: String::from_utf8_lossy(&unescape(source)).into_owned(),
                mountpoint: PathBuf::from(std::ffi::OsString::from_vec(unescape(mnt))),
                fstype: fstype.to_string(),
            })
        })
        .collect()
}

pub fn mounts() -> Vec<MountEntry> {
    fs::read_to_string("/proc/self/mounts").map(|t| parse_mounts(&t)).unwrap_or_default()
}

/// The mount entry (last mounted wins) whose mount point is exactly `p`.
pub fn mount_at(p: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mountpoint == p)
}

/// The mount that holds `p` (longest mount point prefix).
pub fn mount_of(p: &Path) -> Option<MountEntry> {
    mounts()
        .into_iter()
        .rev()
        .filter(|m| p.starts_with(&m.mountpoint))
        .max_by_key(|m| m.mountpoint.as_os_str().len())
}

/// Any mount at or below `p`?
pub fn has_mount_below(p: &Path) -> bool {
    mounts().iter().any(|m| m.mountpoint.starts_with(p))
}

/// Watches /proc/self/mounts: `wait` returns when the mount table changed
/// (POLLPRI) or after `timeout`, whichever is first.
pub struct MountWatch {
    file: fs::File,
}

impl MountWatch {
    pub fn new() -> Result<Self> {
        let file = fs::File::open("/proc/self/mounts").ctx(|| "opening /proc/self/mounts".into())?;
        Ok(MountWatch { file })
    }

    pub fn read(&mut self) -> Vec<MountEntry> {
        use std::io::Seek;
        let mut s = String::new();
        if self.file.seek(io::SeekFrom::Start(0)).is_ok() && self.file.read_to_string(&mut s).is_ok() {
            parse_mounts(&s)
        } else {
            mounts()
        }
    }

    pub fn wait(&mut self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut pfd = libc::pollfd { fd: self.file.as_raw_fd(), events: libc::POLLPRI, revents: 0 };
        unsafe { libc::poll(&mut pfd, 1, timeout.as_millis().max(1) as libc::c_int) };
    }
}

// ---------------------------------------------------------------- processes

/// Peak resident set size (VmHWM) of `pid`, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Pids whose command line mentions `needle` (used when a daemon forked away).
pub fn pids_with_arg(needle: &Path) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir("/proc") else { return out };
    let needle = needle.as_os_str().as_bytes();
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        if let Ok(cmd) = fs::read(format!("/proc/{pid}/cmdline")) {
            if cmd.split(|&b| b == 0).any(|a| a == needle) {
                out.push(pid);
            }
        }
    }
    out
}

// ---------------------------------------------------------------- machine

#[derive(Clone, Debug, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub kernel: String,
    pub cpu: String,
    pub mem_total_mib: u64,
    pub dir: PathBuf,
    /// Name from statfs(2) f_type.
    pub dir_fs: String,
    pub dir_fs_magic: String,
    pub dir_mount_source: String,
    pub dir_mount_fstype: String,
}

fn fs_magic_name(m: u64) -> &'static str {
    match m {
        0xEF53 => "ext2/3/4",
        0x5846_5342 => "xfs",
        0x9123_683E => "btrfs",
        0x0102_1994 => "tmpfs",
        0x6573_5546 => "fuse",
        0x794C_7630 => "overlayfs",
        0x2FC1_2FC1 => "zfs",
        0x6969 => "nfs",
        0xF2F5_2010 => "f2fs",
        0x5346_544E => "ntfs",
        0x4D44 => "vfat",
        0x0102_1997 => "9p",
        0xFF53_4D42 => "cifs",
        0x8584_58F6 => "ramfs",
        _ => "unknown",
    }
}

pub fn statfs_type(p: &Path) -> (String, u64) {
    let c = cstr(p);
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return ("?".into(), 0);
    }
    let magic = st.f_type as u64;
    (fs_magic_name(magic).to_string(), magic)
}

pub fn machine(dir: &Path) -> Machine {
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    unsafe { libc::uname(&mut uts) };
    let field = |f: &[libc::c_char]| unsafe { std::ffi::CStr::from_ptr(f.as_ptr()) }.to_string_lossy().into_owned();
    let kernel = format!("{} {} {}", field(&uts.sysname), field(&uts.release), field(&uts.machine));
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem_total_mib = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.split_whitespace().nth(1)).and_then(|v| v.parse::<u64>().ok()))
        .map(|k| k / 1024)
        .unwrap_or(0);
    let (dir_fs, magic) = statfs_type(dir);
    let m = mount_of(dir);
    Machine {
        nproc: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        kernel,
        cpu,
        mem_total_mib,
        dir: dir.to_path_buf(),
        dir_fs,
        dir_fs_magic: format!("{magic:#x}"),
        dir_mount_source: m.as_ref().map(|m| m.source.clone()).unwrap_or_default(),
        dir_mount_fstype: m.map(|m| m.fstype).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------- temp dirs

/// A directory removed (recursively) when dropped — unless something is
/// still mounted inside it, in which case it is left alone and reported.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn create(path: PathBuf) -> Result<Self> {
        fs::create_dir(&path).ctx(|| format!("creating {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

/// `rm -rf`, refusing to descend into a mount point below `p`.
pub fn remove_tree(p: &Path) {
    if !p.exists() {
        return;
    }
    if has_mount_below(p) {
        eprintln!("warning: not removing {}: something is still mounted below it", p.display());
        return;
    }
    if let Err(e) = fs::remove_dir_all(p) {
        eprintln!("warning: removing {}: {e}", p.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_escaped_mountpoints() {
        let m = parse_mounts("/dev/vda / ext4 rw 0 0\nspoolfs /tmp/a\\040b fuse.spoolfs rw 0 0\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].mountpoint, PathBuf::from("/tmp/a b"));
        assert_eq!(m[1].fstype, "fuse.spoolfs");
    }
}
