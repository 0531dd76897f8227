//! Extended attributes, passed to the backing objects. One virtual name on
//! the root, `user.spoolfs.control`, tells the CLI where the control socket
//! is (see `control.rs`).

use std::ffi::{CString, OsStr};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::SpoolFs;
use super::anchor::LeafFd;
use super::inode::{Body, Node, ROOT_INO};
use crate::backing;
use crate::error::{FsError, FsResult};

pub const CONTROL_XATTR: &str = "user.spoolfs.control";

impl SpoolFs {
    pub fn getxattr(&self, ino: u64, name: &OsStr) -> FsResult<Vec<u8>> {
        self.xattrs_on()?;
        if ino == ROOT_INO && name == CONTROL_XATTR {
            return Ok(self.control_socket_path().into_os_string().into_vec());
        }
        let node = self.node(ino)?;
        let reached = first_path(&node)?; // keeps the path valid
        let path = &reached.path;
        Ok(backing::getxattr(path, &xname(name)?)?)
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        self.xattrs_on()?;
        let node = self.node(ino)?;
        let reached = first_path(&node)?; // keeps the path valid
        let path = &reached.path;
        Ok(backing::listxattr(path)?)
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        self.xattrs_on()?;
        let node = self.node(ino)?;
        let cname = xname(name)?;
        for Reached { path, .. } in all_paths(&node)? {
            backing::setxattr(&path, &cname, value, flags)?;
        }
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        self.xattrs_on()?;
        let node = self.node(ino)?;
        let cname = xname(name)?;
        for Reached { path, .. } in all_paths(&node)? {
            backing::removexattr(&path, &cname)?;
        }
        Ok(())
    }
}

impl SpoolFs {
    /// With `[mount] xattrs = false` every xattr request is refused as not
    /// implemented, and the kernel, so told, sends no more of its kind: in
    /// particular no `GETXATTR security.capability` before each write.
    fn xattrs_on(&self) -> FsResult<()> {
        if self.config.mount.xattrs {
            Ok(())
        } else {
            Err(FsError::XattrsOff)
        }
    }
}

fn xname(name: &OsStr) -> FsResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| FsError::BadName)
}

/// `/proc/self/fd/N` paths reaching the node's backing objects (all copies
/// of a directory). Resolving such a path lands on the object the `O_PATH`
/// descriptor holds — for a symlink the link itself, never its target — so
/// symlinks and FIFOs get exactly what ext4 gives them (an empty list, no
/// `user.*` attributes: the backing filesystem says `EPERM`).
fn all_paths(node: &Node) -> FsResult<Vec<Reached<'_>>> {
    let fds = match &node.body {
        Body::Dir(d) => d
            .copies()
            .into_iter()
            .map(|(_, fd)| LeafFd::Shared(fd))
            .collect(),
        Body::File(f) => vec![f.leaf.fd()?],
        Body::Other(l) => vec![l.fd()?],
    };
    Ok(fds
        .into_iter()
        .map(|fd| Reached {
            path: backing::proc_path(fd.as_raw_fd()),
            _fd: fd,
        })
        .collect())
}

/// A `/proc/self/fd` path, and the descriptor that keeps it valid.
struct Reached<'a> {
    path: CString,
    _fd: LeafFd<'a>,
}

fn first_path(node: &Node) -> FsResult<Reached<'_>> {
    all_paths(node)?.into_iter().next().ok_or(FsError::NotFound)
}
