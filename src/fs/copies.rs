//! Changes made to every copy of a union directory, all or nothing.
//!
//! A directory may have a copy on several partitions, and renaming,
//! exchanging or removing it is one backing call per copy. If a later copy
//! fails (its partition full, read-only, failing), the copies already done
//! are put back, so the union is never left half moved: half a mailbox at
//! the new path and half at the old, each charged where it no longer is.

use std::ffi::CStr;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use log::error;

use super::SpoolFs;
use super::inode::Node;
use super::lookup::Found;
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};

/// One copy's rename: its parent before and after.
struct Renamed {
    part: usize,
    from: Arc<OwnedFd>,
    to: Arc<OwnedFd>,
}

impl SpoolFs {
    /// Renames `src_dir/c_src` to `dst_dir/c_dst` on every partition in
    /// `src`. `replaced`: the empty directory the rename replaces, made
    /// again where a copy is put back.
    pub(super) fn rename_copies(
        &self,
        (src_dir, c_src): (&Node, &CStr),
        (dst_dir, c_dst): (&Node, &CStr),
        src: &[Found],
        replaced: Option<&[Found]>,
    ) -> FsResult<()> {
        let mut done: Vec<Renamed> = Vec::new();
        for &(part, _) in src {
            let step = || -> FsResult<Renamed> {
                let from = src_dir.dir().ok_or(FsError::NotDir)?.copy(part);
                let from = from.ok_or(FsError::NotFound)?;
                let to = self.ensure_dir_on(dst_dir, part)?;
                backing::rename_at(from.as_fd_ref(), c_src, to.as_fd_ref(), c_dst, 0)?;
                Ok(Renamed { part, from, to })
            };
            match step() {
                Ok(r) => done.push(r),
                Err(e) => {
                    for r in done.iter().rev() {
                        let was = replaced.and_then(|d| d.iter().find(|(p, _)| *p == r.part));
                        self.put_back(r, (c_src, c_dst), was.map(|(_, st)| st));
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    fn put_back(&self, r: &Renamed, (c_src, c_dst): (&CStr, &CStr), was: Option<&libc::stat>) {
        let back = backing::rename_at(r.to.as_fd_ref(), c_dst, r.from.as_fd_ref(), c_src, 0);
        if let Err(e) = back {
            let name = self.partition_name(r.part);
            error!("partition {name}: a failed directory rename could not be undone: {e}");
            return;
        }
        if let Some(st) = was
            && let Err(e) = remake_empty_dir(r.to.as_fd_ref(), c_dst, st)
        {
            let name = self.partition_name(r.part);
            error!("partition {name}: a directory replaced by a failed rename is lost: {e}");
        }
    }

    /// Exchanges `a_dir/c_a` and `b_dir/c_b` on every partition in `parts`.
    pub(super) fn exchange_copies(
        &self,
        (a_dir, c_a): (&Node, &CStr),
        (b_dir, c_b): (&Node, &CStr),
        parts: &[usize],
    ) -> FsResult<()> {
        let copy = |dir: &Node, part: usize| dir.dir().and_then(|d| d.copy(part));
        let swap = |a: &Arc<OwnedFd>, b: &Arc<OwnedFd>| {
            let flags = libc::RENAME_EXCHANGE;
            backing::rename_at(a.as_fd_ref(), c_a, b.as_fd_ref(), c_b, flags)
        };
        let mut done = Vec::new();
        for &part in parts {
            let pair = copy(a_dir, part).zip(copy(b_dir, part));
            let step = pair.ok_or(FsError::NotFound).and_then(|(a, b)| {
                swap(&a, &b)?;
                Ok((part, a, b))
            });
            if let Err(e) = step.map(|swapped| done.push(swapped)) {
                // An exchange is its own inverse.
                for (part, a, b) in done.iter().rev() {
                    if let Err(e) = swap(a, b) {
                        let name = self.partition_name(*part);
                        error!("partition {name}: a failed exchange could not be undone: {e}");
                    }
                }
                return Err(e);
            }
        }
        Ok(())
    }
}

/// Before changing every copy of a directory (removing it, or its mode,
/// owner or times): a copy on a read-only partition would fail after the
/// others had changed. `fds`: one descriptor on each copy's partition. A
/// single copy needs no check: its one call fails or succeeds whole.
pub(super) fn all_writable(fds: &[Arc<OwnedFd>]) -> FsResult<()> {
    if fds.len() < 2 {
        return Ok(());
    }
    for fd in fds {
        let vfs = backing::statvfs_fd(fd.as_fd_ref())?;
        if vfs.f_flag & libc::ST_RDONLY != 0 {
            return Err(FsError::from(std::io::Error::from_raw_os_error(
                libc::EROFS,
            )));
        }
    }
    Ok(())
}

/// Makes again, empty, the directory `name` in `parent` as `st` described
/// it (mode and owner).
fn remake_empty_dir(parent: BorrowedFd, name: &CStr, st: &libc::stat) -> std::io::Result<()> {
    backing::mkdir_at(parent, name, st.st_mode & 0o7777)?;
    let fd = backing::lookup_at(parent, name)?;
    backing::chmod_fd(fd.as_fd_ref(), st.st_mode & 0o7777)?;
    backing::chown_fd(fd.as_fd_ref(), Some(st.st_uid), Some(st.st_gid))
}
