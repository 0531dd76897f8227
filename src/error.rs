//! Typed errors of the filesystem core, mapped to an errno in exactly one
//! place ([`FsError::errno`]).

use std::fmt;
use std::io;

use crate::quota::Refusal;

#[derive(Debug)]
pub enum FsError {
    /// An error from a backing partition syscall, passed on as is.
    Io(io::Error),
    /// A limit would be exceeded: `EDQUOT`.
    Quota(Refusal),
    /// `rename`/`link` between two partitions: `EXDEV`, so callers copy.
    CrossPartition,
    /// The kernel forgot an inode or handle we are asked about.
    Stale,
    /// A plain errno decided by the core (ENOENT, EEXIST, ...).
    Errno(i32),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Io(e) => e.raw_os_error().unwrap_or(libc::EIO),
            FsError::Quota(_) => libc::EDQUOT,
            FsError::CrossPartition => libc::EXDEV,
            FsError::Stale => libc::ESTALE,
            FsError::Errno(n) => *n,
        }
    }

    /// The last OS error, as `FsError::Io`.
    pub fn last_os() -> FsError {
        FsError::Io(io::Error::last_os_error())
    }
}

impl From<io::Error> for FsError {
    fn from(e: io::Error) -> Self {
        FsError::Io(e)
    }
}

impl From<Refusal> for FsError {
    fn from(r: Refusal) -> Self {
        FsError::Quota(r)
    }
}

impl fmt::Display for FsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsError::Io(e) => write!(f, "{e}"),
            FsError::Quota(r) => write!(f, "quota exceeded: {r}"),
            FsError::CrossPartition => write!(f, "cross-partition rename or link"),
            FsError::Stale => write!(f, "stale inode or handle"),
            FsError::Errno(n) => write!(f, "{}", io::Error::from_raw_os_error(*n)),
        }
    }
}
