//! The descriptors behind the kernel's file handles.
//!
//! Two ways a file gets one:
//! - **Per open** (`[mount] open_handles = true`): every OPEN and CREATE
//!   gets its own backing descriptor under a fresh handle number, closed at
//!   RELEASE. Read-only opens of large files may be kernel passthrough.
//! - **Per file** (`open_handles = false`): the daemon answers the first
//!   OPEN `ENOSYS`, and from then on the kernel opens files without asking
//!   and sends no RELEASE, not even for what CREATE opened; its requests
//!   carry handle 0 (`NO_HANDLE`). The daemon keeps one descriptor per
//!   file: read-only from the first read, read-write from CREATE or the
//!   first write, closed when the kernel forgets the inode (or to stay
//!   within `SHARED_MAX`). That saves two round trips per
//!   `open(2)`/`close(2)` pair, which mail daemons do many times per
//!   message (Cyrus reopens its index, cache and header files; see the
//!   README's request table), at the cost of read passthrough.
//!
//! The daemon cannot know when the last process closed a file, so a
//! read-write descriptor no write has used for `WRITER_IDLE` is closed
//! (`sweep`): a partition must be able to turn read-only (`mount -o
//! remount,ro`, which fails while files are open for writing) once its
//! writers are done, as without spoolfs.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;

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

/// How long a per-file read-write descriptor stays open without a write.
const WRITER_IDLE: Duration = Duration::from_secs(2);

/// Seconds since the daemon started: when a descriptor last wrote.
pub(super) fn now() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_secs()
}

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
    /// Inodes whose per-file descriptor stays until FORGET: their last
    /// name is gone (see `keep_open_past_last_name`). Kept per inode, not
    /// per descriptor, so that a read-only descriptor reopened read-write
    /// meanwhile stays pinned too; with the node, so that the FORGET of an
    /// older node with the same number leaves the pin alone.
    pinned: DashMap<u64, Arc<Node>>,
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

    /// Starts the thread that closes idle read-write descriptors; it ends
    /// with the filesystem.
    pub(super) fn start_sweeper(handles: &Arc<Handles>) {
        let weak: Weak<Handles> = Arc::downgrade(handles);
        let spawned = std::thread::Builder::new()
            .name("handle-sweeper".into())
            .spawn(move || {
                while let Some(handles) = weak.upgrade() {
                    handles.close_idle_writers(now(), WRITER_IDLE.as_secs());
                    drop(handles);
                    std::thread::sleep(WRITER_IDLE / 2);
                }
            });
        if let Err(e) = spawned {
            log::warn!("no handle sweeper ({e}): idle writable descriptors stay open until FORGET");
        }
    }

    /// Closes the read-write per-file descriptors no request holds and no
    /// write used for `idle` seconds (a file whose last name is gone keeps
    /// its own); the next request reopens.
    fn close_idle_writers(&self, now: u64, idle: u64) {
        self.close_shared(usize::MAX, |f| {
            f.writable() && now.saturating_sub(f.last_write.load(Ordering::Relaxed)) >= idle
        });
    }

    /// Closes up to `max` per-file descriptors that `closable` picks, no
    /// request holds and no pin keeps. Picked first, then removed one by
    /// one: no descriptor is closed while a map shard is locked.
    fn close_shared(&self, max: usize, closable: impl Fn(&OpenFile) -> bool) {
        let idle = |ino: &u64, f: &Arc<OpenFile>| {
            Arc::strong_count(f) == 1 && !self.pinned.contains_key(ino) && closable(f)
        };
        let picked: Vec<u64> = self
            .shared
            .iter()
            .filter(|e| idle(e.key(), e.value()))
            .map(|e| *e.key())
            .take(max)
            .collect();
        for ino in picked {
            drop(self.shared.remove_if(&ino, idle)); // closes here, unlocked
        }
    }

    /// The per-file descriptor of `node`, if open. Checked by node, not
    /// just by number: a descriptor left by a node the kernel forgot must
    /// not serve a new node with the same number.
    fn shared_of(&self, node: &Arc<Node>) -> Option<Arc<OpenFile>> {
        let f = self.shared.get(&node.ino)?;
        Arc::ptr_eq(&f.node, node).then(|| f.clone())
    }

    /// Closes the per-file descriptor of a forgotten node, unless the
    /// inode number already stands for a new node.
    pub(super) fn forget(&self, node: &Arc<Node>) {
        let ino = node.ino;
        self.shared
            .remove_if(&ino, |_, f| Arc::ptr_eq(&f.node, node));
        self.pinned.remove_if(&ino, |_, n| Arc::ptr_eq(n, node));
    }

    /// Keeps at most `SHARED_CAP` per-file descriptors, closing first
    /// those no request holds. A file whose descriptor is closed while the
    /// kernel still has it open is reopened at its next request.
    fn trim_shared(&self) {
        let cap = SHARED_CAP.load(Ordering::Relaxed);
        if self.shared.len() <= cap {
            return;
        }
        self.close_shared(self.shared.len() - cap * 3 / 4, |_| true);
    }
}

