//! Decoding a request that came over the ring, serving it through the
//! `Handler` (as the `/dev/fuse` transport does), and encoding the reply.
//!
//! The kernel splits each request in two: the opcode's fixed header (its
//! first argument) in the entry's `op_in`, and every other argument (names,
//! write data) in the payload buffer. A reply's arguments all go to the
//! payload buffer.

use std::ffi::OsStr;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use log::debug;

use super::abi::{self, Wire, op};
use super::backing::{DevFuse, RingBacking};
use crate::fs::{Attr, Caller, FileKind, PassthroughId, SetAttr, SetTime};
use crate::fuse::handler::{Answer, Handler, OPEN_FLAGS, XattrAnswer};

/// One request as the kernel put it in a ring entry.
struct Request<'a> {
    header: abi::InHeader,
    /// The opcode's fixed header (up to 128 bytes).
    op_in: &'a [u8],
    /// The other arguments, `payload_sz` bytes.
    payload: &'a [u8],
}

/// What goes back: the errno, or the reply's argument bytes.
pub type Reply = Answer<Vec<u8>>;

/// Serves the request in a ring entry and writes the reply's arguments
/// into `buf`, the entry's payload buffer, which holds the request's
/// `payload_len` payload bytes until then: the reply's length. READ is
/// read straight into `buf`, with no allocation or copy per READ.
pub fn serve_into(
    h: &Handler,
    dev: &DevFuse,
    header: abi::InHeader,
    op_in: &[u8],
    payload_len: usize,
    buf: &mut [u8],
) -> Answer<usize> {
    if header.opcode == op::READ {
        return read_into(h, &header, op_in, buf);
    }
    let request = Request {
        header,
        op_in,
        payload: &buf[..payload_len],
    };
    let bytes = serve(h, dev, &request)?;
    let out = buf.get_mut(..bytes.len()).ok_or(libc::EIO)?;
    out.copy_from_slice(&bytes);
    Ok(bytes.len())
}

/// Serves one request but READ (`serve_into`); those `Handler` serves
/// (and counts by operation) are counted as having come over the ring too.
fn serve(h: &Handler, dev: &DevFuse, req: &Request) -> Reply {
    let ino = req.header.nodeid;
    let reply = match req.header.opcode {
        op::LOOKUP => entry(h, h.lookup(ino, name(req.payload)?)),
        op::GETATTR => getattr(h, req),
        op::SETATTR => setattr(h, req),
        op::READLINK => h.readlink(ino),
        op::SYMLINK => symlink(h, req),
        op::MKNOD => mknod(h, req),
        op::MKDIR => mkdir(h, req),
        op::UNLINK => empty(h.unlink(ino, name(req.payload)?)),
        op::RMDIR => empty(h.rmdir(ino, name(req.payload)?)),
        op::RENAME => rename(h, req, false),
        op::RENAME2 => rename(h, req, true),
        op::LINK => link(h, req),
        op::OPEN => open(h, dev, req),
        op::WRITE => write(h, req),
        op::STATFS => statfs(h, ino),
        op::RELEASE => release(h, req),
        op::FSYNC => fsync(h, req, false),
        op::FSYNCDIR => fsync(h, req, true),
        op::SETXATTR => setxattr(h, req),
        op::GETXATTR => getxattr(h, req),
        op::LISTXATTR => xattr(h.listxattr(ino, arg::<abi::GetxattrIn>(req.op_in)?.size)),
        op::REMOVEXATTR => empty(h.removexattr(ino, name(req.payload)?)),
        op::FLUSH => Err(h.flush()),
        op::OPENDIR => Err(h.opendir()),
        op::READDIR => readdir(h, req),
        op::ACCESS => empty(h.access()),
        op::CREATE => create(h, req),
        op::FALLOCATE => fallocate(h, req),
        op::LSEEK => lseek(h, req),
        op::COPY_FILE_RANGE => copy_file_range(h, req),
        op::RELEASEDIR | op::DESTROY => return Ok(Vec::new()),
        // What fuser answers for what spoolfs does not implement.
        other => {
            debug!("opcode {other} over the ring: ENOSYS");
            return Err(libc::ENOSYS);
        }
    };
    crate::metrics::global().served_over_io_uring();
    reply
}

fn caller(req: &Request) -> Caller {
    Caller {
        uid: req.header.uid,
        gid: req.header.gid,
        pid: req.header.pid,
    }
}

/// The opcode's fixed header; a short one is the kernel's mistake, not
/// something to guess around.
fn arg<T: Wire>(bytes: &[u8]) -> Answer<T> {
    T::read(bytes).ok_or(libc::EIO)
}

