//! `spoolfs mount`: validate, rebuild usage, serve the control socket,
//! mount, and unmount cleanly on SIGTERM/SIGINT or `fusermount3 -u`.

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
use crate::fuse::FuseAdapter;
use crate::invalidate::DirInvalidator;
use crate::quota::Ledger;
use crate::{backing, control, scan};

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
    let mut config = load(&args)?;
    apply_options(&mut config, args.options.as_deref());
    config
        .check_filesystem(Some(&args.mountpoint))
        .map_err(|e| e.to_string())?;
    // Objects are created with exactly the mode the caller asked for.
    unsafe { libc::umask(0) };
    let fd_limit = backing::raise_fd_limit();
    let budget = config.mount.held_descriptors.unwrap_or(fd_limit / 2);
    crate::fs::set_descriptor_budget(budget as usize);
    let ledger = Arc::new(Ledger::new(&config)?);
    let fs = Arc::new(SpoolFs::new(config, ledger)?);
    let scanned = scan::rebuild_usage(&fs, scan_threads());
    crate::metrics::start(&fs, &scanned)?;
    let socket = control::serve(fs.clone()).map_err(|e| format!("control socket: {e}"))?;
    let allow_other = fs.config.mount.allow_other;
    let dev = kernel_mount(&args.mountpoint, allow_other)
        .map_err(|e| format!("mount {}: {e}", args.mountpoint.display()))?;
    let acl = if allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    let notifier = Arc::new(OnceLock::new());
    let invalidator = DirInvalidator::start(notifier.clone());
    let session = fuser::Session::from_fd(
        FuseAdapter::new(fs.clone(), invalidator),
        dev,
        acl,
        session_config(&fs.config),
    )
    .map_err(|e| format!("FUSE handshake: {e}"))?;
    let _ = notifier.set(session.notifier());
    spawn_signal_thread(args.mountpoint.clone());
    info!(
        "mounted {} ({} partitions)",
        args.mountpoint.display(),
        fs.partitions.len()
    );
    crate::sdnotify::ready(&args.mountpoint);
    let result = match session.run() {
        // Unmounted while requests were in flight, the kernel ends the
        // connection as aborted rather than gone; both are a clean end.
        Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
        other => other.map_err(|e| format!("session: {e}")),
    };
    let _ = std::fs::remove_file(socket);
    info!("unmounted {}", args.mountpoint.display());
    result
}

fn load(args: &MountArgs) -> Result<Config, String> {
    if let Some(path) = &args.config {
        return Config::load(path).map_err(|e| e.to_string());
    }
    let data_dir = std::path::absolute(&args.data_dir).map_err(|e| e.to_string())?;
    let config = Config::builtin(&data_dir);
    for p in &config.partitions {
        std::fs::create_dir_all(&p.path).map_err(|e| format!("{}: {e}", p.path.display()))?;
    }
    info!("no --config: built-in default over {}", data_dir.display());
    Ok(config)
}

/// fstab-style `-o` options that change behaviour; the rest (defaults,
/// rw, nofail, _netdev, x-systemd.*) are for mount(8) and ignored.
fn apply_options(config: &mut Config, options: Option<&str>) {
    for opt in options.unwrap_or("").split(',').map(str::trim) {
        match opt {
            "allow_other" => config.mount.allow_other = true,
            "noallow_other" => config.mount.allow_other = false,
            "nopassthrough" => config.mount.passthrough = false,
            _ => {}
        }
    }
}

fn session_config(config: &Config) -> fuser::Config {
    let mut c = fuser::Config::default();
    c.n_threads = Some(config.mount.threads.max(1));
    c.clone_fd = true;
    c
}

/// Mounts `/dev/fuse` ourselves: fuser's own mount names the type plain
/// `fuse`, while operators and fstab expect `fuse.spoolfs`.
/// `default_permissions`: the kernel checks permissions against the
/// caller's uid and all its groups, exactly as for ext4.
fn kernel_mount(mountpoint: &Path, allow_other: bool) -> std::io::Result<OwnedFd> {
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
            libc::MS_NODEV,
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
        info!("signal {sig}: unmounting");
        if let Err(e) = unmount(&mountpoint) {
            log::error!("unmount: {e}");
        }
    });
}
