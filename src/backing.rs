//! Safe access to the backing partitions.
//!
//! Every object is reached through an `O_PATH` descriptor and every call is
//! relative to a directory descriptor with exactly one, validated name
//! component, never following symlinks. So no `..`, no symlink planted in a
//! backing directory and no rename race can make the daemon touch anything
//! outside the partition roots: there is no path walk to subvert.

use std::ffi::{CStr, CString, OsStr, OsString};
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::Path;

use crate::error::{FsError, FsResult};

const NAME_MAX: usize = 255;
const EMPTY: &CStr = c"";

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A byte count from a syscall, or its error.
pub fn cvt_len(n: isize) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: `fd` was just returned by the kernel and is owned by nobody else.
    cvt(fd).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A name component as the backing syscalls want it: non-empty, no `/`, not
/// `.` or `..`, at most 255 bytes.
pub fn component(name: &OsStr) -> FsResult<CString> {
    let bytes = name.as_bytes();
    if bytes.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(FsError::BadName);
    }
    CString::new(bytes).map_err(|_| FsError::BadName)
}

/// Opens a partition root (a configured, trusted path).
pub fn open_root(path: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    owned(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
}

/// An `O_PATH` handle on `name` in `dir`, the symlink itself if it is one.
pub fn lookup_at(dir: BorrowedFd, name: &CStr) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })
}

/// Walks `path` (relative, one component at a time, never following a
/// symlink) from `dir`: an `O_PATH` descriptor on what it names.
pub fn lookup_path(dir: BorrowedFd, path: &Path) -> io::Result<OwnedFd> {
    let mut here = dir.try_clone_to_owned()?;
    for part in path.components() {
        let name = CString::new(part.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        here = lookup_at(here.as_fd_ref(), &name)?;
    }
    Ok(here)
}

/// `lstat` of `name` in `dir`.
pub fn stat_at(dir: BorrowedFd, name: &CStr) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let flags = libc::AT_SYMLINK_NOFOLLOW;
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), st.as_mut_ptr(), flags) })?;
    Ok(unsafe { st.assume_init() })
}

/// `stat` of the object behind any descriptor, `O_PATH` ones included.
pub fn stat_fd(fd: BorrowedFd) -> io::Result<libc::stat> {
    let mut st = MaybeUninit::<libc::stat>::uninit();
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    cvt(unsafe { libc::fstatat(fd.as_raw_fd(), EMPTY.as_ptr(), st.as_mut_ptr(), flags) })?;
    Ok(unsafe { st.assume_init() })
}

/// `/proc/self/fd/N`: reaches exactly the object behind an `O_PATH`
/// descriptor without re-resolving any name.
pub fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL in a formatted number")
}

/// Opens the object behind an `O_PATH` descriptor for I/O.
pub fn reopen(fd: BorrowedFd, flags: i32) -> io::Result<OwnedFd> {
    let p = proc_path(fd.as_raw_fd());
    let dropped = libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_NOFOLLOW;
    let flags = (flags & !dropped) | libc::O_CLOEXEC;
    owned(unsafe { libc::open(p.as_ptr(), flags) })
}

/// A kernel file handle (`name_to_handle_at`): names an inode of one
/// filesystem without holding a descriptor. The bytes are a whole
/// `struct file_handle`, ready for `open_by_handle_at`.
pub struct Handle(Box<[u32]>); // u32s: file_handle's alignment

const HANDLE_HEADER: usize = std::mem::size_of::<libc::file_handle>();
const MAX_HANDLE_SZ: usize = 128;