/// A NUL-terminated name at the start of `bytes`, and what follows it.
fn name_and_rest(bytes: &[u8]) -> Answer<(&OsStr, &[u8])> {
    let end = bytes.iter().position(|&b| b == 0).ok_or(libc::EIO)?;
    Ok((OsStr::from_bytes(&bytes[..end]), &bytes[end + 1..]))
}

fn name(bytes: &[u8]) -> Answer<&OsStr> {
    name_and_rest(bytes).map(|(n, _)| n)
}

fn wire<T: Wire>(value: T) -> Reply {
    Ok(value.as_bytes().to_vec())
}

fn empty(answer: Answer<()>) -> Reply {
    answer.map(|()| Vec::new())
}

fn entry(h: &Handler, answer: Answer<Attr>) -> Reply {
    wire(entry_out(h.ttl(), &answer?))
}

fn entry_out(ttl: Duration, attr: &Attr) -> abi::EntryOut {
    abi::EntryOut {
        nodeid: attr.ino,
        generation: 0,
        entry_valid: ttl.as_secs(),
        attr_valid: ttl.as_secs(),
        entry_valid_nsec: ttl.subsec_nanos(),
        attr_valid_nsec: ttl.subsec_nanos(),
        attr: wire_attr(attr),
    }
}

fn attr_out(h: &Handler, answer: Answer<Attr>) -> Reply {
    let ttl = h.ttl();
    wire(abi::AttrOut {
        attr_valid: ttl.as_secs(),
        attr_valid_nsec: ttl.subsec_nanos(),
        dummy: 0,
        attr: wire_attr(&answer?),
    })
}

fn wire_attr(a: &Attr) -> abi::Attr {
    let (atime, atimensec) = wire_time(a.atime);
    let (mtime, mtimensec) = wire_time(a.mtime);
    let (ctime, ctimensec) = wire_time(a.ctime);
    abi::Attr {
        ino: a.ino,
        size: a.size,
        blocks: a.blocks,
        atime,
        mtime,
        ctime,
        atimensec,
        mtimensec,
        ctimensec,
        mode: kind_bits(a.kind) | u32::from(a.perm),
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// Seconds (two's complement before 1970) and nanoseconds in `0..1e9`.
fn wire_time(t: SystemTime) -> (u64, u32) {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs(), d.subsec_nanos()),
        Err(e) => {
            let d = e.duration();
            let (secs, nanos) = (d.as_secs() as i64, d.subsec_nanos());
            if nanos == 0 {
                ((-secs) as u64, 0)
            } else {
                ((-secs - 1) as u64, 1_000_000_000 - nanos)
            }
        }
    }
}

fn kind_bits(kind: FileKind) -> u32 {
    match kind {
        FileKind::Directory => libc::S_IFDIR,
        FileKind::RegularFile => libc::S_IFREG,
        FileKind::Symlink => libc::S_IFLNK,
        FileKind::NamedPipe => libc::S_IFIFO,
        FileKind::Socket => libc::S_IFSOCK,
        FileKind::CharDevice => libc::S_IFCHR,
        FileKind::BlockDevice => libc::S_IFBLK,
    }
}

fn getattr(h: &Handler, req: &Request) -> Reply {
    let a: abi::GetattrIn = arg(req.op_in)?;
    let fh = (a.getattr_flags & abi::FUSE_GETATTR_FH != 0).then_some(a.fh);
    attr_out(h, h.getattr(req.header.nodeid, fh))
}

fn setattr(h: &Handler, req: &Request) -> Reply {
    use abi::fattr::*;
    let a: abi::SetattrIn = arg(req.op_in)?;
    let given = |bit: u32| a.valid & bit != 0;
    let time = |bit, now, sec: u64, nsec| {
        given(bit).then(|| match given(now) {
            true => SetTime::Now,
            false => SetTime::At {
                sec: sec as i64,
                nsec,
            },
        })
    };
    let change = SetAttr {
        mode: given(MODE).then_some(a.mode),
        uid: given(UID).then_some(a.uid),
        gid: given(GID).then_some(a.gid),
        size: given(SIZE).then_some(a.size),
        atime: time(ATIME, ATIME_NOW, a.atime, a.atimensec),
        mtime: time(MTIME, MTIME_NOW, a.mtime, a.mtimensec),
        fh: given(FH).then_some(a.fh),
        kill_suidgid: given(KILL_SUIDGID),
    };
    attr_out(h, h.setattr(req.header.nodeid, change))
}

