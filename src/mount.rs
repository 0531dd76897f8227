//! `spoolfs mount`, in an order that makes a failed start harmless:
//! parse the options, check the mount point exists, take the partition and
//! state directory locks (one daemon per spool), check the mount point is
//! not already mounted, *then* rebuild usage, mount, and only once mounted
//! bind the control socket. Unmounts cleanly on SIGTERM/SIGINT or
//! `fusermount3 -u`. A start that fails removes the directories it created
//! and never touches a running daemon's socket (it cannot get that far
//! without the state directory's lock).

mod created;
pub mod mountpoint;
pub mod options;
mod transport;

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use fuser::SessionACL;
use log::info;

use crate::config::Config;
use crate::fs::SpoolFs;
use crate::fuse::uring::{Offer, Rings};
use crate::fuse::{FuseAdapter, Handler};
use crate::invalidate::DirInvalidator;
use crate::lock::{DirLock, LockError, lock_dir, lock_tree};
use crate::quota::Ledger;
use crate::{backing, control, scan};
use created::Created;
use options::MountOptions;

pub struct MountArgs {
    pub config: Option<PathBuf>,
    pub data_dir: PathBuf,
    pub options: Option<String>,
    pub mountpoint: PathBuf,
}

pub fn run(args: MountArgs) -> Result<(), String> {
    // Before any thread exists, so that every thread inherits the mask and
    // only the signal thread below ever sees SIGTERM/SIGINT.
    block_stop_signals();
    bound_allocator_arenas();
    let options = options::parse(args.options.as_deref())?;
    mountpoint::check_usable(&args.mountpoint)?;
    let mut created = Created::default();
    let mut config = load(&args, &mut created)?;
    transport::apply_environment(&mut config)?;
    apply_options(&mut config, &options);
    config
        .check_filesystem(Some(&args.mountpoint))
        .map_err(|e| e.to_string())?;
    let offer = transport::offer(&config)?;
    let _locks = take_locks(&config, &mut created)?;
    mountpoint::check_not_mounted(&args.mountpoint, options.overmount)?;
    // Objects are created with exactly the mode the caller asked for.
    unsafe { libc::umask(0) };
    let fd_limit = backing::raise_fd_limit();
    let budget = config.mount.held_descriptors.unwrap_or(fd_limit / 2);
    crate::fs::set_descriptor_budget(budget as usize);
    let ledger = Arc::new(Ledger::new(&config)?);
    let fs = Arc::new(SpoolFs::new(config, ledger)?);
    let scanned = scan::rebuild_usage(&fs, scan_threads());
    // Registers the usage just rebuilt before any write is served.
    crate::cluster::start_if_configured(&fs.config, &fs.ledger)?;
    crate::metrics::start(&fs, &scanned)?;
    let allow_other = fs.config.mount.allow_other;
    let dev = kernel_mount(&args.mountpoint, allow_other, options.flags)
        .map_err(|e| format!("mount {}: {e}", args.mountpoint.display()))?;
    let started = serve(&fs, dev, allow_other, &offer);
    let (session, socket, rings) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = unmount(&args.mountpoint);
            return Err(e);
        }
    };
    created.keep();
    let registered = register_socket(&args.mountpoint, &socket);
    spawn_signal_thread(args.mountpoint.clone());
    info!(
        "mounted {} ({} partitions{})",
        args.mountpoint.display(),
        fs.partitions.len(),
        if options.flags & libc::MS_RDONLY != 0 {
            ", read-only"
        } else {
            ""
        }
    );
    crate::sdnotify::ready(&args.mountpoint);
    let result = match session.run() {
        // Unmounted while requests were in flight, the kernel ends the
        // connection as aborted rather than gone; both are a clean end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        other => other.map_err(|e| format!("session: {e}")),
    };
    crate::cluster::stop_if_running();
    // Still ours: the state directory's lock is held until we return.
    if let Some(entry) = registered {
        control::registry::unregister(&entry, &socket);
    }
    let _ = std::fs::remove_file(socket);
    if let Some(rings) = rings {
        rings.wait(std::time::Duration::from_secs(2));
    }
    info!("unmounted {}", args.mountpoint.display());
    result
}