/// The handle of the object behind `fd`; `None` where the filesystem
/// cannot give one (then keep the descriptor).
pub fn handle_of(fd: BorrowedFd) -> Option<Handle> {
    let mut buf = vec![0u32; (HANDLE_HEADER + MAX_HANDLE_SZ) / 4];
    let fh = buf.as_mut_ptr() as *mut libc::file_handle;
    let mut mount_id = 0;
    // SAFETY: buf holds a file_handle header and MAX_HANDLE_SZ bytes after it.
    let r = unsafe {
        (*fh).handle_bytes = MAX_HANDLE_SZ as u32;
        libc::name_to_handle_at(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            fh,
            &mut mount_id,
            libc::AT_EMPTY_PATH,
        )
    };
    if r != 0 {
        return None;
    }
    let len = HANDLE_HEADER + unsafe { (*fh).handle_bytes } as usize;
    buf.truncate(len.div_ceil(4));
    Some(Handle(buf.into_boxed_slice()))
}

/// An `O_PATH` descriptor on the object `handle` names, on the filesystem
/// of `mount_fd`. A deleted object gives `ESTALE`.
pub fn open_handle(mount_fd: BorrowedFd, handle: &Handle) -> io::Result<OwnedFd> {
    let mut buf = handle.0.to_vec(); // the kernel takes a mutable pointer
    let fh = buf.as_mut_ptr() as *mut libc::file_handle;
    let flags = libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    owned(unsafe { libc::open_by_handle_at(mount_fd.as_raw_fd(), fh, flags) })
}

/// Creates and opens a new regular file (`O_EXCL`: never an existing one).
pub fn create_at(dir: BorrowedFd, name: &CStr, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let flags = flags | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode) })
}

pub fn mkdir_at(dir: BorrowedFd, name: &CStr, mode: u32) -> io::Result<()> {
    cvt(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) }).map(drop)
}

pub fn mknod_at(dir: BorrowedFd, name: &CStr, mode: u32, rdev: u64) -> io::Result<()> {
    cvt(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, rdev) }).map(drop)
}

pub fn symlink_at(target: &OsStr, dir: BorrowedFd, name: &CStr) -> io::Result<()> {
    let t = CString::new(target.as_bytes())?;
    cvt(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), name.as_ptr()) }).map(drop)
}

pub fn unlink_at(dir: BorrowedFd, name: &CStr, is_dir: bool) -> io::Result<()> {
    let flags = if is_dir { libc::AT_REMOVEDIR } else { 0 };
    cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) }).map(drop)
}

/// `renameat2`, the native atomic rename with its flags.
pub fn rename_at(
    old_dir: BorrowedFd,
    old: &CStr,
    new_dir: BorrowedFd,
    new: &CStr,
    flags: u32,
) -> io::Result<()> {
    let ret = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            old_dir.as_raw_fd(),
            old.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            flags,
        )
    };
    cvt(ret as libc::c_int).map(drop)
}

/// A new hard link to the object behind `target` (needs CAP_DAC_READ_SEARCH,
/// which the root daemon has).
pub fn link_at(target: BorrowedFd, new_dir: BorrowedFd, new: &CStr) -> io::Result<()> {
    let ret = unsafe {
        libc::linkat(
            target.as_raw_fd(),
            EMPTY.as_ptr(),
            new_dir.as_raw_fd(),
            new.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    cvt(ret).map(drop)
}

pub fn readlink_fd(fd: BorrowedFd) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    let n = unsafe {
        libc::readlinkat(
            fd.as_raw_fd(),
            EMPTY.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf.truncate(cvt_len(n)?);
    Ok(buf)
}

pub fn chown_fd(fd: BorrowedFd, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let uid = uid.unwrap_or(u32::MAX);
    let gid = gid.unwrap_or(u32::MAX);
    let flags = libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW;
    cvt(unsafe { libc::fchownat(fd.as_raw_fd(), EMPTY.as_ptr(), uid, gid, flags) }).map(drop)
}

pub fn chmod_fd(fd: BorrowedFd, mode: u32) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    cvt(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// Clears set-user-ID, and set-group-ID where group execution makes it
/// mean that (not mandatory locking), as a write by an unprivileged user
/// does. The daemon writes as root, which keeps them, so it clears them
/// itself when the kernel says the writer could not have.
pub fn kill_suidgid(fd: BorrowedFd) -> io::Result<()> {
    let mode = stat_fd(fd)?.st_mode & 0o7777;
    let mut kept = mode & !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        kept &= !libc::S_ISGID;
    }
    if kept == mode {
        return Ok(());
    }
    chmod_fd(fd, kept)
}

pub fn truncate_fd(fd: BorrowedFd, size: u64) -> io::Result<()> {
    let p = proc_path(fd.as_raw_fd());
    cvt(unsafe { libc::truncate(p.as_ptr(), size as libc::off_t) }).map(drop)
}

/// `utimensat`; `None` leaves a time unchanged (`UTIME_OMIT`).
pub fn utimens_fd(
    fd: BorrowedFd,
    atime: Option<libc::timespec>,
    mtime: Option<libc::timespec>,
) -> io::Result<()> {
    let omit = libc::timespec {
        tv_sec: 0,
        tv_nsec: libc::UTIME_OMIT,
    };
    let times = [atime.unwrap_or(omit), mtime.unwrap_or(omit)];
    let p = proc_path(fd.as_raw_fd());
    cvt(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) }).map(drop)
}

/// `fsync`, or `fdatasync` when `datasync`.
pub fn sync_fd(fd: BorrowedFd, datasync: bool) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    cvt(unsafe {
        if datasync {
            libc::fdatasync(raw)
        } else {
            libc::fsync(raw)
        }
    })
    .map(drop)
}

