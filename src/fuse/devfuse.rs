//! The `/dev/fuse` transport: fuser's session loop decodes each request,
//! `Handler` serves it, and this file only replies in fuser's types. It
//! also answers INIT, where the io_uring transport is asked for.

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{
    AccessFlags, BackingId, BsdFileFlags, CopyFileRangeFlags, Errno, FileHandle, Filesystem,
    FopenFlags, Generation, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLseek,
    ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use super::convert::{file_attr, file_type, set_time};
use super::handler::{self, Answer, Handler, XattrAnswer};
use super::uring::Offer;
use crate::fs::{Attr, Caller, PassthroughId, SetAttr};

pub struct FuseAdapter {
    handler: Arc<Handler>,
    /// Whether to ask the kernel for io_uring at INIT, and what it said.
    uring: Arc<Offer>,
}

impl FuseAdapter {
    pub fn new(handler: Arc<Handler>, uring: Arc<Offer>) -> FuseAdapter {
        FuseAdapter { handler, uring }
    }

    fn entry(&self, reply: ReplyEntry, answer: Answer<Attr>) {
        match answer {
            Ok(attr) => reply.entry(&self.handler.ttl(), &file_attr(&attr), GEN),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn attr(&self, reply: ReplyAttr, answer: Answer<Attr>) {
        match answer {
            Ok(attr) => reply.attr(&self.handler.ttl(), &file_attr(&attr)),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }
}

fn empty(reply: ReplyEmpty, answer: Answer<()>) {
    match answer {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(Errno::from_i32(e)),
    }
}

fn xattr(reply: ReplyXattr, answer: Answer<XattrAnswer>) {
    match answer {
        Ok(XattrAnswer::Size(n)) => reply.size(n),
        Ok(XattrAnswer::Data(v)) => reply.data(&v),
        Err(e) => reply.error(Errno::from_i32(e)),
    }
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.uid(),
        gid: req.gid(),
        pid: req.pid(),
    }
}

/// `handler::OPEN_FLAGS` in fuser's type.
const OPEN_FLAGS: FopenFlags = FopenFlags::from_bits_retain(handler::OPEN_FLAGS);
const GEN: Generation = Generation(0);

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Plain READDIR, no READDIRPLUS: inode numbers are derived from the
        // backing objects (see `fs/inode.rs`), so a listing gives the right
        // `d_ino` without looking up (and, cold, reading from disk) every
        // entry's inode.
        // FUSE_HANDLE_KILLPRIV_V2: the daemon clears set-ID bits on write
        // and truncate (the kernel says when), and the kernel stops asking
        // GETXATTR `security.capability` before every write.
        let wanted = InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        for flag in wanted.iter() {
            let _ = config.add_capabilities(flag);
        }
        // Passthrough is set up in OPEN replies: none without open handles.
        let mount = &self.handler.fs().config.mount;
        if mount.passthrough && mount.open_handles {
            if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() {
                let _ = config.set_max_stack_depth(1);
            } else {
                log::warn!("kernel lacks FUSE passthrough; reads go through the daemon");
            }
        }
        if self.uring.wanted() {
            let offered = config
                .add_capabilities(InitFlags::FUSE_OVER_IO_URING)
                .is_ok();
            if offered {
                // Every ring entry holds a buffer as large as the largest
                // request: one write of max_pages (1 MiB), not fuser's 16 MiB.
                let _ = config.set_max_write(super::uring::MAX_PAYLOAD as u32);
            }
            self.uring.kernel_answered(offered);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.entry(reply, self.handler.lookup(parent.0, name));
    }

    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.handler.forget(req.unique().0, ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.attr(reply, self.handler.getattr(ino.0, fh.map(|f| f.0)));
    }

    fn setattr(
        &self,
        req: &Request,
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
        let change = SetAttr {
            mode,
            uid,
            gid,
            size,
            atime: atime.map(set_time),
            mtime: mtime.map(set_time),
            fh: fh.map(|f| f.0),
            // fuser does not pass FATTR_KILL_SUIDGID on; the kernel sets it
            // for a truncate by a caller without CAP_FSETID (and for
            // chown, which clears the bits on the backing file anyway).
            kill_suidgid: size.is_some() && req.uid() != 0,
        };
        self.attr(reply, self.handler.setattr(ino.0, change));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.handler.readlink(ino.0) {
            Ok(target) => reply.data(&target),
            Err(e) => reply.error(Errno::from_i32(e)),
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
        let answer = self
            .handler
            .mknod(caller(req), parent.0, name, mode, umask, rdev);
        self.entry(reply, answer);
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
        let answer = self.handler.mkdir(caller(req), parent.0, name, mode, umask);
        self.entry(reply, answer);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.handler.unlink(parent.0, name));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.handler.rmdir(parent.0, name));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let answer = self
            .handler
            .symlink(caller(req), parent.0, link_name, target);
        self.entry(reply, answer);
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
        let answer = self
            .handler
            .rename(parent.0, name, newparent.0, newname, flags.bits());
        empty(reply, answer);
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        self.entry(reply, self.handler.link(ino.0, newparent.0, newname));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let backing = |fd: std::os::fd::BorrowedFd| reply.open_backing(fd).map(PassthroughId::new);
        match self.handler.open(ino.0, flags.0, backing) {
            Ok(o) => match o.backing.as_ref().and_then(|b| b.get::<BackingId>()) {
                Some(id) => reply.opened_passthrough(FileHandle(o.fh), FopenFlags::empty(), id),
                None => reply.opened(FileHandle(o.fh), OPEN_FLAGS),
            },
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        match self.handler.read(ino.0, fh.0, offset, size) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let kill = write_flags.contains(WriteFlags::FUSE_WRITE_KILL_SUIDGID);
        match self.handler.write(ino.0, fh.0, offset, data, flags.0, kill) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(Errno::from_i32(e)),
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
        reply.error(Errno::from_i32(self.handler.flush()));
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
        self.handler.release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(reply, self.handler.fsync(ino.0, fh.0, datasync));
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        reply.error(Errno::from_i32(self.handler.opendir()));
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listing = match self.handler.readdir(ino.0, offset) {
            Ok(l) => l,
            Err(e) => return reply.error(Errno::from_i32(e)),
        };
        for (e, next) in listing.entries() {
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
        empty(reply, self.handler.fsyncdir(ino.0, datasync));
    }

    fn statfs(&self, _req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        match self.handler.statfs(ino.0) {
            Ok(s) => reply.statfs(
                s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
            ),
            Err(e) => reply.error(Errno::from_i32(e)),
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
        empty(reply, self.handler.setxattr(ino.0, name, value, flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        xattr(reply, self.handler.getxattr(ino.0, name, size));
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        xattr(reply, self.handler.listxattr(ino.0, size));
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        empty(reply, self.handler.removexattr(ino.0, name));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        empty(reply, self.handler.access());
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
        let answer = self
            .handler
            .create(caller(req), parent.0, name, mode, umask, flags);
        match answer {
            Ok((attr, fh)) => reply.created(
                &self.handler.ttl(),
                &file_attr(&attr),
                GEN,
                FileHandle(fh),
                OPEN_FLAGS,
            ),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        empty(
            reply,
            self.handler.fallocate(ino.0, fh.0, offset, length, mode),
        );
    }

    fn lseek(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        match self.handler.lseek(ino.0, fh.0, offset, whence) {
            Ok(off) => reply.offset(off),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let from = (ino_in.0, fh_in.0);
        let to = (ino_out.0, fh_out.0);
        let answer = self
            .handler
            .copy_file_range(from, offset_in, to, offset_out, len);
        match answer {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(Errno::from_i32(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire value the ring transport sends is fuser's keep-cache flag.
    #[test]
    fn both_transports_open_with_keep_cache() {
        assert_eq!(OPEN_FLAGS, FopenFlags::FOPEN_KEEP_CACHE);
    }
}
