//! lookup, getattr, forget, readlink.

use std::ffi::{CStr, OsStr};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex};

use super::handles::NO_HANDLE;
use super::inode::{Body, DirNode, FileNode, Key, LeafNode, Loc, Node, OpenState};
use super::{Attr, SpoolFs, is_dir, is_reg};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};

/// Where a name was found: the partition and its `lstat`.
pub(super) type Found = (usize, libc::stat);

impl SpoolFs {
    pub fn lookup(&self, parent: u64, name: &OsStr) -> FsResult<Attr> {
        let dir = self.dir_node(parent)?;
        let (node, st) = self.lookup_node(&dir, name)?;
        Ok(self.attr(node.ino, &st))
    }

    /// `fh` is the open file an `fstat` came through, if any: it reaches
    /// the file even after its last name is gone. Without one (the kernel
    /// sends `fstat` without it) a per-file descriptor serves the same.
    pub fn getattr(&self, ino: u64, fh: Option<u64>) -> FsResult<Attr> {
        if let Some(st) = self.stat_open(fh.unwrap_or(NO_HANDLE), ino) {
            return Ok(self.attr(ino, &st?));
        }
        let node = self.node(ino)?;
        Ok(self.attr(ino, &node.stat()?))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        if let Some(node) = self.inodes.forget(ino, n)
            && let Some(f) = node.file()
        {
            self.handles.forget(&node);
            self.accounts.release_file_state(f);
        }
    }

    pub fn readlink(&self, ino: u64) -> FsResult<Vec<u8>> {
        let node = self.node(ino)?;
        let leaf = node.leaf().ok_or(FsError::WrongKind)?;
        Ok(backing::readlink_fd(leaf.fd()?.as_fd_ref())?)
    }

    /// Finds `name` in the union of `dir`'s copies and counts one kernel
    /// reference to its node.
    pub(super) fn lookup_node(
        &self,
        dir: &Node,
        name: &OsStr,
    ) -> FsResult<(Arc<Node>, libc::stat)> {
        let c = backing::component(name)?;
        let found = self.find(dir, &c)?;
        let st = found[0].1;
        let key = Key::of(&st);
        if let Some(node) = self.inodes.remember_known(&key) {
            if self.is_current(&node, &key) {
                return Ok((node, st));
            }
            self.retire(&node, &key);
        }
        let body = self.make_body(dir, name, &c, &found)?;
        let keys = found.iter().map(|(_, st)| Key::of(st)).collect();
        let mut body = Some(body);
        let node = self
            .inodes
            .remember(key, || (body.take().expect("once"), keys));
        Ok((node, st))
    }

    /// Whether a known node still stands for the live object with `key`:
    /// a deleted object's inode number can be reused by a new file at once,
    /// and a bookkeeping race must never hand the kernel the dead object.
    fn is_current(&self, node: &Node, key: &Key) -> bool {
        match node.stat() {
            Ok(st) => st.st_nlink > 0 && Key::of(&st) == *key,
            Err(_) => false,
        }
    }

    /// The backing key of `st` and the node answering for it, taken before
    /// the object is removed (see `InodeTable::forget_key`).
    pub(super) fn holder_of(&self, st: &libc::stat) -> (Key, Option<u64>) {
        let key = Key::of(st);
        (key, self.inodes.holder(&key))
    }

    /// Drops a stale node's claim on `key` (and the reference just taken).
    fn retire(&self, node: &Node, key: &Key) {
        self.inodes.forget_key(key, Some(node.ino));
        if let Some(f) = node.file() {
            self.accounts.retire(key, &f.state);
        }
        self.forget(node.ino, 1);
    }

    /// Every partition copy of `name` in `dir`: the first one found, and for
    /// a directory also its copies on later partitions.
    pub(super) fn find(&self, dir: &Node, c: &CStr) -> FsResult<Vec<Found>> {
        let d = dir.dir().ok_or(FsError::NotDir)?;
        let mut out: Vec<Found> = Vec::new();
        for (p, fd) in d.copies() {
            match backing::stat_at(fd.as_fd_ref(), c) {
                Ok(st) if out.is_empty() => {
                    out.push((p, st));
                    if !is_dir(&st) {
                        break;
                    }
                }
                Ok(st) if is_dir(&st) => out.push((p, st)),
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if out.is_empty() {
            return Err(FsError::NotFound);
        }
        Ok(out)
    }

    /// Opens `O_PATH` handles on what `find` found and builds the node body.
    fn make_body(&self, dir: &Node, name: &OsStr, c: &CStr, found: &[Found]) -> FsResult<Body> {
        let d = dir.dir().expect("find checked");
        let mut fds = Vec::with_capacity(found.len());
        for (p, st) in found {
            let parent_fd = d.copy(*p).ok_or(FsError::NotFound)?;
            let fd = backing::lookup_at(parent_fd.as_fd_ref(), c)?;
            // The name may have been replaced between stat and open.
            if Key::of(&backing::stat_fd(fd.as_fd_ref())?) != Key::of(st) {
                return Err(FsError::NotFound);
            }
            fds.push((*p, fd));
        }
        let st = &found[0].1;
        if is_dir(st) {
            let loc = Loc {
                parent: dir.ino,
                name: name.to_owned(),
            };
            return Ok(Body::Dir(DirNode::new(loc, self.partitions.len(), fds)));
        }
        let (part, fd) = fds.pop().expect("one copy");
        let leaf = LeafNode::new(fd, part, &self.partitions[part].handle_root);
        if !is_reg(st) {
            return Ok(Body::Other(leaf));
        }
        let key = Key::of(st);
        let state = self.file_state(key, st, dir, name);
        Ok(Body::File(FileNode {
            leaf,
            key,
            state,
            opens: Mutex::new(OpenState::default()),
            passthrough_gone: Condvar::new(),
            no_setid: AtomicBool::new(!has_setid(st.st_mode)),
        }))
    }
}

/// Whether a mode carries set-user-ID or set-group-ID.
pub(super) fn has_setid(mode: u32) -> bool {
    mode & (libc::S_ISUID | libc::S_ISGID) != 0
}
