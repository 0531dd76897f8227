//! Directories: mkdir, rmdir, listings, and the union of copies.
//!
//! A directory may exist on several partitions; it is one directory in the
//! tree. New entries go to the partition its route names
//! ([`SpoolFs::home_partition`]); missing parents are made there first,
//! copying the mode and owner of the directory they stand for.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr, OsString};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use super::copies;
use super::inode::{Key, Node, ROOT_INO};
use super::listing::Page;
use super::{Attr, Caller, FileKind, SpoolFs, is_dir};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};

/// One entry of a directory listing.
#[derive(Clone, Debug)]
pub struct DirEntryOut {
    pub name: OsString,
    pub kind: FileKind,
    pub ino: u64,
}

impl SpoolFs {
    pub fn mkdir(
        &self,
        who: Caller,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
    ) -> FsResult<Attr> {
        let _steady = self.accounts.steady();
        let dir = self.dir_node(parent)?;
        let c = backing::component(name)?;
        if self.name_exists(&dir, &c)? {
            return Err(FsError::Exists);
        }
        self.check_dir_allowed(&dir, name, "mkdir")?;
        let part = self.router.partition_for(&self.child_path(&dir, name));
        let pfd = self.ensure_dir_on(&dir, part)?;
        backing::mkdir_at(pfd.as_fd_ref(), &c, mode & !umask & 0o7777)?;
        let fd = backing::lookup_at(pfd.as_fd_ref(), &c)?;
        self.give_to_caller(&fd, who, &pfd, mode & !umask)?;
        let (node, st) = self.lookup_node(&dir, name)?;
        if let Some(folder) = self.folder_of(&node) {
            self.accounts
                .set_partition(folder, self.partition_name(part));
        }
        Ok(self.attr(node.ino, &st))
    }

    /// A directory the layout would charge to nobody is not made inside a
    /// mailbox (see `Layout::allows_dir`): `EPERM`, logged.
    pub(super) fn check_dir_allowed(
        &self,
        parent: &Node,
        name: &OsStr,
        what: &str,
    ) -> FsResult<()> {
        let role = self.layout.classify(&self.dir_path(parent));
        if self.layout.allows_dir(&role, name) {
            return Ok(());
        }
        let path = self.child_path(parent, name);
        log::warn!(
            "{what} {}: refused: the layout charges no mailbox for it, so it would hold data outside every limit",
            path.display()
        );
        Err(FsError::Permission)
    }