fn symlink(h: &Handler, req: &Request) -> Reply {
    let (link_name, rest) = name_and_rest(req.payload)?;
    let target = Path::new(name(rest)?);
    entry(
        h,
        h.symlink(caller(req), req.header.nodeid, link_name, target),
    )
}

fn mknod(h: &Handler, req: &Request) -> Reply {
    let a: abi::MknodIn = arg(req.op_in)?;
    let name = name(req.payload)?;
    let answer = h.mknod(
        caller(req),
        req.header.nodeid,
        name,
        a.mode,
        a.umask,
        a.rdev,
    );
    entry(h, answer)
}

fn mkdir(h: &Handler, req: &Request) -> Reply {
    let a: abi::MkdirIn = arg(req.op_in)?;
    let name = name(req.payload)?;
    entry(
        h,
        h.mkdir(caller(req), req.header.nodeid, name, a.mode, a.umask),
    )
}

fn rename(h: &Handler, req: &Request, with_flags: bool) -> Reply {
    let (newdir, flags) = if with_flags {
        let a: abi::Rename2In = arg(req.op_in)?;
        (a.newdir, a.flags)
    } else {
        (arg::<abi::RenameIn>(req.op_in)?.newdir, 0)
    };
    let (old, rest) = name_and_rest(req.payload)?;
    let new = name(rest)?;
    empty(h.rename(req.header.nodeid, old, newdir, new, flags))
}

fn link(h: &Handler, req: &Request) -> Reply {
    let a: abi::LinkIn = arg(req.op_in)?;
    let newname = name(req.payload)?;
    entry(h, h.link(a.oldnodeid, req.header.nodeid, newname))
}

fn open(h: &Handler, dev: &DevFuse, req: &Request) -> Reply {
    let a: abi::OpenIn = arg(req.op_in)?;
    let make_backing = |fd: BorrowedFd| dev.open_backing(fd).map(PassthroughId::new);
    let opened = h.open(req.header.nodeid, a.flags as i32, make_backing)?;
    let (open_flags, backing_id) = match &opened.backing {
        None => (OPEN_FLAGS, 0),
        Some(b) => match b.get::<RingBacking>() {
            Some(backing) => (abi::FOPEN_PASSTHROUGH, backing.id()),
            // Registered through the other transport, before the ring was
            // ready: its id is fuser's, out of reach here.
            None => {
                h.release(opened.fh);
                return Err(libc::EIO);
            }
        },
    };
    wire(abi::OpenOut {
        fh: opened.fh,
        open_flags,
        backing_id,
    })
}

/// READ, straight into the entry's payload buffer (which the request
/// left empty): the reply's length.
fn read_into(h: &Handler, header: &abi::InHeader, op_in: &[u8], out: &mut [u8]) -> Answer<usize> {
    let a: abi::ReadIn = arg(op_in)?;
    let len = (a.size as usize).min(out.len());
    let n = h.read_into(header.nodeid, a.fh, a.offset, &mut out[..len])?;
    crate::metrics::global().served_over_io_uring();
    Ok(n)
}

fn write(h: &Handler, req: &Request) -> Reply {
    let a: abi::WriteIn = arg(req.op_in)?;
    let data = req.payload.get(..a.size as usize).ok_or(libc::EIO)?;
    let kill = a.write_flags & abi::FUSE_WRITE_KILL_SUIDGID != 0;
    let written = h.write(
        req.header.nodeid,
        a.fh,
        a.offset,
        data,
        a.flags as i32,
        kill,
    )?;
    wire(abi::WriteOut {
        size: written,
        padding: 0,
    })
}

fn statfs(h: &Handler, ino: u64) -> Reply {
    let s = h.statfs(ino)?;
    wire(abi::StatfsOut {
        blocks: s.blocks,
        bfree: s.bfree,
        bavail: s.bavail,
        files: s.files,
        ffree: s.ffree,
        bsize: s.bsize,
        namelen: s.namelen,
        frsize: s.frsize,
        padding: 0,
        spare: [0; 6],
    })
}

fn release(h: &Handler, req: &Request) -> Reply {
    let a: abi::ReleaseIn = arg(req.op_in)?;
    h.release(a.fh);
    Ok(Vec::new())
}

fn fsync(h: &Handler, req: &Request, dir: bool) -> Reply {
    let a: abi::FsyncIn = arg(req.op_in)?;
    let datasync = a.fsync_flags & abi::FUSE_FSYNC_FDATASYNC != 0;
    empty(match dir {
        true => h.fsyncdir(req.header.nodeid, datasync),
        false => h.fsync(req.header.nodeid, a.fh, datasync),
    })
}

