//! The core's own types for what it answers: attributes, file types,
//! the passthrough backing of an open, times for `setattr`. Transports
//! convert them to their wire format (`src/fuse.rs` for `/dev/fuse`); the
//! core never names a transport's types.

use std::any::Any;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The kind of a filesystem object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FileKind {
    Directory,
    RegularFile,
    Symlink,
    NamedPipe,
    Socket,
    CharDevice,
    BlockDevice,
}

impl FileKind {
    /// From the `S_IFMT` bits of a mode.
    pub fn of_mode(mode: u32) -> FileKind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => FileKind::Directory,
            libc::S_IFLNK => FileKind::Symlink,
            libc::S_IFIFO => FileKind::NamedPipe,
            libc::S_IFSOCK => FileKind::Socket,
            libc::S_IFCHR => FileKind::CharDevice,
            libc::S_IFBLK => FileKind::BlockDevice,
            _ => FileKind::RegularFile,
        }
    }
}

/// The attributes of an object as the caller sees them: the backing
/// `lstat` with the filesystem's own inode number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: SystemTime,
    pub mtime: SystemTime,
    pub ctime: SystemTime,
    pub kind: FileKind,
    /// Permission bits (`0o7777`).
    pub perm: u16,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

impl Attr {
    pub fn from_stat(ino: u64, st: &libc::stat) -> Attr {
        Attr {
            ino,
            size: st.st_size as u64,
            blocks: st.st_blocks as u64,
            atime: time(st.st_atime, st.st_atime_nsec),
            mtime: time(st.st_mtime, st.st_mtime_nsec),
            ctime: time(st.st_ctime, st.st_ctime_nsec),
            kind: FileKind::of_mode(st.st_mode),
            perm: (st.st_mode & 0o7777) as u16,
            nlink: st.st_nlink as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            rdev: st.st_rdev as u32,
            blksize: st.st_blksize as u32,
        }
    }

    /// What a lookup of an absent name answers where the kernel may keep
    /// the absence: node id 0 (a "negative entry").
    pub fn absent() -> Attr {
        Attr {
            ino: 0,
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            kind: FileKind::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 0,
        }
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    if sec >= 0 {
        UNIX_EPOCH + Duration::new(sec as u64, nsec as u32)
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + Duration::from_nanos(nsec as u64)
    }
}

/// A time `setattr` sets: a given one (as `utimensat` takes it: seconds
/// since 1970, possibly negative, and nanoseconds 0..1e9), or the current
/// time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetTime {
    At { sec: i64, nsec: u32 },
    Now,
}

/// A file registered with the kernel for passthrough reads, as the
/// transport made it (for `/dev/fuse`, the adapter's backing id). The core
/// only keeps it alive while passthrough opens of the inode remain: the
/// kernel closes it when the transport's value is dropped.
#[derive(Clone)]
pub struct PassthroughId(Arc<dyn Any + Send + Sync>);

impl PassthroughId {
    pub fn new<T: Any + Send + Sync>(id: T) -> PassthroughId {
        PassthroughId(Arc::new(id))
    }

    /// The transport's own value, if it is a `T`.
    pub fn get<T: Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for PassthroughId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PassthroughId")
    }
}