    pub fn rmdir(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        let dir = self.dir_node(parent)?;
        let d = dir.dir().expect("dir_node");
        let c = backing::component(name)?;
        let found = self.find(&dir, &c)?;
        if !is_dir(&found[0].1) {
            return Err(FsError::NotDir);
        }
        // Every copy must be empty, and its partition writable, before any
        // is removed, or the union would lose half a directory.
        let parents: Vec<_> = found.iter().filter_map(|(p, _)| d.copy(*p)).collect();
        copies::all_writable(&parents)?;
        for (p, _) in &found {
            let pfd = d.copy(*p).ok_or(FsError::NotFound)?;
            let fd = backing::lookup_at(pfd.as_fd_ref(), &c)?;
            if !backing::read_dir(fd.as_fd_ref())?.is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        for (p, st) in &found {
            let pfd = d.copy(*p).ok_or(FsError::NotFound)?;
            let (key, holder) = self.holder_of(st);
            backing::unlink_at(pfd.as_fd_ref(), &c, true)?;
            self.inodes.forget_key(&key, holder);
        }
        self.accounts.forget_owners(&self.child_path(&dir, name));
        Ok(())
    }

    /// The listing to serve at `offset` (see `listing.rs`).
    pub fn readdir(&self, ino: u64, offset: u64) -> FsResult<Page> {
        let node = self.dir_node(ino)?;
        let d = node.dir().expect("dir_node");
        d.listings.page(offset, || self.list(&node))
    }

    /// Whether a change to directory `ino` may have raced with a listing
    /// the kernel is caching (see `invalidate.rs`).
    pub fn listing_may_be_stale(&self, ino: u64) -> bool {
        const WINDOW: Duration = Duration::from_secs(1);
        self.inodes
            .get(ino)
            .and_then(|n| n.dir().map(|d| d.listings.listed_since(WINDOW)))
            .unwrap_or(false)
    }

    fn parent_of(&self, ino: u64) -> FsResult<u64> {
        let node = self.dir_node(ino)?;
        let parent = node.dir().expect("dir").loc().parent;
        Ok(if ino == ROOT_INO { ROOT_INO } else { parent })
    }

    /// The union of every copy's entries, first partition first, no duplicates.
    fn list(&self, node: &Node) -> FsResult<Vec<DirEntryOut>> {
        let d = node.dir().expect("dir_node");
        let dot = |name: &str, ino| DirEntryOut {
            name: name.into(),
            kind: FileKind::Directory,
            ino,
        };
        let mut out = vec![dot(".", node.ino), dot("..", self.parent_of(node.ino)?)];
        let mut seen = HashSet::new();
        for (_, fd) in d.copies() {
            let dev = backing::stat_fd(fd.as_fd_ref())?.st_dev;
            for e in backing::read_dir(fd.as_fd_ref())? {
                if seen.insert(e.name.clone()) {
                    let key = Key { dev, ino: e.ino };
                    let ino = self.inodes.listed_ino(&key);
                    out.push(DirEntryOut {
                        kind: FileKind::of_mode(dtype_mode(e.d_type)),
                        name: e.name,
                        ino,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Whether `name` exists in any copy of `dir`.
    pub(super) fn name_exists(&self, dir: &Node, c: &CStr) -> FsResult<bool> {
        match self.find(dir, c) {
            Ok(_) => Ok(true),
            Err(FsError::NotFound) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// The partition new entries of `dir` go to: its route's.
    pub(super) fn home_partition(&self, dir: &Node) -> usize {
        self.router.partition_for(&self.dir_path(dir))
    }

    /// `dir`'s copy on `part`, made (with its missing parents) if absent.
    pub(super) fn ensure_dir_on(&self, dir: &Node, part: usize) -> FsResult<Arc<OwnedFd>> {
        let d = dir.dir().ok_or(FsError::NotDir)?;
        if let Some(fd) = d.copy(part) {
            return Ok(fd);
        }
        let loc = d.loc();
        let parent = self.node(loc.parent)?;
        let pfd = self.ensure_dir_on(&parent, part)?;
        let template = dir.stat()?;
        let c = backing::component(&loc.name)?;
        match backing::mkdir_at(pfd.as_fd_ref(), &c, template.st_mode & 0o7777) {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => return Err(e.into()),
            _ => {}
        }
        let fd = backing::lookup_at(pfd.as_fd_ref(), &c)?;
        let st = backing::stat_fd(fd.as_fd_ref())?;
        if !is_dir(&st) {
            return Err(FsError::NotDir);
        }
        backing::chown_fd(fd.as_fd_ref(), Some(template.st_uid), Some(template.st_gid))?;
        backing::chmod_fd(fd.as_fd_ref(), template.st_mode & 0o7777)?;
        self.inodes.add_key(Key::of(&st), dir);
        Ok(d.add_copy(part, fd))
    }

    /// New objects belong to the caller, as on ext4: its uid, and its gid
    /// unless the parent directory is set-group-ID.
    pub(super) fn give_to_caller(
        &self,
        fd: &OwnedFd,
        who: Caller,
        parent: &OwnedFd,
        mode: u32,
    ) -> FsResult<()> {
        if who.uid == 0 && who.gid == 0 {
            return Ok(()); // made by the root daemon: already right
        }
        let parent = backing::stat_fd(parent.as_fd_ref())?;
        let gid = (parent.st_mode & libc::S_ISGID == 0).then_some(who.gid);
        backing::chown_fd(fd.as_fd_ref(), Some(who.uid), gid)?;
        // chown clears set-ID bits of non-directories; put back what was asked.
        if mode & (libc::S_ISUID | libc::S_ISGID) != 0
            && !is_dir(&backing::stat_fd(fd.as_fd_ref())?)
        {
            backing::chmod_fd(fd.as_fd_ref(), mode & 0o7777)?;
        }
        Ok(())
    }
}

fn dtype_mode(d_type: u8) -> u32 {
    match d_type {
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        _ => libc::S_IFREG,
    }
}

impl SpoolFs {
    pub fn fsyncdir(&self, ino: u64, datasync: bool) -> FsResult<()> {
        let node = self.dir_node(ino)?;
        for (_, fd) in node.dir().expect("dir").copies() {
            let d = backing::reopen(fd.as_fd_ref(), libc::O_RDONLY | libc::O_DIRECTORY)?;
            backing::sync_fd(d.as_fd_ref(), datasync)?;
        }
        Ok(())
    }
}
