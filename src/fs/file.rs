//! Open files: open, read, write, fsync, release, fallocate, lseek,
//! copy_file_range. Every size change goes through `change_size`.
//!
//! Passthrough: a read-only open of a message file with no writer open is
//! handed to the kernel (`FUSE_PASSTHROUGH`), so reads run at native speed.
//! The kernel then refuses every non-passthrough open of that inode
//! (measured: `EIO`, even with direct I/O), and a passthrough write would
//! bypass the quota, so a writable open of such a file is refused with
//! `ETXTBSY` until the readers close. See SEMANTICS.md.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use log::warn;

use super::handles::NO_HANDLE;
use super::inode::{FileNode, Node};
use super::{PassthroughId, SpoolFs};
use crate::backing;
use crate::error::{FsError, FsResult};

pub struct OpenFile {
    pub(super) node: Arc<Node>,
    fd: OwnedFd,
    writable: bool,
    passthrough: bool,
    /// When a per-file descriptor last served a write (`handles::now`).
    pub(super) last_write: AtomicU64,
}

impl OpenFile {
    /// A descriptor the daemon keeps for every open of a file the kernel
    /// opened without asking (see `handles.rs`).
    pub(super) fn shared(node: Arc<Node>, fd: OwnedFd, writable: bool) -> OpenFile {
        let f = OpenFile::per_open(node, fd, writable, false);
        f.last_write.store(super::handles::now(), Ordering::Relaxed);
        f
    }

    /// The descriptor of one OPEN or CREATE, under its own handle.
    fn per_open(node: Arc<Node>, fd: OwnedFd, writable: bool, passthrough: bool) -> OpenFile {
        OpenFile {
            node,
            fd,
            writable,
            passthrough,
            last_write: AtomicU64::new(0),
        }
    }

    pub(super) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    pub(super) fn writable(&self) -> bool {
        self.writable
    }

    pub(super) fn file(&self) -> &FileNode {
        self.node.file().expect("open files are regular files")
    }
}

/// The result of `open`: the handle, and the kernel backing file to pass
/// through to, if any.
pub struct Opened {
    pub fh: u64,
    pub backing: Option<PassthroughId>,
}

/// Files up to this size are read through the page cache, not passthrough.
/// Dovecot calls posix_fadvise(WILLNEED) on every message it opens, which
/// fills the FUSE page cache (up to 128 KiB, the bdi's io_pages) with one
/// READ; the kernel forbids FOPEN_KEEP_CACHE with passthrough, so for a
/// passthrough open that READ comes again at every open, while a cached
/// small file is read without the daemon once warm (issue 14).
const PASSTHROUGH_MIN_SIZE: u64 = 128 * 1024;

/// How long a writer waits for the RELEASE of passthrough readers that
/// have already closed (see `admit`) before it gets `ETXTBSY`.
const RELEASE_GRACE: Duration = Duration::from_millis(200);

/// Flags the backing descriptor must not carry: the kernel computes
/// append offsets and page-cache alignment itself.
const STRIPPED: i32 =
    libc::O_APPEND | libc::O_TRUNC | libc::O_CREAT | libc::O_EXCL | libc::O_DIRECT;

impl SpoolFs {
    /// Opens a regular file. `make_backing` registers a descriptor with the
    /// kernel for passthrough (given by the FUSE adapter).
    pub fn open(
        &self,
        ino: u64,
        flags: i32,
        make_backing: impl FnOnce(BorrowedFd) -> io::Result<PassthroughId>,
    ) -> FsResult<Opened> {
        if !self.open_handles() {
            return Err(FsError::OpensByKernel);
        }
        let node = self.node(ino)?;
        let file = node.file().ok_or(FsError::WrongKind)?;
        let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let fd = backing::reopen(file.leaf.fd()?.as_fd_ref(), flags & !STRIPPED)?;
        let backing = self.admit(file, &fd, writable, make_backing)?;
        let passthrough = backing.is_some();
        let fh = self
            .handles
            .add_file(OpenFile::per_open(node.clone(), fd, writable, passthrough));
        if writable && flags & libc::O_TRUNC != 0 {
            let h = self.open_file(ino, fh)?;
            if let Err(e) = self.truncate_handle(&h, 0) {
                self.release(fh); // undo the open's bookkeeping
                return Err(e);
            }
        }
        Ok(Opened { fh, backing })
    }

    /// Registers the descriptor `create` opened.
    pub(super) fn add_open(&self, node: Arc<Node>, fd: OwnedFd, writable: bool) -> FsResult<u64> {
        let file = node.file().ok_or(FsError::WrongKind)?;
        let mut o = file.opens.lock().unwrap();
        if writable {
            o.writers += 1;
        } else {
            o.cached_readers += 1;
        }
        drop(o);
        Ok(self
            .handles
            .add_file(OpenFile::per_open(node, fd, writable, false)))
    }