impl SpoolFs {
    /// The open file a request names: its own handle, or for `NO_HANDLE`
    /// the inode's per-file descriptor, opened if need be.
    pub(super) fn open_file(&self, ino: u64, fh: u64) -> FsResult<Arc<OpenFile>> {
        if fh != NO_HANDLE {
            return self.handles.file(fh);
        }
        let node = self.node(ino)?;
        if let Some(f) = self.handles.shared_of(&node) {
            return Ok(f);
        }
        let opened = Arc::new(self.open_shared(node)?);
        let kept = match self.handles.shared.entry(ino) {
            Entry::Occupied(mut e) if !Arc::ptr_eq(&e.get().node, &opened.node) => {
                e.insert(opened.clone());
                opened
            }
            Entry::Occupied(e) => e.get().clone(),
            Entry::Vacant(e) => e.insert(opened).clone(),
        };
        self.handles.trim_shared();
        Ok(kept)
    }

    /// The open file a write goes through. A read-only per-file
    /// descriptor is reopened read-write (through itself, so this works
    /// after the file's last name is gone), and the write fails as that
    /// open does (e.g. `EROFS`).
    pub(super) fn open_file_for_write(&self, ino: u64, fh: u64) -> FsResult<Arc<OpenFile>> {
        let f = self.open_file(ino, fh)?;
        if fh != NO_HANDLE {
            return Ok(f);
        }
        if f.writable() {
            f.last_write.store(now(), Ordering::Relaxed);
            return Ok(f);
        }
        let fd = backing::reopen(f.fd(), libc::O_RDWR)
            .map_err(|e| self.on_partition(f.file().leaf.part, e.into()))?;
        let writer = Arc::new(OpenFile::shared(f.node.clone(), fd, true));
        self.handles.shared.insert(ino, writer.clone());
        Ok(writer)
    }

    /// Before a file loses its last name: a process may still have it open
    /// without the daemon holding a descriptor for it, and a node anchored
    /// by a file handle cannot be reopened once the inode is unlinked. So
    /// the kernel's open files keep a per-file descriptor until FORGET.
    /// Returns the inode pinned here, for `unpin` if the operation fails.
    pub(super) fn keep_open_past_last_name(&self, st: &libc::stat) -> Option<u64> {
        if self.open_handles() || st.st_nlink > 1 {
            return None;
        }
        // None: the kernel does not know it, so nobody has it open.
        let node = self.inodes.by_key(&Key::of(st))?;
        // Held until pinned: a trim between the two would close it.
        let open = self.open_file(node.ino, NO_HANDLE).ok()?;
        let before = self.handles.pinned.insert(node.ino, node.clone());
        drop(open);
        // Already pinned for this node: the pin is not this operation's.
        let ours = !before.is_some_and(|n| Arc::ptr_eq(&n, &node));
        ours.then_some(node.ino)
    }

    /// The name stayed after all (the unlink or rename failed).
    pub(super) fn unpin(&self, pinned: Option<u64>) {
        if let Some(ino) = pinned {
            self.handles.pinned.remove(&ino);
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
        if fh == NO_HANDLE {
            return self.handles.shared_of(&self.node(ino).ok()?);
        }
        let h = self.handles.file(fh).ok()?;
        (h.node.ino == ino).then_some(h)
    }

    /// Read-only: most files are only read (messages once delivered);
    /// the first write reopens read-write (`open_file_for_write`).
    fn open_shared(&self, node: Arc<Node>) -> FsResult<OpenFile> {
        let file = node.file().ok_or(FsError::WrongKind)?;
        let fd = backing::reopen(file.leaf.fd()?.as_fd_ref(), libc::O_RDONLY)?;
        Ok(OpenFile::shared(node, fd, false))
    }

    /// Whether the kernel is to open files without asking.
    pub fn open_handles(&self) -> bool {
        self.config.mount.open_handles
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::inode::{Body, DirNode, InodeTable, Loc, ROOT_INO};

    /// A node with the root's number: two of them stand for an old node
    /// and the new one that took its number.
    fn node() -> Arc<Node> {
        let loc = Loc {
            parent: ROOT_INO,
            name: "d".into(),
        };
        Arc::new(InodeTable::root_node(Body::Dir(DirNode::new(
            loc,
            1,
            Vec::new(),
        ))))
    }

    #[test]
    fn the_forget_of_an_older_node_leaves_the_pin_of_a_new_one() {
        let handles = Handles::default();
        let (old, new) = (node(), node());
        handles.pinned.insert(new.ino, new.clone());
        handles.forget(&old);
        assert!(handles.pinned.contains_key(&new.ino), "the new node's pin");
        handles.forget(&new);
        assert!(!handles.pinned.contains_key(&new.ino));
    }
}
