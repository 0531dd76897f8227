//! The one place each request is served, whatever carried it: time it,
//! call the core, turn an error into its errno (through `FsError::errno`),
//! and tell the listing cache about changed directories. The transports
//! (`devfuse.rs` over fuser's `/dev/fuse` loop, `uring/` over io_uring)
//! only decode requests and encode these answers.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use log::debug;

use crate::error::{FsError, FsResult};
use crate::fs::offset_after;
use crate::fs::{Attr, Caller, DirEntryOut, Opened, PassthroughId, SetAttr, SpoolFs, StatFs};
use crate::invalidate::DirInvalidator;
use crate::metrics::{self, Op};

/// The open flags of a handle the daemon serves (not passthrough), on the
/// wire (`FOPEN_KEEP_CACHE`): the page cache is kept across opens, since
/// nothing but this daemon writes the partitions while mounted and writes
/// are write-through. One policy for both transports.
pub const OPEN_FLAGS: u32 = 1 << 1;

/// A request's outcome: the answer, or the errno to reply with.
pub type Answer<T> = Result<T, i32>;

/// What GETXATTR and LISTXATTR answer: the size the caller asked for
/// (`size == 0`), or the value.
pub enum XattrAnswer {
    Size(u32),
    Data(Vec<u8>),
}

/// One READDIR reply's worth of entries, each with the offset of the entry
/// after it (what the kernel sends back to continue).
pub struct Listing {
    page: crate::fs::ListingPage,
}

impl Listing {
    pub fn entries(&self) -> impl Iterator<Item = (&DirEntryOut, u64)> {
        let generation = self.page.generation;
        self.page
            .entries
            .iter()
            .enumerate()
            .skip(self.page.start)
            .map(move |(i, e)| (e, offset_after(generation, i)))
    }
}

pub struct Handler {
    fs: Arc<SpoolFs>,
    invalidator: DirInvalidator,
    /// The request id of the last FORGET served (see `forget`).
    last_forget: AtomicU64,
}

impl Handler {
    pub fn new(fs: Arc<SpoolFs>, invalidator: DirInvalidator) -> Handler {
        Handler {
            fs,
            invalidator,
            last_forget: AtomicU64::new(0),
        }
    }

    pub fn fs(&self) -> &SpoolFs {
        &self.fs
    }

    /// How long the kernel may keep entries and attributes.
    pub fn ttl(&self) -> Duration {
        self.fs.ttl
    }

    /// The errno a failed request answers with; the core hears of it too,
    /// to name a partition in trouble.
    fn errno(&self, op: Op, e: FsError) -> i32 {
        debug!("{}: {e}", op.name());
        if let FsError::Quota(r) = &e {
            metrics::global().refusal(r.tenant.as_deref(), op);
        }
        let errno = e.errno();
        self.fs.note_error(op.name(), errno);
        errno
    }

    fn answer<T>(&self, op: Op, result: FsResult<T>) -> Answer<T> {
        result.map_err(|e| self.errno(op, e))
    }

    /// After a successful change to the entries of `dirs`.
    fn changed<T>(&self, result: &Answer<T>, dirs: &[u64]) {
        if result.is_err() {
            return;
        }
        for &dir in dirs {
            if self.fs.listing_may_be_stale(dir) {
                self.invalidator.schedule(dir);
            }
        }
    }

    /// A request that made a new name in `dir` (mknod, mkdir, symlink,
    /// link, create).
    fn new_entry<T>(&self, op: Op, dir: u64, result: FsResult<T>) -> Answer<T> {
        let answer = self.answer(op, result);
        self.changed(&answer, &[dir]);
        answer
    }