    /// Counts the open and decides how the kernel serves it: passthrough
    /// for readers where possible. The kernel refuses any other open of an
    /// inode in passthrough mode, and a passthrough write would bypass the
    /// ledger, so a writer then gets `ETXTBSY` (see SEMANTICS.md).
    fn admit(
        &self,
        file: &FileNode,
        fd: &OwnedFd,
        writable: bool,
        make_backing: impl FnOnce(BorrowedFd) -> io::Result<PassthroughId>,
    ) -> FsResult<Option<PassthroughId>> {
        let mut o = file.opens.lock().unwrap();
        if writable {
            // The kernel sends RELEASE asynchronously after close(2), so a
            // reader that has just closed may still be counted here: give
            // its release a moment to arrive before refusing the writer.
            o = file
                .passthrough_gone
                .wait_timeout_while(o, RELEASE_GRACE, |o| o.backing.is_some())
                .unwrap()
                .0;
            if o.backing.is_some() {
                return Err(FsError::PassthroughBusy);
            }
            o.writers += 1;
            return Ok(None);
        }
        // Once an inode is in passthrough mode, every open must be.
        if o.backing.is_none() {
            let eligible = self.passthrough.load(Ordering::Relaxed)
                && o.writers == 0
                && o.cached_readers == 0
                && matches!(&*file.state.lock().unwrap(),
                    s if !s.metadata && s.size() > PASSTHROUGH_MIN_SIZE);
            if !eligible {
                o.cached_readers += 1;
                return Ok(None);
            }
            match make_backing(fd.as_fd()) {
                Ok(id) => o.backing = Some(id),
                Err(e) => {
                    warn!("kernel passthrough unavailable ({e}); reads go through the daemon");
                    self.passthrough.store(false, Ordering::Relaxed);
                    o.cached_readers += 1;
                    return Ok(None);
                }
            }
        }
        o.passthrough_opens += 1;
        Ok(o.backing.clone())
    }

    pub fn release(&self, fh: u64) {
        let Some(h) = self.handles.remove_file(fh) else {
            return;
        };
        let mut o = h.file().opens.lock().unwrap();
        if h.writable {
            o.writers -= 1;
        } else if !h.passthrough {
            o.cached_readers -= 1;
        }
        if h.passthrough {
            o.passthrough_opens -= 1;
            if o.passthrough_opens == 0 {
                o.backing = None; // the kernel's backing id is closed on drop
                h.file().passthrough_gone.notify_all();
            }
        }
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> FsResult<Vec<u8>> {
        let mut buf = vec![0u8; size as usize];
        let got = self.read_into(ino, fh, offset, &mut buf)?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Reads into `buf` (a reply buffer the kernel reads from, for the
    /// ring: no copy and no allocation per READ); short only at EOF.
    pub fn read_into(&self, ino: u64, fh: u64, offset: u64, buf: &mut [u8]) -> FsResult<usize> {
        let h = self.open_file(ino, fh)?;
        // Most READs ask past the end of a mail file: a short read that
        // reaches the size the ledger knows needs no second pread to hear 0.
        let size = h.file().state.lock().unwrap().size();
        let mut got = 0;
        while got < buf.len() {
            let n = backing::pread(h.fd.as_fd(), &mut buf[got..], offset + got as u64)?;
            got += n;
            if n == 0 || offset + got as u64 >= size {
                break;
            }
        }
        Ok(got)
    }

    /// `open_flags`: those of the caller's open file, which a per-file
    /// descriptor does not carry: its `O_SYNC`/`O_DSYNC` apply per write.
    pub fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        open_flags: i32,
    ) -> FsResult<u32> {
        let h = self.open_file_for_write(ino, fh)?;
        let sync_flags = match fh {
            NO_HANDLE => open_flags & (libc::O_SYNC | libc::O_DSYNC),
            _ => 0,
        };
        let end = offset + data.len() as u64;
        let n = self.change_size(
            h.file(),
            h.fd.as_fd(),
            "write",
            |old| old.max(end),
            || backing::pwrite(h.fd.as_fd(), data, offset, sync_flags),
            |n, old| old.max(offset + *n as u64),
        )?;
        Ok(n as u32)
    }

    /// Before a write by a caller without `CAP_FSETID`
    /// (`FUSE_WRITE_KILL_SUIDGID`, see `handler.rs`).
    pub fn kill_suidgid(&self, ino: u64, fh: u64) -> FsResult<()> {
        let h = self.open_file(ino, fh)?;
        let file = h.file();
        if file.no_setid.load(Ordering::Relaxed) {
            return Ok(());
        }
        backing::kill_suidgid(h.fd.as_fd())?;
        // Set-group-ID without group execute stays (see `kill_suidgid`),
        // so only a fresh look says whether any bit is left.
        let mode = backing::stat_fd(h.fd.as_fd())?.st_mode;
        file.no_setid
            .store(!super::lookup::has_setid(mode), Ordering::Relaxed);
        Ok(())
    }

    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> FsResult<()> {
        let h = self.open_file(ino, fh)?;
        backing::sync_fd(h.fd(), datasync)
            .map_err(|e| self.on_partition(h.file().leaf.part, e.into()))?;
        Ok(())
    }

    pub fn fallocate(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: i32,
    ) -> FsResult<()> {
        let h = self.open_file_for_write(ino, fh)?;
        let fd = h.fd.as_fd();
        self.change_size(
            h.file(),
            fd,
            "fallocate",
            |old| fallocate_target(old, offset, length, mode),
            || {
                if preallocates_past_eof(mode)
                    && offset + length > backing::stat_fd(fd)?.st_size as u64
                {
                    // Disk that no size shows, so no limit would see it.
                    return Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP));
                }
                backing::fallocate(fd, mode, offset, length)
            },
            |_, _| {
                backing::stat_fd(fd)
                    .map(|st| st.st_size as u64)
                    .unwrap_or(0)
            },
        )
    }

