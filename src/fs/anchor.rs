//! How a file's node reaches its backing inode.
//!
//! The kernel keeps an inode (and so a node here) for every file it has
//! looked up until memory pressure makes it FORGET, which may be millions.
//! An `O_PATH` descriptor per node would hit the process's descriptor limit
//! there, so nodes hold descriptors only within a budget; beyond it a node
//! keeps the kernel's file handle for the inode (`name_to_handle_at`, a few
//! bytes) and reopens it for each use (`open_by_handle_at`). Directories
//! always hold their descriptors: there are few of them, and every lookup
//! goes through one.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backing::{self, AsFdRef, Handle};

/// Descriptors the anchors hold now, and how many they may.
static HELD: AtomicUsize = AtomicUsize::new(0);
static BUDGET: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Sets how many descriptors file nodes may hold (at mount).
pub fn set_budget(n: usize) {
    BUDGET.store(n, Ordering::Relaxed);
}

pub enum Anchor {
    Held(OwnedFd),
    Handle { handle: Handle, mount: Arc<OwnedFd> },
}

impl Anchor {
    /// Anchors on the object behind `fd`, keeping `fd` if the budget allows
    /// (or the filesystem gives no handles). `mount` is any descriptor on
    /// the same filesystem (the partition root).
    pub fn new(fd: OwnedFd, mount: &Arc<OwnedFd>) -> Anchor {
        let claimed = HELD
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < BUDGET.load(Ordering::Relaxed)).then_some(n + 1)
            })
            .is_ok();
        if !claimed && let Some(handle) = backing::handle_of(fd.as_fd_ref()) {
            return Anchor::Handle {
                handle,
                mount: mount.clone(),
            };
        }
        if !claimed {
            HELD.fetch_add(1, Ordering::Relaxed); // no handles here: over budget
        }
        Anchor::Held(fd)
    }

    /// A descriptor on the object, for one operation. A file deleted
    /// meanwhile is `ENOENT`.
    pub fn fd(&self) -> io::Result<LeafFd<'_>> {
        match self {
            Anchor::Held(fd) => Ok(LeafFd::Borrowed(fd.as_fd_ref())),
            Anchor::Handle { handle, mount } => {
                match backing::open_handle(mount.as_fd_ref(), handle) {
                    Ok(fd) => Ok(LeafFd::Owned(fd)),
                    Err(e) if e.raw_os_error() == Some(libc::ESTALE) => {
                        Err(io::Error::from_raw_os_error(libc::ENOENT))
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }
}

impl Drop for Anchor {
    fn drop(&mut self) {
        if let Anchor::Held(_) = self {
            HELD.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// A descriptor borrowed from the node or opened for this use.
pub enum LeafFd<'a> {
    Borrowed(BorrowedFd<'a>),
    Owned(OwnedFd),
    /// A directory copy's descriptor.
    Shared(Arc<OwnedFd>),
}

impl LeafFd<'_> {
    pub fn as_fd_ref(&self) -> BorrowedFd<'_> {
        match self {
            LeafFd::Borrowed(fd) => *fd,
            LeafFd::Owned(fd) => fd.as_fd_ref(),
            LeafFd::Shared(fd) => fd.as_fd_ref(),
        }
    }

    pub fn as_raw_fd(&self) -> i32 {
        self.as_fd_ref().as_raw_fd()
    }
}