/// `ftruncate` of an open descriptor.
pub fn ftruncate(fd: BorrowedFd, size: u64) -> io::Result<()> {
    cvt(unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) }).map(drop)
}

pub fn fallocate(fd: BorrowedFd, mode: i32, offset: u64, length: u64) -> io::Result<()> {
    let (offset, length) = (offset as libc::off_t, length as libc::off_t);
    cvt(unsafe { libc::fallocate(fd.as_raw_fd(), mode, offset, length) }).map(drop)
}

pub fn lseek(fd: BorrowedFd, offset: i64, whence: i32) -> io::Result<i64> {
    let r = unsafe { libc::lseek(fd.as_raw_fd(), offset, whence) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn copy_file_range(
    fd_in: BorrowedFd,
    off_in: u64,
    fd_out: BorrowedFd,
    off_out: u64,
    len: u64,
) -> io::Result<usize> {
    let mut oi = off_in as libc::loff_t;
    let mut oo = off_out as libc::loff_t;
    let n = unsafe {
        libc::copy_file_range(
            fd_in.as_raw_fd(),
            &mut oi,
            fd_out.as_raw_fd(),
            &mut oo,
            len as usize,
            0,
        )
    };
    cvt_len(n)
}

/// `getxattr` of a path (a `/proc/self/fd` path: see `fs/xattr.rs`).
pub fn getxattr(path: &CStr, name: &CStr) -> io::Result<Vec<u8>> {
    sized_call(|buf, len| unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf, len) })
}

pub fn listxattr(path: &CStr) -> io::Result<Vec<u8>> {
    sized_call(|buf, len| unsafe { libc::listxattr(path.as_ptr(), buf.cast(), len) })
}

pub fn setxattr(path: &CStr, name: &CStr, value: &[u8], flags: i32) -> io::Result<()> {
    let (v, n) = (value.as_ptr().cast(), value.len());
    cvt(unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), v, n, flags) }).map(drop)
}

pub fn removexattr(path: &CStr, name: &CStr) -> io::Result<()> {
    cvt(unsafe { libc::removexattr(path.as_ptr(), name.as_ptr()) }).map(drop)
}

/// Runs a size-then-fill xattr call, growing the buffer if it raced.
fn sized_call(call: impl Fn(*mut libc::c_void, usize) -> isize) -> io::Result<Vec<u8>> {
    loop {
        let need = cvt_len(call(std::ptr::null_mut(), 0))?;
        let mut buf = vec![0u8; need];
        match cvt_len(call(buf.as_mut_ptr().cast(), buf.len())) {
            Ok(got) => {
                buf.truncate(got);
                return Ok(buf);
            }
            Err(e) if e.raw_os_error() == Some(libc::ERANGE) => {}
            Err(e) => return Err(e),
        }
    }
}