/// Records the control socket under the mount's device number, so the CLI
/// finds it without an xattr (see `control/registry.rs`). Not being able
/// to is no reason to stop serving: the xattr still says it, unless
/// `[mount] xattrs = false`, which the warning then names.
fn register_socket(mountpoint: &Path, socket: &Path) -> Option<PathBuf> {
    let device = std::fs::canonicalize(mountpoint)
        .ok()
        .and_then(|canonical| {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            mountpoint::device_at(&mountinfo, &canonical)
        });
    let Some(device) = device else {
        log::warn!(
            "cannot find this mount in /proc/self/mountinfo: the CLI finds the control socket only through the mount root's xattr"
        );
        return None;
    };
    match control::registry::register(&device, socket) {
        Ok(entry) => Some(entry),
        Err(e) => {
            log::warn!(
                "cannot record the control socket in /run/spoolfs ({e}): the CLI finds it only through the mount root's xattr, which [mount] xattrs = false turns off"
            );
            None
        }
    }
}

type Served = (fuser::Session<FuseAdapter>, PathBuf, Option<Rings>);

/// After the kernel mount: the control socket, the FUSE session (INIT),
/// then the ring queues if they are to be used.
fn serve(
    fs: &Arc<SpoolFs>,
    dev: OwnedFd,
    allow_other: bool,
    offer: &Arc<Offer>,
) -> Result<Served, String> {
    let socket = control::serve(fs.clone()).map_err(|e| format!("control socket: {e}"))?;
    let acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let notifier = Arc::new(OnceLock::new());
    let invalidator = DirInvalidator::start(notifier.clone());
    let handler = Arc::new(Handler::new(fs.clone(), invalidator));
    let ring_dev = dev.try_clone().map_err(|e| format!("dup /dev/fuse: {e}"));
    let session = ring_dev.and_then(|ring_dev| {
        let adapter = FuseAdapter::new(handler.clone(), offer.clone());
        let config = session_config(&fs.config, offer.wanted());
        let session = fuser::Session::from_fd(adapter, dev, acl, config)
            .map_err(|e| format!("FUSE handshake: {e}"))?;
        Ok((session, ring_dev))
    });
    // The rings start before fuser's loop runs, so that no request is
    // served over /dev/fuse once the ring is ready.
    let started = session.and_then(|(session, ring_dev)| {
        let rings = transport::start(&fs.config, offer, handler, ring_dev)?;
        Ok((session, rings))
    });
    let (session, rings) = match started {
        Ok(started) => started,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    let _ = notifier.set(session.notifier());
    Ok((session, socket, rings))
}

fn load(args: &MountArgs, created: &mut Created) -> Result<Config, String> {
    if let Some(path) = &args.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let data_dir = std::path::absolute(&args.data_dir).map_err(|e| e.to_string())?;
    let config = Config::builtin(&data_dir);
    for p in &config.partitions {
        created.dir_all(&p.path, 0o755)?;
    }
    info!("no --config: built-in default over {}", data_dir.display());
    Ok(config)
}

/// One daemon per partition and per state directory (see `lock.rs`):
/// refused before anything is scanned, naming the holder.
fn take_locks(config: &Config, created: &mut Created) -> Result<Vec<DirLock>, String> {
    let state_dir = &config.control.state_dir;
    created.dir_all(state_dir, 0o755)?;
    let own_state = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.clone());
    let mut locks = Vec::new();
    for p in &config.partitions {
        let what = format!("partition {} ({})", p.name, p.path.display());
        let tree = lock_tree(&p.path, &own_state);
        locks.extend(tree.map_err(|(at, e)| refusal(&what, &at, &p.path, e))?);
    }
    let what = format!("state_dir {}", state_dir.display());
    let lock =
        lock_dir(state_dir, libc::LOCK_EX).map_err(|e| refusal(&what, &own_state, state_dir, e))?;
    locks.push(lock);
    Ok(locks)
}

/// `at`: the directory whose lock was refused, `path` or an ancestor.
fn refusal(what: &str, at: &Path, path: &Path, e: LockError) -> String {
    let by = |pid: Option<u32>| match pid {
        Some(pid) => format!("{} (PID {pid})", process_name(pid)),
        None => "another spoolfs daemon".to_string(),
    };
    let is_path = std::fs::canonicalize(path).map_or(true, |p| p == at);
    let relation = match &e {
        LockError::Held { shared: true, .. } => "contains a partition served by".to_string(),
        LockError::Held { .. } if !is_path => {
            format!("is inside {}, a partition served by", at.display())
        }
        _ => "is already served by".to_string(),
    };
    match e {
        LockError::Held { pid, .. } => format!(
            "{what} {relation} {}; one spool is served by one daemon: stop that one first",
            by(pid)
        ),
        LockError::Io(e) => format!("{what}: cannot lock {}: {e}", at.display()),
    }
}

