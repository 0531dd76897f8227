//! The `fuser::Filesystem` adapter: unpack the request, call the core,
//! reply. No decisions are made here; errors become errnos through
//! `FsError::errno`, the one place that maps them.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use log::debug;

mod convert;

use convert::{file_attr, file_type, set_time};

use crate::error::{FsError, FsResult};
use crate::fs::{Attr, Caller, PassthroughId, SetAttr, SpoolFs, offset_after};
use crate::invalidate::DirInvalidator;
use crate::metrics::{self, Op};

pub struct FuseAdapter {
    fs: Arc<SpoolFs>,
    invalidator: DirInvalidator,
}

impl FuseAdapter {
    pub fn new(fs: Arc<SpoolFs>, invalidator: DirInvalidator) -> FuseAdapter {
        FuseAdapter { fs, invalidator }
    }

    /// The errno a failed request answers with; the core hears of it too,
    /// to name a partition in trouble.
    fn errno(&self, op: Op, e: FsError) -> Errno {
        debug!("{}: {e}", op.name());
        if let FsError::Quota(r) = &e {
            metrics::global().refusal(r.tenant.as_deref(), op);
        }
        let errno = e.errno();
        self.fs.note_error(op.name(), errno);
        Errno::from_i32(errno)
    }

    /// Replies to a request that made a new name in `dir` (mknod, mkdir,
    /// symlink, link).
    fn new_entry(&self, op: Op, dir: INodeNo, result: FsResult<Attr>, reply: ReplyEntry) {
        match result {
            Ok(attr) => {
                reply.entry(&self.ttl(), &file_attr(&attr), GEN);
                self.changed(dir);
            }
            Err(e) => reply.error(self.errno(op, e)),
        }
    }

    /// After a successful change to the entries of `dir`.
    fn changed(&self, dir: INodeNo) {
        if self.fs.listing_may_be_stale(dir.0) {
            self.invalidator.schedule(dir.0);
        }
    }

