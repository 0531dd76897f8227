//! setattr: truncate (through the accounting path), chown, chmod, utimens.
//! The kernel has already checked permissions (`default_permissions`); a
//! directory's change applies to all its partition copies.

use std::os::fd::BorrowedFd;

use std::sync::atomic::Ordering;

use super::copies;
use super::handles::NO_HANDLE;
use super::inode::{Body, Node};
use super::lookup::has_setid;
use super::{Attr, SetTime, SpoolFs};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};

/// The changes one setattr asks for.
#[derive(Default, Debug)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
    pub fh: Option<u64>,
    /// Clear set-user-ID and set-group-ID (`FATTR_KILL_SUIDGID`): a
    /// truncate or chown by a caller without `CAP_FSETID`.
    pub kill_suidgid: bool,
}

impl SpoolFs {
    pub fn setattr(&self, ino: u64, a: SetAttr) -> FsResult<Attr> {
        let node = self.node(ino)?;
        if let Some(size) = a.size {
            self.truncate(&node, size, a.fh)?;
        }
        // An open file reaches the file even after its last name is gone:
        // the one the request names, or else its per-file descriptor
        // (`fchown`/`fchmod`/`futimens` come without a handle).
        let open = self.open_file_of(a.fh.unwrap_or(NO_HANDLE), ino);
        let apply = |f: &dyn Fn(BorrowedFd) -> std::io::Result<()>| match &open {
            Some(h) => Ok(f(h.fd())?),
            None => for_each_fd(&node, f),
        };
        if a.uid.is_some() || a.gid.is_some() {
            apply(&|fd| backing::chown_fd(fd, a.uid, a.gid))?;
        }
        if let (Some(mode), false) = (
            a.mode,
            matches!(node.body, Body::Other(_)) && is_symlink(&node),
        ) {
            apply(&|fd| backing::chmod_fd(fd, mode & 0o7777))?;
            if let Body::File(f) = &node.body {
                f.no_setid.store(!has_setid(mode), Ordering::Relaxed);
            }
        } else if let (true, Body::File(f)) = (a.kill_suidgid, &node.body)
            && !f.no_setid.load(Ordering::Relaxed)
        {
            apply(&backing::kill_suidgid)?;
        }
        if a.atime.is_some() || a.mtime.is_some() {
            let (at, mt) = (a.atime.map(timespec), a.mtime.map(timespec));
            apply(&|fd| backing::utimens_fd(fd, at, mt))?;
        }
        self.getattr(ino, a.fh)
    }

    fn truncate(&self, node: &Node, size: u64, fh: Option<u64>) -> FsResult<()> {
        let file = match &node.body {
            Body::File(f) => f,
            Body::Dir(_) => return Err(FsError::IsDir),
            Body::Other(_) => return Err(FsError::WrongKind),
        };
        // A per-file descriptor may be read-only: a truncate through it
        // (`ftruncate`, `open(O_TRUNC)`) is a write.
        let open = match fh {
            Some(NO_HANDLE) => Some(self.open_file_for_write(node.ino, NO_HANDLE)?),
            Some(fh) => self.open_file_of(fh, node.ino),
            None => None,
        };
        if let Some(h) = open {
            return self.truncate_handle(&h, size);
        }
        let leaf_fd = file.leaf.fd()?;
        let fd = leaf_fd.as_fd_ref();
        self.change_size(
            file,
            fd,
            "truncate",
            |_| size,
            || backing::truncate_fd(fd, size),
            |_, _| size,
        )
    }
}

/// Applies a change to every backing object of a node (all copies of a
/// directory), borrowing the node's own descriptors: no `dup` per request.
fn for_each_fd(node: &Node, f: &dyn Fn(BorrowedFd) -> std::io::Result<()>) -> FsResult<()> {
    match &node.body {
        Body::Dir(d) => {
            let copies: Vec<_> = d.copies().into_iter().map(|(_, fd)| fd).collect();
            copies::all_writable(&copies)?;
            for fd in copies {
                f(fd.as_fd_ref())?;
            }
        }
        Body::File(file) => f(file.leaf.fd()?.as_fd_ref())?,
        Body::Other(leaf) => f(leaf.fd()?.as_fd_ref())?,
    }
    Ok(())
}

fn is_symlink(node: &Node) -> bool {
    node.stat()
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
        .unwrap_or(false)
}

fn timespec(t: SetTime) -> libc::timespec {
    match t {
        SetTime::Now => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        SetTime::At { sec, nsec } => libc::timespec {
            tv_sec: sec,
            tv_nsec: nsec as i64,
        },
    }
}
