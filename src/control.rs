//! Run-time control: usage reports and limit changes without remounting.
//!
//! The daemon listens on a Unix socket in the state directory; the CLI
//! finds it through the virtual xattr `user.spoolfs.control` on the mount
//! root, which it reaches from any path inside the mount. One JSON request
//! line, one JSON answer line. The caller is known from `SO_PEERCRED`: only
//! root and the configured admin uids are served, so nobody else can read
//! any tenant's usage or change a limit. Names that cannot be a mailbox or
//! tenant under the configured layout are refused (`names.rs`).

mod names;
pub mod registry;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::cluster::ClusterReport;
use crate::config::{LayoutConfig, Limit, parse_size};
use crate::fs::SpoolFs;
use crate::quota::{Ledger, Report, Scope, human_size};

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Usage,
    /// FUSE requests served since the mount, by operation.
    Requests,
    /// Cluster mode: every tenant's limit and usage on every host, from etcd.
    ClusterUsage,
    QuotaGet {
        scope: ScopeArg,
    },
    /// `limit`: a size ("5G"), "none" for unlimited.
    QuotaSet {
        scope: ScopeArg,
        limit: String,
    },
    QuotaUnset {
        scope: ScopeArg,
    },
}

#[derive(Serialize, Deserialize, Debug, Clone)]
#[serde(rename_all = "snake_case")]
pub enum ScopeArg {
    Tenant(String),
    Mailbox(String),
}

impl ScopeArg {
    fn scope(&self) -> Scope {
        match self {
            ScopeArg::Tenant(t) => Scope::Tenant(t.clone()),
            ScopeArg::Mailbox(m) => Scope::Mailbox(m.clone()),
        }
    }
}

/// What `spoolfs usage --requests` shows: requests served by operation,
/// and how many of all of them came over FUSE over io_uring.
#[derive(Serialize, Deserialize, Debug)]
pub struct RequestCounts {
    pub requests: std::collections::BTreeMap<String, u64>,
    pub over_io_uring: u64,
    /// Bytes the allocator has handed out and not had back (glibc's
    /// `mallinfo2()`: `uordblks` in the arenas plus `hblkhd` in blocks of
    /// their own; absent elsewhere). Unlike resident memory it
    /// does not count what freed memory each allocator arena keeps: a
    /// leak shows here, arenas filling up do not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_in_use: Option<u64>,
}

/// See [`RequestCounts::heap_in_use`]. `mallinfo2` locks each arena in
/// turn for a moment; it is called only when asked.
fn heap_in_use() -> Option<u64> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's statistics.
        let info = unsafe { libc::mallinfo2() };
        Some((info.uordblks + info.hblkhd) as u64)
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Report(Report),
    Requests(RequestCounts),
    Cluster(ClusterReport),
    Limit {
        limit: Limit,
        used: u64,
    },
    /// A change was made; what it was, in words.
    Done(String),
    Error(String),
}

impl SpoolFs {
    pub fn control_socket_path(&self) -> PathBuf {
        self.config.control.state_dir.join("control.sock")
    }
}

/// Binds the socket and serves it on a thread. Called only with the state
/// directory's lock held (see `mount.rs`), so a socket already there is a
/// dead daemon's, and is replaced.
pub fn serve(fs: Arc<SpoolFs>) -> std::io::Result<PathBuf> {
    let path = fs.control_socket_path();
    // The daemon runs with umask 0: say the mode, or the state directory
    // (limits.json, the socket) would be writable by everyone.
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
        .create(path.parent().expect("in the state dir"))?;
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    // Anyone may connect; refusals are answered, with a reason.
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || accept_loop(&listener, &fs))?;
    Ok(path)
}

/// Anyone may connect, so no client may make the daemon hold much or long.
/// Others than root and the admins are answered at once, without a thread
/// and without reading their request; an admin's request is one line of
/// at most this many bytes, ...
const MAX_REQUEST: u64 = 64 * 1024;
/// ... read and answered within this time, ...
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// ... by at most this many handler threads at once (others are closed).
const MAX_CLIENTS: usize = 16;