    fn ttl(&self) -> Duration {
        self.fs.ttl
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// Page cache kept across opens: nothing but this daemon writes the
/// partitions while mounted, and writes are write-through.
const OPEN_FLAGS: FopenFlags = FopenFlags::FOPEN_KEEP_CACHE;
const GEN: Generation = Generation(0);

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Plain READDIR, no READDIRPLUS: inode numbers are derived from the
        // backing objects (see `fs/inode.rs`), so a listing gives the right
        // `d_ino` without looking up (and, cold, reading from disk) every
        // entry's inode.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS | InitFlags::FUSE_CACHE_SYMLINKS;
        for flag in wanted.iter() {
            let _ = config.add_capabilities(flag);
        }
        if self.fs.config.mount.passthrough {
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
                let _ = config.set_max_stack_depth(1);
            } else {
                log::warn!("kernel lacks FUSE passthrough; reads go through the daemon");
            }
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _timer = metrics::global().request(Op::Lookup);
        match self.fs.lookup(parent.0, name) {
            Ok(attr) => reply.entry(&self.ttl(), &file_attr(&attr), GEN),
            Err(e) => reply.error(self.errno(Op::Lookup, e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _timer = metrics::global().request(Op::Forget);
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _timer = metrics::global().request(Op::Getattr);
        match self.fs.getattr(ino.0, fh.map(|f| f.0)) {
            Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
            Err(e) => reply.error(self.errno(Op::Getattr, e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let _timer = metrics::global().request(Op::Setattr);
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            fh: fh.map(|f| f.0),
        };
        match self.fs.setattr(ino.0, change) {
            Ok(attr) => reply.attr(&self.ttl(), &file_attr(&attr)),
            Err(e) => reply.error(self.errno(Op::Setattr, e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _timer = metrics::global().request(Op::Readlink);
        match self.fs.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(self.errno(Op::Readlink, e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let _timer = metrics::global().request(Op::Mknod);
        let result = self
            .fs
            .mknod(caller(req), parent.0, name, mode, umask, rdev);
        self.new_entry(Op::Mknod, parent, result, reply);
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let _timer = metrics::global().request(Op::Mkdir);
        let result = self.fs.mkdir(caller(req), parent.0, name, mode, umask);
        self.new_entry(Op::Mkdir, parent, result, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = metrics::global().request(Op::Unlink);
        match self.fs.unlink(parent.0, name) {
            Ok(()) => {
                reply.ok();
                self.changed(parent);
            }
            Err(e) => reply.error(self.errno(Op::Unlink, e)),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = metrics::global().request(Op::Rmdir);
        match self.fs.rmdir(parent.0, name) {
            Ok(()) => {
                reply.ok();
                self.changed(parent);
            }
            Err(e) => reply.error(self.errno(Op::Rmdir, e)),
        }
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let _timer = metrics::global().request(Op::Symlink);
        let result = self.fs.symlink(caller(req), parent.0, link_name, target);
        self.new_entry(Op::Symlink, parent, result, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Rename);
        match self
            .fs
            .rename(parent.0, name, newparent.0, newname, flags.bits())
        {
            Ok(()) => {
                reply.ok();
                self.changed(parent);
                if newparent != parent {
                    self.changed(newparent);
                }
            }
            Err(e) => reply.error(self.errno(Op::Rename, e)),
        }
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let _timer = metrics::global().request(Op::Link);
        let result = self.fs.link(ino.0, newparent.0, newname);
        self.new_entry(Op::Link, newparent, result, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let _timer = metrics::global().request(Op::Open);
        let backing = |fd: std::os::fd::BorrowedFd| reply.open_backing(fd).map(PassthroughId::new);
        match self.fs.open(ino.0, flags.0, backing) {
            Ok(o) => match o.backing.as_ref().and_then(|b| b.get::<BackingId>()) {
                Some(id) => reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), id),
                None => reply.opened(FileHandle(o.fh), OPEN_FLAGS),
            },
            Err(e) => reply.error(self.errno(Op::Open, e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let _timer = metrics::global().request(Op::Read);
        match self.fs.read(fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(self.errno(Op::Read, e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let _timer = metrics::global().request(Op::Write);
        match self.fs.write(fh.0, offset, data) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.errno(Op::Write, e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Flush);
        // Writes are write-through and locks are the kernel's: nothing to do
        // at close. ENOSYS tells the kernel to stop sending FLUSH at all,
        // saving a round trip per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Release);
        self.fs.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Fsync);
        match self.fs.fsync(fh.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(Op::Fsync, e)),
        }
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _timer = metrics::global().request(Op::Opendir);
        // ENOSYS once, and the kernel stops sending OPENDIR/RELEASEDIR and
        // opens directories with FOPEN_KEEP_CACHE | FOPEN_CACHE_DIR: a warm
        // listing then costs no round trip at all. READDIR arrives without
        // a handle; `listing.rs` keeps the snapshots it serves.
        reply.error(Errno::ENOSYS);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let _timer = metrics::global().request(Op::Readdir);
        let page = match self.fs.readdir(ino.0, offset) {
            Ok(p) => p,
            Err(e) => return reply.error(self.errno(Op::Readdir, e)),
        };
        for (i, e) in page.entries.iter().enumerate().skip(page.start) {
            let next = offset_after(page.generation, i);
            if reply.add(INodeNo(e.ino), next, file_type(e.kind), &e.name) {
                break;
            }
        }
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Fsyncdir);
        match self.fs.fsyncdir(ino.0, datasync) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(Op::Fsyncdir, e)),
        }
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        let _timer = metrics::global().request(Op::Statfs);
        match self.fs.statfs(ino.0) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(self.errno(Op::Statfs, e)),
        }
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Setxattr);
        match self.fs.setxattr(ino.0, name, value, flags) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(Op::Setxattr, e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let _timer = metrics::global().request(Op::Getxattr);
        self.xattr_reply(Op::Getxattr, self.fs.getxattr(ino.0, name), size, reply);
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _timer = metrics::global().request(Op::Listxattr);
        self.xattr_reply(Op::Listxattr, self.fs.listxattr(ino.0), size, reply);
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let _timer = metrics::global().request(Op::Removexattr);
        match self.fs.removexattr(ino.0, name) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(Op::Removexattr, e)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        let _timer = metrics::global().request(Op::Access);
        reply.ok(); // `default_permissions`: the kernel has checked
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let _timer = metrics::global().request(Op::Create);
        match self
            .fs
            .create(caller(req), parent.0, name, mode, umask, flags)
        {
            Ok((attr, fh)) => {
                reply.created(
                    &self.ttl(),
                    &file_attr(&attr),
                    GEN,
                    FileHandle(fh),
                    OPEN_FLAGS,
                );
                self.changed(parent);
            }
            Err(e) => reply.error(self.errno(Op::Create, e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let _timer = metrics::global().request(Op::Fallocate);
        match self.fs.fallocate(fh.0, offset, length, mode) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(self.errno(Op::Fallocate, e)),
        }
    }

    fn lseek(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        let _timer = metrics::global().request(Op::Lseek);
        match self.fs.lseek(fh.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(self.errno(Op::Lseek, e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _timer = metrics::global().request(Op::CopyFileRange);
        match self
            .fs
            .copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len)
        {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(self.errno(Op::CopyFileRange, e)),
        }
    }
}

impl FuseAdapter {
    fn xattr_reply(&self, op: Op, result: Result<Vec<u8>, FsError>, size: u32, reply: ReplyXattr) {
        match result {
            Ok(v) if size == 0 => reply.size(v.len() as u32),
            Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(libc::ERANGE)),
            Ok(v) => reply.data(&v),
            Err(e) => reply.error(self.errno(op, e)),
        }
    }
}