fn process_name(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim().to_string())
        .unwrap_or_else(|_| "another process".to_string())
}

/// glibc gives each thread that allocates under contention an arena of
/// its own, up to eight per CPU, and keeps what each has touched: with
/// request threads on two transports, which thread first serves what is
/// up to the scheduler, and resident memory stepped up by megabytes at
/// random long after start. One arena per CPU bounds it; the daemon's
/// allocations are small and short (real Cyrus over io_uring, A/B against
/// glibc's default in the same alternating rounds: delivery 0.65 vs 0.73
/// and 0.77 vs 0.78 of native in two runs, fetch 0.93/0.92 and 0.91/0.91,
/// within this machine's noise).
fn bound_allocator_arenas() {
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    // SAFETY: mallopt only sets a tunable; called before any thread exists.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, cpus.max(2) as libc::c_int) };
}

/// What `-o` says about spoolfs itself; the kernel flags go to mount(2).
fn apply_options(config: &mut Config, options: &MountOptions) {
    if let Some(allow_other) = options.allow_other {
        config.mount.allow_other = allow_other;
    }
    if let Some(passthrough) = options.passthrough {
        config.mount.passthrough = passthrough;
    }
    if let Some(xattrs) = options.xattrs {
        config.mount.xattrs = xattrs;
    }
    if let Some(open_handles) = options.open_handles {
        config.mount.open_handles = open_handles;
    }
    if let Some(mode) = options.io_uring {
        config.mount.io_uring = mode;
    }
    if let Some(handoff) = options.handoff {
        config.mount.handoff = handoff;
    }
}

/// fuser's `/dev/fuse` loop: `[mount] threads` threads, or one when the
/// ring will carry the requests and `/dev/fuse` only FORGET and INTERRUPT
/// (idle threads would still each keep an allocator arena).
fn session_config(config: &Config, ring: bool) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.n_threads = Some(if ring { 1 } else { config.mount.threads.max(1) });
    c.clone_fd = true;
    c
}

/// Mounts `/dev/fuse` ourselves: fuser's own mount names the type plain
/// `fuse`, while operators and fstab expect `fuse.spoolfs`.
/// `default_permissions`: the kernel checks permissions against the
/// caller's uid and all its groups, exactly as for ext4. `flags`: the
/// generic `-o` options (`MS_RDONLY` makes every write `EROFS` in the
/// kernel, before it reaches the daemon or the ledger).
fn kernel_mount(
    mountpoint: &Path,
    allow_other: bool,
    flags: libc::c_ulong,
) -> std::io::Result<OwnedFd> {
    let dev = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")?;
    let root_mode = std::fs::metadata(mountpoint)?.mode() & libc::S_IFMT;
    let mut opts = format!(
        "fd={},rootmode={root_mode:o},user_id={},group_id={},default_permissions",
        dev.as_raw_fd(),
        unsafe { libc::getuid() },
        unsafe { libc::getgid() }
    );
    if allow_other {
        opts.push_str(",allow_other");
    }
    let c = |s: &[u8]| CString::new(s).expect("no NUL");
    let target = c(mountpoint.as_os_str().as_bytes());
    let (source, fstype, data) = (c(b"spoolfs"), c(b"fuse.spoolfs"), c(opts.as_bytes()));
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(dev))
}

/// Detaches the mount: new accesses fail at once, requests in flight
/// finish, and the session ends when the kernel lets go of the device.
pub fn unmount(mountpoint: &Path) -> std::io::Result<()> {
    let target = CString::new(mountpoint.as_os_str().as_bytes())?;
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn scan_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get() * 4)
        .unwrap_or(8)
        .min(32)
}

fn stop_signals() -> libc::sigset_t {
    unsafe {
        let mut set = std::mem::zeroed::<libc::sigset_t>();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        set
    }
}

fn block_stop_signals() {
    let set = stop_signals();
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits for SIGTERM/SIGINT and unmounts; the session loop then ends.
fn spawn_signal_thread(mountpoint: PathBuf) {
    std::thread::spawn(move || {
        let set = stop_signals();
        let mut sig = 0;
        unsafe { libc::sigwait(&set, &mut sig) };
        info!("{}: unmounting", signal_name(sig));
        if let Err(e) = unmount(&mountpoint) {
            log::error!("unmount: {e}");
        }
    });
}

fn signal_name(sig: libc::c_int) -> String {
    match sig {
        libc::SIGTERM => "SIGTERM".to_string(),
        libc::SIGINT => "SIGINT".to_string(),
        other => format!("signal {other}"),
    }
}
