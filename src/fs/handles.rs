//! The descriptors behind the kernel's file handles.
//!
//! Two ways a file gets one:
//! - **Per open** (`[mount] open_handles = true`): every OPEN and CREATE
//!   gets its own backing descriptor under a fresh handle number, closed at
//!   RELEASE. Read-only opens of large files may be kernel passthrough.
//! - **Per file** (`open_handles = false`): the daemon answers the first
//!   OPEN `ENOSYS`, and from then on the kernel opens files without asking
//!   and sends no RELEASE; its requests carry handle 0 (`NO_HANDLE`). The
//!   daemon keeps one read-write descriptor per file, opened at first use
//!   and closed when the kernel forgets the inode (or to stay within
//!   `SHARED_MAX`). That saves two round trips per `open(2)`/`close(2)`
//!   pair, which mail daemons do many times per message (Cyrus reopens its
//!   index, cache and header files; see the README's request table), at
//!   the cost of read passthrough. CREATE still gets a handle of its own.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;

use super::SpoolFs;
use super::file::OpenFile;
use super::inode::{Key, Node};
use crate::backing;
use crate::error::{FsError, FsResult};

/// The handle the kernel sends for a file it opened without an OPEN.
pub const NO_HANDLE: u64 = 0;

/// Per-file descriptors kept at most; beyond it, those no request is using
/// are closed (and reopened at their next use). Lower where the mount's
/// descriptor budget is (`set_budget`).
const SHARED_MAX: usize = 4096;
static SHARED_CAP: AtomicUsize = AtomicUsize::new(SHARED_MAX);

/// The descriptor budget of file nodes (`[mount] held_descriptors`)
/// bounds the per-file descriptors too.
pub fn set_budget(n: usize) {
    SHARED_CAP.store(n.clamp(16, SHARED_MAX), Ordering::Relaxed);
}

#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    /// Per open: by the number the kernel holds.
    files: DashMap<u64, Arc<OpenFile>>,
    /// Per file: by inode number.
    shared: DashMap<u64, Arc<OpenFile>>,
}

impl Handles {
    pub(super) fn add_file(&self, f: OpenFile) -> u64 {
        // Starts at 1: 0 is `NO_HANDLE`.
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.files.insert(fh, Arc::new(f));
        fh
    }

    pub(super) fn remove_file(&self, fh: u64) -> Option<Arc<OpenFile>> {
        self.files.remove(&fh).map(|(_, f)| f)
    }

    fn file(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.files
            .get(&fh)
            .map(|f| f.clone())
            .ok_or(FsError::BadHandle)
    }

    /// Closes the per-file descriptor of a forgotten inode.
    pub(super) fn forget(&self, ino: u64) {
        self.shared.remove(&ino);
    }

    /// Keeps at most `SHARED_CAP` per-file descriptors, closing first
    /// those no request holds. A file whose descriptor is closed while the
    /// kernel still has it open is reopened at its next request.
    fn trim_shared(&self) {
        let cap = SHARED_CAP.load(Ordering::Relaxed);
        if self.shared.len() <= cap {
            return;
        }
        let mut excess = self.shared.len() - cap * 3 / 4;
        self.shared.retain(|_, f| {
            if excess == 0 || Arc::strong_count(f) > 1 || f.pinned.load(Ordering::Relaxed) {
                return true;
            }
            excess -= 1;
            false
        });
    }
}

impl SpoolFs {
    /// The open file a request names: its own handle, or for `NO_HANDLE`
    /// the inode's per-file descriptor, opened if need be.
    pub(super) fn open_file(&self, ino: u64, fh: u64) -> FsResult<Arc<OpenFile>> {
        if fh != NO_HANDLE {
            return self.handles.file(fh);
        }
        if let Some(f) = self.handles.shared.get(&ino) {
            return Ok(f.clone());
        }
        let opened = Arc::new(self.open_shared(ino)?);
        let kept = self.handles.shared.entry(ino).or_insert(opened).clone();
        self.handles.trim_shared();
        Ok(kept)
    }

    /// The open file a write goes through. A per-file descriptor opened
    /// read-only (the partition was read-only then) is reopened read-write,
    /// and the write fails as that open does.
    pub(super) fn open_file_for_write(&self, ino: u64, fh: u64) -> FsResult<Arc<OpenFile>> {
        let f = self.open_file(ino, fh)?;
        if fh != NO_HANDLE || f.writable() {
            return Ok(f);
        }
        let file = f.file();
        let fd = backing::reopen(file.leaf.fd()?.as_fd_ref(), libc::O_RDWR)
            .map_err(|e| self.on_partition(file.leaf.part, e.into()))?;
        let f = Arc::new(OpenFile::shared(f.node.clone(), fd, true));
        self.handles.shared.insert(ino, f.clone());
        Ok(f)
    }

    /// Before a file loses its last name: a process may still have it open
    /// without the daemon holding a descriptor for it, and a node anchored
    /// by a file handle cannot be reopened once the inode is unlinked. So
    /// the kernel's open files keep a per-file descriptor until FORGET.
    pub(super) fn keep_open_past_last_name(&self, st: &libc::stat) {
        if self.open_handles() || st.st_nlink > 1 {
            return;
        }
        let Some(node) = self.inodes.by_key(&Key::of(st)) else {
            return; // the kernel does not know it: nobody has it open
        };
        if let Ok(f) = self.open_file(node.ino, NO_HANDLE) {
            f.pinned.store(true, Ordering::Relaxed);
        }
    }

    /// Keeps the descriptor `create` opened as the file's per-file one;
    /// the kernel sends no RELEASE for it.
    pub(super) fn keep_shared(&self, node: Arc<Node>, fd: OwnedFd) -> u64 {
        let ino = node.ino;
        let f = Arc::new(OpenFile::shared(node, fd, true));
        self.handles.shared.insert(ino, f);
        self.handles.trim_shared();
        NO_HANDLE
    }

    /// The open file `fh` names if it is already open on `ino`: for
    /// requests that can do without one (getattr, setattr).
    pub(super) fn open_file_of(&self, fh: u64, ino: u64) -> Option<Arc<OpenFile>> {
        let h = if fh == NO_HANDLE {
            self.handles.shared.get(&ino)?.clone()
        } else {
            self.handles.file(fh).ok()?
        };
        (h.node.ino == ino).then_some(h)
    }

    /// Read-write where the backing file allows it (the kernel has checked
    /// the caller's access at its open), else read-only: a write through
    /// that then fails as the backing file would.
    fn open_shared(&self, ino: u64) -> FsResult<OpenFile> {
        let node = self.node(ino)?;
        let file = node.file().ok_or(FsError::WrongKind)?;
        let leaf = file.leaf.fd()?;
        let (fd, writable): (OwnedFd, bool) = match backing::reopen(leaf.as_fd_ref(), libc::O_RDWR)
        {
            Ok(fd) => (fd, true),
            Err(_) => (backing::reopen(leaf.as_fd_ref(), libc::O_RDONLY)?, false),
        };
        drop(leaf);
        Ok(OpenFile::shared(node, fd, writable))
    }

    /// Whether the kernel is to open files without asking.
    pub fn open_handles(&self) -> bool {
        self.config.mount.open_handles
    }
}