fn accept_loop(listener: &UnixListener, fs: &Arc<SpoolFs>) {
    let active = Arc::new(AtomicUsize::new(0));
    let mut refusals = RefusalLog::default();
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, say: do not spin on it.
                warn!("control: accept: {e}");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
        };
        let admins = &fs.config.control.admin_uids;
        let uid = match peer_uid(&stream) {
            Some(u) if u == 0 || admins.contains(&u) => u,
            other => {
                refusals.note(other);
                refuse(&stream);
                continue;
            }
        };
        if active.fetch_add(1, Ordering::AcqRel) >= MAX_CLIENTS {
            active.fetch_sub(1, Ordering::AcqRel);
            continue; // dropped: the client sees the connection closed
        }
        let (fs, done) = (fs.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                handle(stream, &fs, uid);
                done.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::AcqRel);
            warn!("control: cannot start a handler: {e}");
        }
    }
}

/// Refusals are logged, but a flood of them is one line per minute.
#[derive(Default)]
struct RefusalLog {
    last: Option<std::time::Instant>,
    quiet: u64,
}

impl RefusalLog {
    fn note(&mut self, uid: Option<u32>) {
        if self
            .last
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            self.quiet += 1;
            return;
        }
        let who = uid.map_or_else(|| "an unknown uid".to_string(), |u| format!("uid {u}"));
        let more = match self.quiet {
            0 => String::new(),
            n => format!("; {n} more refused since the last such line"),
        };
        warn!("control: refused a connection from {who} (not root or an admin){more}");
        (self.last, self.quiet) = (Some(std::time::Instant::now()), 0);
    }
}

fn refuse(stream: &UnixStream) {
    let answer = Answer::Error(
        "permission denied: only root or a configured admin may use the control interface".into(),
    );
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = send(stream, &answer);
}

fn send(stream: &UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut out = serde_json::to_string(answer).expect("serialisable");
    out.push('\n');
    let mut w = stream;
    w.write_all(out.as_bytes())
}

fn handle(stream: UnixStream, fs: &SpoolFs, uid: u32) {
    let _ = stream.set_read_timeout(Some(CLIENT_TIMEOUT));
    let _ = stream.set_write_timeout(Some(CLIENT_TIMEOUT));
    let mut line = String::new();
    let read = BufReader::new((&stream).take(MAX_REQUEST)).read_line(&mut line);
    if read.is_err() || !line.ends_with('\n') {
        // Timed out, or longer than any request: nothing to answer.
        return;
    }
    let answer = match serde_json::from_str::<Request>(&line) {
        Ok(req) => execute(&fs.ledger, &fs.config.layout, req, uid),
        Err(e) => Answer::Error(format!("bad request: {e}")),
    };
    let _ = send(&stream, &answer);
}

fn execute(ledger: &Ledger, layout: &LayoutConfig, req: Request, uid: u32) -> Answer {
    let checked = |scope: &ScopeArg| names::check(layout, scope).map(|()| scope.scope());
    match req {
        Request::Usage => Answer::Report(ledger.report()),
        Request::Requests => Answer::Requests(RequestCounts {
            requests: crate::metrics::global().request_counts(),
            over_io_uring: crate::metrics::global().over_io_uring(),
            heap_in_use: heap_in_use(),
        }),
        Request::ClusterUsage => match crate::cluster::running().map(|c| c.report()) {
            Some(Ok(report)) => Answer::Cluster(report),
            Some(Err(e)) => Answer::Error(e),
            None => Answer::Error(
                "this spoolfs is not in a cluster (its configuration has no [cluster])".into(),
            ),
        },
        Request::QuotaGet { scope } => match checked(&scope) {
            Ok(s) => Answer::Limit {
                limit: ledger.effective_limit(&s),
                used: ledger.usage(&s),
            },
            Err(e) => Answer::Error(e),
        },
        Request::QuotaSet { scope, limit } => match (checked(&scope), parse_size(&limit)) {
            (Err(e), _) => Answer::Error(e),
            (_, Err(e)) => Answer::Error(format!("limit {limit:?}: {e}")),
            (Ok(s), Ok(l)) => change(ledger, &s, Some(l), uid, names::hint(layout, &scope)),
        },
        // No name check: removing an override is always safe, also one
        // recorded before the layout changed.
        Request::QuotaUnset { scope } => change(ledger, &scope.scope(), None, uid, None),
    }
}

