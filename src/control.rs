//! Run-time control: usage reports and limit changes without remounting.
//!
//! The daemon listens on a Unix socket in the state directory; the CLI
//! finds it through the virtual xattr `user.spoolfs.control` on the mount
//! root. One JSON request line, one JSON answer line. The caller is known
//! from `SO_PEERCRED`: only root and the configured admin uids are served,
//! so nobody else can read any tenant's usage or change a limit.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{info, warn};
use serde::{Deserialize, Serialize};

use crate::config::{Limit, parse_size};
use crate::fs::SpoolFs;
use crate::quota::{Ledger, Report, Scope};

#[derive(Serialize, Deserialize, Debug)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Usage,
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

#[derive(Serialize, Deserialize, Debug)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Report(Report),
    Limit { limit: Limit, used: u64 },
    Ok,
    Error(String),
}

impl SpoolFs {
    pub fn control_socket_path(&self) -> PathBuf {
        self.config.control.state_dir.join("control.sock")
    }
}

/// Binds the socket (replacing a stale one) and serves it on a thread.
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
    let admins = fs.config.control.admin_uids.clone();
    let ledger = fs.ledger.clone();
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let (ledger, admins) = (ledger.clone(), admins.clone());
                std::thread::spawn(move || handle(stream, &ledger, &admins));
            }
        })?;
    Ok(path)
}

fn handle(stream: UnixStream, ledger: &Ledger, admins: &[u32]) {
    let uid = peer_uid(&stream);
    let mut line = String::new();
    if BufReader::new(&stream).read_line(&mut line).is_err() {
        return;
    }
    let answer = match (uid, serde_json::from_str::<Request>(&line)) {
        (Some(u), Ok(req)) if u == 0 || admins.contains(&u) => execute(ledger, req, u),
        (_, Err(e)) => Answer::Error(format!("bad request: {e}")),
        (u, Ok(_)) => {
            warn!("control: refused request from uid {u:?} (not root or an admin)");
            Answer::Error(
                "permission denied: only root or a configured admin may use the control interface"
                    .into(),
            )
        }
    };
    let mut out = serde_json::to_string(&answer).expect("serialisable");
    out.push('\n');
    let _ = (&stream).write_all(out.as_bytes());
}

fn execute(ledger: &Ledger, req: Request, uid: u32) -> Answer {
    match req {
        Request::Usage => Answer::Report(ledger.report()),
        Request::QuotaGet { scope } => {
            let s = scope.scope();
            Answer::Limit {
                limit: ledger.effective_limit(&s),
                used: ledger.usage(&s),
            }
        }
        Request::QuotaSet { scope, limit } => match parse_size(&limit) {
            Ok(l) => change(ledger, &scope, Some(l), uid),
            Err(e) => Answer::Error(format!("limit {limit:?}: {e}")),
        },
        Request::QuotaUnset { scope } => change(ledger, &scope, None, uid),
    }
}

fn change(ledger: &Ledger, scope: &ScopeArg, limit: Option<Limit>, uid: u32) -> Answer {
    match ledger.set_limit(&scope.scope(), limit) {
        Ok(()) => {
            info!("control: uid {uid} set {scope:?} limit to {limit:?}");
            Answer::Ok
        }
        Err(e) => Answer::Error(e),
    }
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

/// Client side: asks the daemon mounted at `mountpoint`.
pub fn ask(mountpoint: &Path, req: &Request) -> Result<Answer, String> {
    let socket = socket_of(mountpoint)?;
    let mut stream = UnixStream::connect(&socket).map_err(|e| {
        format!(
            "{}: cannot reach the spoolfs daemon at {}: {e}",
            mountpoint.display(),
            socket.display()
        )
    })?;
    let mut line = serde_json::to_string(req).expect("serialisable");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(&stream)
        .read_line(&mut answer)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|e| format!("bad answer from the daemon: {e}"))
}

fn socket_of(mountpoint: &Path) -> Result<PathBuf, String> {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let path =
        std::ffi::CString::new(mountpoint.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
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
            "{}: not a spoolfs mount ({e})",
            mountpoint.display()
        ));
    }
    buf.truncate(n as usize);
    Ok(PathBuf::from(std::ffi::OsString::from_vec(buf)))
}
