//! Making new names: create, mknod, symlink. New files go to their
//! directory's home partition and belong to the caller.

use std::ffi::{CStr, OsStr};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use super::inode::Node;
use super::{Attr, Caller, SpoolFs};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};

const OPEN_FLAGS_KEPT: i32 =
    libc::O_ACCMODE | libc::O_NONBLOCK | libc::O_SYNC | libc::O_DSYNC | libc::O_NOATIME;

impl SpoolFs {
    pub fn create(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
    ) -> FsResult<(Attr, u64)> {
        let _steady = self.accounts.steady();
        let mode = mode & !umask & 0o7777;
        let (dir, pfd, c) = self.prepare_new(parent, name)?;
        // A per-file descriptor serves every later open of the file too:
        // read-write, and without the caller's O_SYNC (which comes with
        // each write instead).
        let flags = match self.open_handles() {
            true => flags & OPEN_FLAGS_KEPT,
            false => libc::O_RDWR,
        };
        let fd = backing::create_at(pfd.as_fd_ref(), &c, flags, mode)?;
        self.give_to_caller(&fd, who, &pfd, mode)?;
        let (node, st) = self.lookup_node(&dir, name)?;
        let fh = match self.open_handles() {
            true => {
                let writable = flags & libc::O_ACCMODE != libc::O_RDONLY;
                self.add_open(node.clone(), fd, writable)?
            }
            false => self.keep_shared(node.clone(), fd),
        };
        Ok((self.attr(node.ino, &st), fh))
    }

    pub fn mknod(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
    ) -> FsResult<Attr> {
        let _steady = self.accounts.steady();
        let perm = mode & !umask & 0o7777;
        let (dir, pfd, c) = self.prepare_new(parent, name)?;
        backing::mknod_at(
            pfd.as_fd_ref(),
            &c,
            (mode & libc::S_IFMT) | perm,
            rdev as u64,
        )?;
        self.finish_new(who, &dir, &pfd, &c, name, perm)
    }

    pub fn symlink(&self, who: Caller, parent: u64, name: &OsStr, target: &Path) -> FsResult<Attr> {
        let (dir, pfd, c) = self.prepare_new(parent, name)?;
        backing::symlink_at(target.as_os_str(), pfd.as_fd_ref(), &c)?;
        self.finish_new(who, &dir, &pfd, &c, name, 0o777)
    }

    /// The parent, its copy on the home partition, and the checked name;
    /// `EEXIST` if the name exists on any partition.
    fn prepare_new(
        &self,
        parent: u64,
        name: &OsStr,
    ) -> FsResult<(Arc<Node>, Arc<OwnedFd>, std::ffi::CString)> {
        let dir = self.dir_node(parent)?;
        let c = backing::component(name)?;
        if self.name_exists(&dir, &c)? {
            return Err(FsError::Exists);
        }
        let pfd = self.ensure_dir_on(&dir, self.home_partition(&dir))?;
        Ok((dir, pfd, c))
    }

    fn finish_new(
        &self,
        who: Caller,
        dir: &Node,
        pfd: &OwnedFd,
        c: &CStr,
        name: &OsStr,
        mode: u32,
    ) -> FsResult<Attr> {
        let fd = backing::lookup_at(pfd.as_fd_ref(), c)?;
        self.give_to_caller(&fd, who, pfd, mode)?;
        let (node, st) = self.lookup_node(dir, name)?;
        Ok(self.attr(node.ino, &st))
    }
}