/// `hint`: what to add when the name has no data yet.
fn change(
    ledger: &Ledger,
    scope: &Scope,
    limit: Option<Limit>,
    uid: u32,
    hint: Option<String>,
) -> Answer {
    // Provisioning before the first delivery is normal: say so, in case
    // the name was mistyped.
    let empty = ledger.usage(scope) == 0;
    // In a cluster a tenant's limit is one for every host: it lives in etcd.
    let set = match (scope, crate::cluster::running()) {
        (Scope::Tenant(tenant), Some(cluster)) => cluster.set_limit(tenant, limit),
        _ => ledger.set_limit(scope, limit),
    };
    if let Err(e) = set {
        return Answer::Error(e);
    }
    let what = match limit {
        Some(limit) => format!("limit set to {} for {scope}", limit_words(limit)),
        None => format!(
            "run-time limit removed for {scope}; the configured limit applies: {}",
            limit_words(ledger.effective_limit(scope))
        ),
    };
    info!("{what} by uid {uid}");
    let note = if empty {
        format!(
            " (it has no data yet: provisioned, the limit applies from its first delivery; \
             check the name if you expected data{})",
            hint.map(|h| format!("; {h}")).unwrap_or_default()
        )
    } else {
        format!(" (used {})", human_size(ledger.usage(scope)))
    };
    Answer::Done(what + &note)
}

fn limit_words(limit: Limit) -> String {
    limit.map_or_else(|| "none (unlimited)".to_string(), human_size)
}

fn peer_uid(stream: &UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    let r = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (r == 0).then_some(cred.uid)
}

/// Client side: asks the daemon serving the mount `path` is in.
pub fn ask(path: &Path, req: &Request) -> Result<Answer, String> {
    let root = mount_root(path)?;
    // Any filesystem can carry the xattr, and a crashed daemon's registry
    // entry can name a device number another filesystem has since: only a
    // spoolfs mount is asked about.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    if let Err(found) = crate::mount::mountpoint::spoolfs_at(&mountinfo, &root) {
        let found = found.map_or_else(String::new, |f| format!(" ({f})"));
        return Err(format!(
            "{}: not inside a spoolfs mount{found}",
            path.display()
        ));
    }
    let socket = match registry::lookup(&root) {
        Some(socket) => socket,
        None => socket_of(&root).map_err(|e| format!("{}: {e}", path.display()))?,
    };
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        format!(
            "{}: cannot reach the spoolfs daemon at {}: {e}",
            root.display(),
            socket.display()
        )
    })?;
    // The socket's path may come from an xattr on any filesystem the path
    // leads to: only a daemon running as root, or as the caller, is asked.
    let me = unsafe { libc::geteuid() };
    match peer_uid(&stream) {
        Some(u) if u == 0 || u == me => {}
        u => {
            let who = u.map_or_else(|| "an unknown uid".to_string(), |u| format!("uid {u}"));
            return Err(format!(
                "{}: the socket {} is served by {who}, not by root: not a spoolfs daemon, refusing it",
                root.display(),
                socket.display()
            ));
        }
    }
    let mut line = serde_json::to_string(req).expect("serialisable");
    line.push('\n');
    // A refusal is answered without reading the request, and may close the
    // socket before it is written: the answer is what counts.
    let wrote = stream.write_all(line.as_bytes());
    let mut answer = String::new();
    let read = BufReader::new(&stream).read_line(&mut answer);
    if let (Err(e), true) = (wrote, answer.is_empty()) {
        return Err(e.to_string());
    }
    read.map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the daemon: {e}"))
}

/// The root of the mount `path` is in: walks up while the parent is on
/// the same device.
fn mount_root(path: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::MetadataExt;
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev());
    let mut here = std::fs::canonicalize(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mine = dev(&here).map_err(|e| format!("{}: {e}", path.display()))?;
    while let Some(parent) = here.parent() {
        if dev(parent).ok() != Some(mine) {
            break;
        }
        here = parent.to_path_buf();
    }
    Ok(here)
}

fn socket_of(root: &Path) -> Result<PathBuf, String> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path = std::ffi::CString::new(root.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let name = std::ffi::CString::new(crate::fs::CONTROL_XATTR).expect("constant");
    let mut buf = vec![0u8; 4096];
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return Err(format!(
            "not inside a spoolfs mount (no {} on its mount root {}: {e})",
            crate::fs::CONTROL_XATTR,
            root.display()
        ));
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}