fn setxattr(h: &Handler, req: &Request) -> Reply {
    let a: abi::SetxattrIn = arg(req.op_in)?;
    let (name, rest) = name_and_rest(req.payload)?;
    let value = rest.get(..a.size as usize).ok_or(libc::EIO)?;
    empty(h.setxattr(req.header.nodeid, name, value, a.flags as i32))
}

fn getxattr(h: &Handler, req: &Request) -> Reply {
    let a: abi::GetxattrIn = arg(req.op_in)?;
    xattr(h.getxattr(req.header.nodeid, name(req.payload)?, a.size))
}

fn xattr(answer: Answer<XattrAnswer>) -> Reply {
    match answer? {
        XattrAnswer::Size(size) => wire(abi::GetxattrOut { size, padding: 0 }),
        XattrAnswer::Data(value) => Ok(value),
    }
}

/// `fuse_dirent` records, 8-byte aligned, as many as fit in `size`.
fn readdir(h: &Handler, req: &Request) -> Reply {
    let a: abi::ReadIn = arg(req.op_in)?;
    let listing = h.readdir(req.header.nodeid, a.offset)?;
    let mut out = Vec::with_capacity(a.size as usize);
    for (e, next) in listing.entries() {
        let name = e.name.as_bytes();
        let unpadded = std::mem::size_of::<abi::Dirent>() + name.len();
        let record = unpadded.next_multiple_of(8);
        if out.len() + record > a.size as usize {
            break;
        }
        let dirent = abi::Dirent {
            ino: e.ino,
            off: next,
            namelen: name.len() as u32,
            kind: kind_bits(e.kind) >> 12,
        };
        out.extend_from_slice(dirent.as_bytes());
        out.extend_from_slice(name);
        out.resize(out.len() + record - unpadded, 0);
    }
    Ok(out)
}

fn create(h: &Handler, req: &Request) -> Reply {
    let a: abi::CreateIn = arg(req.op_in)?;
    let name = name(req.payload)?;
    let who = caller(req);
    let (attr, fh) = h.create(
        who,
        req.header.nodeid,
        name,
        a.mode,
        a.umask,
        a.flags as i32,
    )?;
    wire(abi::CreateOut {
        entry: entry_out(h.ttl(), &attr),
        open: abi::OpenOut {
            fh,
            open_flags: OPEN_FLAGS,
            backing_id: 0,
        },
    })
}

fn fallocate(h: &Handler, req: &Request) -> Reply {
    let a: abi::FallocateIn = arg(req.op_in)?;
    let ino = req.header.nodeid;
    empty(h.fallocate(ino, a.fh, a.offset, a.length, a.mode as i32))
}

fn lseek(h: &Handler, req: &Request) -> Reply {
    let a: abi::LseekIn = arg(req.op_in)?;
    let offset = h.lseek(req.header.nodeid, a.fh, a.offset as i64, a.whence as i32)?;
    wire(abi::LseekOut {
        offset: offset as u64,
    })
}

fn copy_file_range(h: &Handler, req: &Request) -> Reply {
    let a: abi::CopyFileRangeIn = arg(req.op_in)?;
    let from = (req.header.nodeid, a.fh_in);
    let to = (a.nodeid_out, a.fh_out);
    let copied = h.copy_file_range(from, a.off_in, to, a.off_out, a.len)?;
    wire(abi::WriteOut {
        size: copied,
        padding: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_before_1970_have_nanoseconds_in_range() {
        let t = UNIX_EPOCH - Duration::new(10, 250_000_000);
        assert_eq!(wire_time(t), ((-11i64) as u64, 750_000_000));
        let t = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(wire_time(t), ((-10i64) as u64, 0));
        let t = UNIX_EPOCH + Duration::new(5, 7);
        assert_eq!(wire_time(t), (5, 7));
    }

    #[test]
    fn names_end_at_their_nul() {
        let (first, rest) = name_and_rest(b"old\0new\0").unwrap();
        assert_eq!(first, OsStr::new("old"));
        assert_eq!(name(rest).unwrap(), OsStr::new("new"));
        assert_eq!(name(b"unterminated"), Err(libc::EIO));
    }

    #[test]
    fn dirent_types_are_the_dt_values() {
        assert_eq!(kind_bits(FileKind::Directory) >> 12, libc::DT_DIR as u32);
        assert_eq!(kind_bits(FileKind::RegularFile) >> 12, libc::DT_REG as u32);
        assert_eq!(kind_bits(FileKind::Symlink) >> 12, libc::DT_LNK as u32);
    }
}