    /// An absent name is answered as a negative entry (`Attr::absent`),
    /// which the kernel keeps for the entry TTL: Cyrus looks its stage
    /// file's name up before `fopen(w+)` creates it, and the create then
    /// needs no LOOKUP of its own. Safe because every name is made through
    /// this mount, which the kernel sees (exclusive creates and link
    /// targets are looked up again regardless).
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Lookup);
        match self.answer(Op::Lookup, self.fs.lookup(parent, name)) {
            Err(libc::ENOENT) if !self.ttl().is_zero() => Ok(Attr::absent()),
            answer => answer,
        }
    }

    /// `request`: the kernel's request id. A BATCH_FORGET (after
    /// `drop_caches` or under memory pressure) forgets many inodes in one
    /// request, which fuser hands over one inode at a time: it is counted
    /// once, as the kernel sent it.
    pub fn forget(&self, request: u64, ino: u64, nlookup: u64) {
        let counted = self.last_forget.swap(request, Ordering::Relaxed) != request;
        let _timer = counted.then(|| metrics::global().request(Op::Forget));
        self.fs.forget(ino, nlookup);
    }

    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Getattr);
        self.answer(Op::Getattr, self.fs.getattr(ino, fh))
    }

    pub fn setattr(&self, ino: u64, change: SetAttr) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Setattr);
        self.answer(Op::Setattr, self.fs.setattr(ino, change))
    }

    pub fn readlink(&self, ino: u64) -> Answer<Vec<u8>> {
        let _timer = metrics::global().request(Op::Readlink);
        self.answer(Op::Readlink, self.fs.readlink(ino))
    }

    pub fn mknod(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Mknod);
        let result = self.fs.mknod(who, parent, name, mode, umask, rdev);
        self.new_entry(Op::Mknod, parent, result)
    }

    pub fn mkdir(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Mkdir);
        let result = self.fs.mkdir(who, parent, name, mode, umask);
        self.new_entry(Op::Mkdir, parent, result)
    }

    pub fn symlink(&self, who: Caller, parent: u64, name: &OsStr, target: &Path) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Symlink);
        let result = self.fs.symlink(who, parent, name, target);
        self.new_entry(Op::Symlink, parent, result)
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> Answer<Attr> {
        let _timer = metrics::global().request(Op::Link);
        let result = self.fs.link(ino, newparent, newname);
        self.new_entry(Op::Link, newparent, result)
    }

    pub fn unlink(&self, parent: u64, name: &OsStr) -> Answer<()> {
        let _timer = metrics::global().request(Op::Unlink);
        let answer = self.answer(Op::Unlink, self.fs.unlink(parent, name));
        self.changed(&answer, &[parent]);
        answer
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> Answer<()> {
        let _timer = metrics::global().request(Op::Rmdir);
        let answer = self.answer(Op::Rmdir, self.fs.rmdir(parent, name));
        self.changed(&answer, &[parent]);
        answer
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Answer<()> {
        let _timer = metrics::global().request(Op::Rename);
        let result = self.fs.rename(parent, name, newparent, newname, flags);
        let answer = self.answer(Op::Rename, result);
        if newparent == parent {
            self.changed(&answer, &[parent]);
        } else {
            self.changed(&answer, &[parent, newparent]);
        }
        answer
    }

    /// `make_backing` registers a descriptor with the kernel for
    /// passthrough; each transport has its own way to.
    pub fn open(
        &self,
        ino: u64,
        flags: i32,
        make_backing: impl FnOnce(BorrowedFd) -> std::io::Result<PassthroughId>,
    ) -> Answer<Opened> {
        let _timer = metrics::global().request(Op::Open);
        self.answer(Op::Open, self.fs.open(ino, flags, make_backing))
    }

    pub fn read(&self, ino: u64, fh: u64, offset: u64, size: u32) -> Answer<Vec<u8>> {
        let _timer = metrics::global().request(Op::Read);
        self.answer(Op::Read, self.fs.read(ino, fh, offset, size))
    }

    /// READ into the reply buffer itself; the bytes read.
    pub fn read_into(&self, ino: u64, fh: u64, offset: u64, buf: &mut [u8]) -> Answer<usize> {
        let _timer = metrics::global().request(Op::Read);
        self.answer(Op::Read, self.fs.read_into(ino, fh, offset, buf))
    }

    /// `kill_suidgid`: the kernel's `FUSE_WRITE_KILL_SUIDGID`. Under
    /// `FUSE_HANDLE_KILLPRIV_V2` the kernel leaves clearing set-ID bits to
    /// the daemon, and in return stops asking `security.capability`
    /// before every write (it asks once, until the attributes change).
    /// `open_flags`: the caller's, sent with every write.
    pub fn write(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        open_flags: i32,
        kill_suidgid: bool,
    ) -> Answer<u32> {
        let _timer = metrics::global().request(Op::Write);
        if kill_suidgid {
            self.answer(Op::Write, self.fs.kill_suidgid(ino, fh))?;
        }
        self.answer(Op::Write, self.fs.write(ino, fh, offset, data, open_flags))
    }

    /// Writes are write-through and locks are the kernel's: nothing to do
    /// at close. ENOSYS tells the kernel to stop sending FLUSH at all,
    /// saving a round trip per close(2).
    pub fn flush(&self) -> i32 {
        let _timer = metrics::global().request(Op::Flush);
        libc::ENOSYS
    }

    pub fn release(&self, fh: u64) {
        let _timer = metrics::global().request(Op::Release);
        self.fs.release(fh);
    }

    pub fn fsync(&self, ino: u64, fh: u64, datasync: bool) -> Answer<()> {
        let _timer = metrics::global().request(Op::Fsync);
        self.answer(Op::Fsync, self.fs.fsync(ino, fh, datasync))
    }

    /// ENOSYS once, and the kernel stops sending OPENDIR/RELEASEDIR and
    /// opens directories with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR: a warm
    /// listing then costs no round trip at all. READDIR arrives without a
    /// handle; `listing.rs` keeps the snapshots it serves.
    pub fn opendir(&self) -> i32 {
        let _timer = metrics::global().request(Op::Opendir);
        libc::ENOSYS
    }

    pub fn readdir(&self, ino: u64, offset: u64) -> Answer<Listing> {
        let _timer = metrics::global().request(Op::Readdir);
        let page = self.answer(Op::Readdir, self.fs.readdir(ino, offset))?;
        Ok(Listing { page })
    }

    pub fn fsyncdir(&self, ino: u64, datasync: bool) -> Answer<()> {
        let _timer = metrics::global().request(Op::Fsyncdir);
        self.answer(Op::Fsyncdir, self.fs.fsyncdir(ino, datasync))
    }

    pub fn statfs(&self, ino: u64) -> Answer<StatFs> {
        let _timer = metrics::global().request(Op::Statfs);
        self.answer(Op::Statfs, self.fs.statfs(ino))
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> Answer<()> {
        let _timer = metrics::global().request(Op::Setxattr);
        self.answer(Op::Setxattr, self.fs.setxattr(ino, name, value, flags))
    }

    pub fn getxattr(&self, ino: u64, name: &OsStr, size: u32) -> Answer<XattrAnswer> {
        let _timer = metrics::global().request(Op::Getxattr);
        let value = self.answer(Op::Getxattr, self.fs.getxattr(ino, name))?;
        xattr_answer(value, size)
    }

    pub fn listxattr(&self, ino: u64, size: u32) -> Answer<XattrAnswer> {
        let _timer = metrics::global().request(Op::Listxattr);
        let names = self.answer(Op::Listxattr, self.fs.listxattr(ino))?;
        xattr_answer(names, size)
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> Answer<()> {
        let _timer = metrics::global().request(Op::Removexattr);
        self.answer(Op::Removexattr, self.fs.removexattr(ino, name))
    }

    /// `default_permissions`: the kernel has checked.
    pub fn access(&self) -> Answer<()> {
        let _timer = metrics::global().request(Op::Access);
        Ok(())
    }

    pub fn create(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> Answer<(Attr, u64)> {
        let _timer = metrics::global().request(Op::Create);
        let result = self.fs.create(who, parent, name, mode, umask, flags);
        self.new_entry(Op::Create, parent, result)
    }

    pub fn fallocate(&self, ino: u64, fh: u64, offset: u64, length: u64, mode: i32) -> Answer<()> {
        let _timer = metrics::global().request(Op::Fallocate);
        let result = self.fs.fallocate(ino, fh, offset, length, mode);
        self.answer(Op::Fallocate, result)
    }

    pub fn lseek(&self, ino: u64, fh: u64, offset: i64, whence: i32) -> Answer<i64> {
        let _timer = metrics::global().request(Op::Lseek);
        self.answer(Op::Lseek, self.fs.lseek(ino, fh, offset, whence))
    }

    /// `from` and `to` are (inode, handle) pairs.
    pub fn copy_file_range(
        &self,
        from: (u64, u64),
        off_in: u64,
        to: (u64, u64),
        off_out: u64,
        len: u64,
    ) -> Answer<u32> {
        let _timer = metrics::global().request(Op::CopyFileRange);
        let result = self.fs.copy_file_range(from, off_in, to, off_out, len);
        self.answer(Op::CopyFileRange, result)
    }
}

/// `size == 0` asks how large the value is; a value larger than `size`
/// is `ERANGE`.
fn xattr_answer(value: Vec<u8>, size: u32) -> Answer<XattrAnswer> {
    if size == 0 {
        Ok(XattrAnswer::Size(value.len() as u32))
    } else if value.len() > size as usize {
        Err(libc::ERANGE)
    } else {
        Ok(XattrAnswer::Data(value))
    }
}
