//! Passthrough backing files for opens served over the ring. The kernel
//! registers them through ioctls on the `/dev/fuse` descriptor (any
//! descriptor of the connection will do); the id goes in the open reply.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

/// `fuse_backing_map`.
#[repr(C)]
struct BackingMap {
    fd: i32,
    flags: u32,
    padding: u64,
}

/// `_IOW(229, 1, struct fuse_backing_map)` and `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_OPEN: libc::c_ulong = 0x4010_e501;
const FUSE_DEV_IOC_BACKING_CLOSE: libc::c_ulong = 0x4004_e502;

/// The connection's `/dev/fuse` descriptor, shared by the queues.
#[derive(Clone)]
pub struct DevFuse(Arc<OwnedFd>);

impl DevFuse {
    pub fn new(fd: OwnedFd) -> DevFuse {
        DevFuse(Arc::new(fd))
    }

    pub fn raw(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// Registers `fd` as a backing file; closed again when the returned
    /// value (kept by the core while the inode is open) is dropped.
    pub fn open_backing(&self, fd: BorrowedFd) -> io::Result<RingBacking> {
        let map = BackingMap {
            fd: fd.as_raw_fd(),
            flags: 0,
            padding: 0,
        };
        // SAFETY: the ioctl reads one fuse_backing_map from a valid pointer.
        let id = unsafe { libc::ioctl(self.raw(), FUSE_DEV_IOC_BACKING_OPEN, &map) };
        if id < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RingBacking {
            dev: self.clone(),
            id,
        })
    }
}

pub struct RingBacking {
    dev: DevFuse,
    id: i32,
}

impl RingBacking {
    pub fn id(&self) -> i32 {
        self.id
    }
}

impl Drop for RingBacking {
    fn drop(&mut self) {
        let id = self.id as u32;
        // SAFETY: the ioctl reads one u32 from a valid pointer. An error
        // means the connection is gone, and the id with it.
        unsafe { libc::ioctl(self.dev.raw(), FUSE_DEV_IOC_BACKING_CLOSE, &id) };
    }
}