pub fn statvfs_fd(fd: BorrowedFd) -> io::Result<libc::statvfs> {
    let mut st = MaybeUninit::<libc::statvfs>::uninit();
    cvt(unsafe { libc::fstatvfs(fd.as_raw_fd(), st.as_mut_ptr()) })?;
    Ok(unsafe { st.assume_init() })
}

/// One entry of a backing directory.
pub struct DirEntry {
    pub name: OsString,
    pub d_type: u8,
    pub ino: u64,
}

/// Every entry of a backing directory except `.` and `..`.
pub fn read_dir(dir: BorrowedFd) -> io::Result<Vec<DirEntry>> {
    let fd = reopen(dir, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let raw = fd.as_raw_fd();
    // SAFETY: fdopendir takes ownership of `raw`; closedir below releases it.
    let stream = unsafe { libc::fdopendir(raw) };
    if stream.is_null() {
        return Err(io::Error::last_os_error());
    }
    std::mem::forget(fd);
    let mut out = Vec::new();
    loop {
        let ent = unsafe { libc::readdir64(stream) };
        if ent.is_null() {
            break;
        }
        let ent = unsafe { &*ent };
        let name = unsafe { CStr::from_ptr(ent.d_name.as_ptr()) }.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push(DirEntry {
            name: OsString::from_vec(name.to_vec()),
            d_type: ent.d_type,
            ino: ent.d_ino,
        });
    }
    unsafe { libc::closedir(stream) };
    Ok(out)
}

/// Reads at most `limit` bytes of `name` in `dir`, refusing symlinks and
/// anything that is not a regular file (used for `cyrus.header`).
pub fn read_small_file(dir: BorrowedFd, name: &CStr, limit: usize) -> io::Result<Vec<u8>> {
    let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK;
    let fd = owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    let st = stat_fd(fd.as_fd_ref())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut buf = vec![0u8; limit];
    let mut len = 0;
    while len < limit {
        let n = pread(fd.as_fd_ref(), &mut buf[len..], len as u64)?;
        if n == 0 {
            break;
        }
        len += n;
    }
    buf.truncate(len);
    Ok(buf)
}

pub fn pread(fd: BorrowedFd, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let n = unsafe {
        libc::pread(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            offset as libc::off_t,
        )
    };
    cvt_len(n)
}

/// `sync_flags`: the caller's `O_SYNC`/`O_DSYNC`, for a descriptor that
/// was not opened with them (`pwritev2` with `RWF_SYNC`/`RWF_DSYNC`).
pub fn pwrite(fd: BorrowedFd, buf: &[u8], offset: u64, sync_flags: i32) -> io::Result<usize> {
    let rwf = if sync_flags & libc::O_SYNC == libc::O_SYNC {
        libc::RWF_SYNC
    } else if sync_flags & libc::O_DSYNC != 0 {
        libc::RWF_DSYNC
    } else {
        0
    };
    let iov = libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let n = unsafe { libc::pwritev2(fd.as_raw_fd(), &iov, 1, offset as libc::off_t, rwf) };
    cvt_len(n)
}

/// Small convenience so call sites read `fd.as_fd_ref()`.
pub trait AsFdRef {
    fn as_fd_ref(&self) -> BorrowedFd<'_>;
}

impl AsFdRef for OwnedFd {
    fn as_fd_ref(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.as_fd()
    }
}

/// Raises the descriptor limit as far as the kernel allows (`fs.nr_open`;
/// the daemon is root) and returns the limit in force. File nodes hold
/// descriptors only within a budget derived from it (`fs/anchor.rs`).
pub fn raise_fd_limit() -> u64 {
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok());
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 1024;
        }
        let want = nr_open.unwrap_or(lim.rlim_max).max(lim.rlim_max);
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: want,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
            return want;
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 {
            return lim.rlim_max;
        }
        lim.rlim_cur
    }
}
