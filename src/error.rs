//! Typed errors of the filesystem core. Each variant names a reason that
//! matters to operators or tests; the errno a transport answers with is
//! chosen in exactly one place, [`FsError::errno`].
//!
//! Logging: the reasons an operator must see are logged where they are
//! decided, with their context — a quota refusal (`warn`, with mailbox,
//! tenant, limit and bytes), a cross-partition rename or link (`info`, with
//! both paths), a partition failing (`warn`, with its name). Everything
//! else is an everyday answer (a lookup that finds nothing, `mkdir` of an
//! existing name) that the adapter logs at `debug`.

use std::fmt;
use std::io;

use crate::quota::Refusal;

#[derive(Debug)]
pub enum FsError {
    /// No such name (`ENOENT`).
    NotFound,
    /// The name exists already (`EEXIST`).
    Exists,
    /// A directory to remove or replace has entries (`ENOTEMPTY`).
    NotEmpty,
    /// A directory was needed (`ENOTDIR`).
    NotDir,
    /// A directory where a non-directory was needed (`EISDIR`).
    IsDir,
    /// Not permitted for this kind of object, e.g. a hard link to a
    /// directory (`EPERM`).
    Permission,
    /// A name that is empty, `.`, `..`, or holds `/` or NUL (`EINVAL`).
    BadName,
    /// A name longer than `NAME_MAX` (`ENAMETOOLONG`).
    NameTooLong,
    /// The operation does not apply to this kind of object, e.g. `open` of
    /// a directory or `readlink` of a file (`EINVAL`).
    WrongKind,
    /// No open file with this handle (`EBADF`).
    BadHandle,
    /// A writer while the file is open for passthrough reads (`ETXTBSY`;
    /// see SEMANTICS.md).
    PassthroughBusy,
    /// A limit would be exceeded (`EDQUOT`).
    Quota(Refusal),
    /// `rename`/`link` between two partitions (`EXDEV`, so callers copy).
    CrossPartition,
    /// The kernel forgot an inode or handle we are asked about (`ESTALE`).
    Stale,
    /// Extended attributes are off (`[mount] xattrs = false`): `ENOSYS`,
    /// which tells the kernel to stop sending that kind of request.
    XattrsOff,
    /// Per-file descriptors (`[mount] open_handles = false`): OPEN is
    /// answered `ENOSYS`, and the kernel opens files without asking.
    OpensByKernel,
    /// A partition failed (I/O error, read-only, full): its name, and the
    /// error as the backing call returned it.
    Partition { name: String, source: io::Error },
    /// Any other error from a backing syscall, passed on as is.
    Io(io::Error),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    /// The errno a transport answers with: the one place errors become one.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::Permission => libc::EPERM,
            FsError::BadName | FsError::WrongKind => libc::EINVAL,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::BadHandle => libc::EBADF,
            FsError::PassthroughBusy => libc::ETXTBSY,
            FsError::Quota(_) => libc::EDQUOT,
            FsError::CrossPartition => libc::EXDEV,
            FsError::Stale => libc::ESTALE,
            FsError::XattrsOff | FsError::OpensByKernel => libc::ENOSYS,
            FsError::Partition { source: e, .. } | FsError::Io(e) => {
                e.raw_os_error().unwrap_or(libc::EIO)
            }
        }
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
            FsError::NotFound => write!(f, "no such name"),
            FsError::Exists => write!(f, "name exists"),
            FsError::NotEmpty => write!(f, "directory not empty"),
            FsError::NotDir => write!(f, "not a directory"),
            FsError::IsDir => write!(f, "is a directory"),
            FsError::Permission => write!(f, "not permitted for this kind of object"),
            FsError::BadName => write!(f, "invalid name"),
            FsError::NameTooLong => write!(f, "name too long"),
            FsError::WrongKind => write!(f, "wrong kind of object for this operation"),
            FsError::BadHandle => write!(f, "no such open file"),
            FsError::PassthroughBusy => {
                write!(f, "open for passthrough reads; no writer until they close")
            }
            FsError::Quota(r) => write!(f, "quota exceeded: {r}"),
            FsError::CrossPartition => write!(f, "cross-partition rename or link"),
            FsError::Stale => write!(f, "stale inode or handle"),
            FsError::XattrsOff => write!(f, "extended attributes are off ([mount] xattrs = false)"),
            FsError::OpensByKernel => {
                write!(
                    f,
                    "files are opened by the kernel ([mount] open_handles = false)"
                )
            }
            FsError::Partition { name, source } => write!(f, "partition {name}: {source}"),
            FsError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for FsError {}
