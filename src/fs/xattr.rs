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
        if ino == ROOT_INO && name == CONTROL_XATTR {
            return Ok(self.control_socket_path().into_os_string().into_vec());
        }
        let node = self.node(ino)?;
        let reached = first_path(&node)?; // keeps the path valid
        let path = &reached.path;
        let cname = xname(name)?;
        sized_call(|buf, len| unsafe { libc::getxattr(path.as_ptr(), cname.as_ptr(), buf, len) })
    }

    pub fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let node = self.node(ino)?;
        let reached = first_path(&node)?; // keeps the path valid
        let path = &reached.path;
        sized_call(|buf, len| unsafe { libc::listxattr(path.as_ptr(), buf.cast(), len) })
    }

    pub fn setxattr(&self, ino: u64, name: &OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let node = self.node(ino)?;
        let cname = xname(name)?;
        for Reached { path, .. } in all_paths(&node)? {
            let r = unsafe {
                libc::setxattr(
                    path.as_ptr(),
                    cname.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    flags,
                )
            };
            if r < 0 {
                return Err(FsError::last_os());
            }
        }
        Ok(())
    }

    pub fn removexattr(&self, ino: u64, name: &OsStr) -> FsResult<()> {
        let node = self.node(ino)?;
        let cname = xname(name)?;
        for Reached { path, .. } in all_paths(&node)? {
            if unsafe { libc::removexattr(path.as_ptr(), cname.as_ptr()) } < 0 {
                return Err(FsError::last_os());
            }
        }
        Ok(())
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

/// Runs a size-then-fill xattr call, growing the buffer if it raced.
fn sized_call(call: impl Fn(*mut libc::c_void, usize) -> isize) -> FsResult<Vec<u8>> {
    loop {
        let need = call(std::ptr::null_mut(), 0);
        if need < 0 {
            return Err(FsError::last_os());
        }
        let mut buf = vec![0u8; need as usize];
        let got = call(buf.as_mut_ptr().cast(), buf.len());
        if got >= 0 {
            buf.truncate(got as usize);
            return Ok(buf);
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return Err(FsError::last_os());
        }
    }
}