    pub fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> FsResult<i64> {
        let h = self.open_file(ino, fh)?;
        Ok(backing::lseek(h.fd(), offset, whence)?)
    }

    /// `from` and `to` are (inode, handle) pairs.
    pub fn copy_file_range(
        &self,
        from: (u64, u64),
        off_in: u64,
        to: (u64, u64),
        off_out: u64,
        len: u64,
    ) -> FsResult<u32> {
        let hin = self.open_file(from.0, from.1)?;
        let hout = self.open_file_for_write(to.0, to.1)?;
        let in_size = backing::stat_fd(hin.fd.as_fd())?.st_size as u64;
        let len = len.min(in_size.saturating_sub(off_in)).min(u32::MAX as u64);
        let n = self.change_size(
            hout.file(),
            hout.fd.as_fd(),
            "copy_file_range",
            |old| {
                if len == 0 {
                    old
                } else {
                    old.max(off_out + len)
                }
            },
            || backing::copy_file_range(hin.fd(), off_in, hout.fd(), off_out, len),
            |n, old| {
                if *n == 0 {
                    old
                } else {
                    old.max(off_out + *n as u64)
                }
            },
        )?;
        Ok(n as u32)
    }

    /// `open(O_TRUNC)` or `ftruncate` on an open descriptor.
    fn truncate_open(&self, file: &FileNode, fd: &OwnedFd, size: u64) -> FsResult<()> {
        self.change_size(
            file,
            fd.as_fd(),
            "truncate",
            |_| size,
            || backing::ftruncate(fd.as_fd(), size),
            |_, _| size,
        )
    }

    /// `fstat` through open file `fh`, if it is open on inode `ino`.
    pub(super) fn stat_open(&self, fh: u64, ino: u64) -> Option<io::Result<libc::stat>> {
        self.open_file_of(fh, ino).map(|h| backing::stat_fd(h.fd()))
    }

    pub(super) fn truncate_handle(&self, h: &OpenFile, size: u64) -> FsResult<()> {
        self.truncate_open(h.file(), &h.fd, size)
    }
}

/// The size a file may reach by `fallocate(mode, offset, length)`.
/// `FALLOC_FL_KEEP_SIZE` allocating (not punching): past the end of the
/// file it takes disk the file's size, and so its charge, does not show.
fn preallocates_past_eof(mode: i32) -> bool {
    mode & libc::FALLOC_FL_KEEP_SIZE != 0 && mode & libc::FALLOC_FL_PUNCH_HOLE == 0
}

pub(super) fn fallocate_target(old: u64, offset: u64, length: u64, mode: i32) -> u64 {
    if mode & libc::FALLOC_FL_KEEP_SIZE != 0 {
        old
    } else if mode & libc::FALLOC_FL_COLLAPSE_RANGE != 0 {
        old.saturating_sub(length)
    } else if mode & libc::FALLOC_FL_INSERT_RANGE != 0 {
        old + length
    } else {
        old.max(offset + length)
    }
}

#[cfg(test)]
mod tests {
    use super::fallocate_target;

    #[test]
    fn fallocate_targets() {
        assert_eq!(fallocate_target(100, 50, 100, 0), 150);
        assert_eq!(fallocate_target(100, 0, 10, 0), 100);
        assert_eq!(
            fallocate_target(100, 0, 500, libc::FALLOC_FL_KEEP_SIZE),
            100
        );
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        assert_eq!(fallocate_target(100, 0, 50, punch), 100);
        assert_eq!(
            fallocate_target(8192, 0, 4096, libc::FALLOC_FL_COLLAPSE_RANGE),
            4096
        );
        assert_eq!(
            fallocate_target(8192, 0, 4096, libc::FALLOC_FL_INSERT_RANGE),
            12288
        );
        assert_eq!(
            fallocate_target(0, 0, 4096, libc::FALLOC_FL_ZERO_RANGE),
            4096
        );
    }
}
