//! Names: rename, link, unlink. Within one partition these are the native
//! atomic calls; a file can only be renamed or linked into a directory on
//! the partition it lives on (that directory's home, or where it already
//! exists) — anything else is `EXDEV`, so callers copy. Quota moves with
//! the name through the accounting path.

use std::ffi::{CStr, OsStr};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::info;

use super::account::RenamePlan;
use super::accounts::{ChargeMove, SubtreeMove};
use super::inode::{Key, Node};
use super::lookup::Found;
use super::{Attr, SpoolFs, is_dir, is_reg, stat_entries};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};
use crate::layout::CYRUS_HEADER;

const RENAME_NOREPLACE: u32 = libc::RENAME_NOREPLACE;
const RENAME_EXCHANGE: u32 = libc::RENAME_EXCHANGE;

impl SpoolFs {
    pub fn unlink(&self, parent: u64, name: &OsStr) -> FsResult<()> {
        // Removing a `cyrus.header` may move its directory's charges.
        let _gate = self.accounts.passage(name == CYRUS_HEADER);
        let dir = self.dir_node(parent)?;
        let c = backing::component(name)?;
        let (part, st) = self.find(&dir, &c)?[0];
        if is_dir(&st) {
            return Err(FsError::IsDir);
        }
        let pfd = dir
            .dir()
            .expect("dir")
            .copy(part)
            .ok_or(FsError::NotFound)?;
        let unlink = || backing::unlink_at(pfd.as_fd_ref(), &c, false).map_err(FsError::from);
        if !is_reg(&st) {
            let (key, holder) = self.holder_of(&st);
            unlink()?;
            if st.st_nlink <= 1 {
                self.inodes.forget_key(&key, holder);
            }
            return Ok(());
        }
        let key = Key::of(&st);
        let state = self.known_state(key, &st, &dir);
        let pinned = self.keep_open_past_last_name(&st);
        let removed = self.remove_name(key, &state, &dir, unlink);
        if removed.is_err() {
            self.unpin(pinned);
        } else if name == CYRUS_HEADER {
            self.learn_uuid_owner(&dir);
        }
        removed
    }

    pub fn link(&self, ino: u64, newparent: u64, newname: &OsStr) -> FsResult<Attr> {
        let _gate = self.accounts.passage(newname == CYRUS_HEADER);
        let node = self.node(ino)?;
        let leaf = node.leaf().ok_or(FsError::Permission)?;
        let dir = self.dir_node(newparent)?;
        let c = backing::component(newname)?;
        if self.name_exists(&dir, &c)? {
            return Err(FsError::Exists);
        }
        let pfd = self.target_dir_on(&dir, leaf.part)?;
        let leaf_fd = leaf.fd()?;
        let link =
            || backing::link_at(leaf_fd.as_fd_ref(), pfd.as_fd_ref(), &c).map_err(FsError::from);
        match node.file() {
            Some(f) => self.add_name(&f.state, (&dir, newname), "link", link)?,
            None => link()?,
        }
        if newname == CYRUS_HEADER {
            self.learn_uuid_owner(&dir);
        }
        self.inodes.bump(&node);
        Ok(self.attr(ino, &node.stat()?))
    }

    pub fn rename(
        &self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> FsResult<()> {
        let src_dir = self.dir_node(parent)?;
        let dst_dir = self.dir_node(newparent)?;
        let (c_src, c_dst) = (backing::component(name)?, backing::component(newname)?);
        let src = self.find(&src_dir, &c_src)?;
        let dst = match self.find(&dst_dir, &c_dst) {
            Ok(f) => Some(f),
            Err(FsError::NotFound) => None,
            Err(e) => return Err(e),
        };
        // Directory renames and a `cyrus.header` landing or leaving move
        // charges wholesale, in steps: they run alone (see
        // `accounts/gate.rs`).
        let wholesale = is_dir(&src[0].1)
            || dst.as_deref().is_some_and(|d| is_dir(&d[0].1))
            || newname == CYRUS_HEADER
            || name == CYRUS_HEADER;
        let _gate = self.accounts.passage(wholesale);
        if flags & RENAME_NOREPLACE != 0 && dst.is_some() {
            return Err(FsError::Exists);
        }
        if flags & RENAME_EXCHANGE != 0 && dst.is_none() {
            return Err(FsError::NotFound);
        }
        let names = Names {
            src_dir: &src_dir,
            dst_dir: &dst_dir,
            c_src: &c_src,
            c_dst: &c_dst,
            newname,
        };
        let exchange = flags & RENAME_EXCHANGE != 0;
        if let (true, Some(d)) = (exchange, dst.as_deref())
            && (is_dir(&src[0].1) || is_dir(&d[0].1))
        {
            if is_dir(&src[0].1) {
                self.check_dir_allowed(&dst_dir, newname, "exchange")?;
            }
            if is_dir(&d[0].1) {
                self.check_dir_allowed(&src_dir, name, "exchange")?;
            }
            return self.exchange_with_dirs(&names, &src, d);
        }
        if is_dir(&src[0].1) {
            self.check_dir_allowed(&dst_dir, newname, "rename")?;
            self.rename_dir(&names, &src, dst.as_deref())
        } else {
            self.rename_leaf(&names, src[0], dst.as_deref(), flags)
        }
    }

    fn rename_leaf(
        &self,
        n: &Names,
        src: Found,
        dst: Option<&[Found]>,
        flags: u32,
    ) -> FsResult<()> {
        let (part, st) = src;
        if dst.is_some_and(|d| d.iter().any(|(p, _)| *p != part)) {
            let (from, to) = (n.src_path(self), n.dst_path(self));
            return Err(self.cross_partition("rename", &from, &to));
        }
        let from_fd = n
            .src_dir
            .dir()
            .expect("dir")
            .copy(part)
            .ok_or(FsError::NotFound)?;
        let to_fd = self.target_dir_on(n.dst_dir, part)?;
        let native = || {
            backing::rename_at(
                from_fd.as_fd_ref(),
                n.c_src,
                to_fd.as_fd_ref(),
                n.c_dst,
                flags,
            )
            .map_err(FsError::from)
        };
        let same_object = dst.is_some_and(|d| Key::of(&d[0].1) == Key::of(&st));
        if same_object || !is_reg(&st) && dst.is_none_or(|d| !is_reg(&d[0].1)) {
            return native();
        }
        let src_state = is_reg(&st).then(|| self.known_state(Key::of(&st), &st, n.src_dir));
        let replaced = dst.map(|d| d[0].1).filter(is_reg);
        let pinned = match (&replaced, flags & RENAME_EXCHANGE != 0) {
            (Some(d), false) => self.keep_open_past_last_name(d),
            _ => None,
        };
        let dst_state =
            replaced.map(|d| (Key::of(&d), self.known_state(Key::of(&d), &d, n.dst_dir)));
        let plan = RenamePlan {
            src: src_state.as_ref(),
            dst: dst_state.as_ref().map(|(key, state)| (*key, state)),
            exchange: flags & RENAME_EXCHANGE != 0,
            src_at: (n.src_dir, n.name_of_src()),
            dst_at: (n.dst_dir, n.newname),
        };
        if let Err(e) = self.rename_names(plan, native) {
            self.unpin(pinned);
            return Err(e);
        }
        // Each side of the rename may have gained or lost its header.
        if n.newname == CYRUS_HEADER {
            self.learn_uuid_owner(n.dst_dir);
        }
        if n.name_of_src() == CYRUS_HEADER {
            self.learn_uuid_owner(n.src_dir);
        }
        Ok(())
    }

    fn rename_dir(&self, n: &Names, src: &[Found], dst: Option<&[Found]>) -> FsResult<()> {
        let (old_path, new_path) = (n.src_path(self), n.dst_path(self));
        if self.router.partition_for(&old_path) != self.router.partition_for(&new_path) {
            return Err(self.cross_partition("rename", &old_path, &new_path));
        }
        let copies = self.dir_copies(n.src_dir, n.c_src, src)?;
        let moves = self.subtree_moves(&copies, &old_path, &new_path);
        // Checked before anything changes: a refusal removes nothing.
        let moving = self.begin_moves(moves, &old_path, &new_path)?;
        // The replaced directory's nodes, before it goes.
        let replaced: Vec<_> = dst
            .unwrap_or_default()
            .iter()
            .map(|(_, st)| self.holder_of(st))
            .collect();
        // From here on an error drops `moving`, which undoes it.
        if let Some(d) = dst {
            self.clear_replaced_dir(n, src, d)?;
        }
        self.rename_copies((n.src_dir, n.c_src), (n.dst_dir, n.c_dst), src, dst)?;
        moving.commit();
        // The replaced directory is gone; its inode numbers may be reused.
        for (key, holder) in replaced {
            self.inodes.forget_key(&key, holder);
        }
        self.relocate_dir_node(n, &src[0].1, &old_path, &new_path);
        Ok(())
    }

    /// `RENAME_EXCHANGE` with a directory on either side: both must be on
    /// the same partitions (every copy swaps natively and atomically) and
    /// their paths must route alike; charges move both ways.
    fn exchange_with_dirs(&self, n: &Names, src: &[Found], dst: &[Found]) -> FsResult<()> {
        let parts = |f: &[Found]| f.iter().map(|(p, _)| *p).collect::<Vec<_>>();
        let (a, b) = (n.src_path(self), n.dst_path(self));
        if parts(src) != parts(dst)
            || self.router.partition_for(&a) != self.router.partition_for(&b)
        {
            return Err(self.cross_partition("exchange", &a, &b));
        }
        let mut moves = self.side_moves(n.src_dir, n.dst_dir, n.c_src, src, &a, &b)?;
        moves.extend(self.side_moves(n.dst_dir, n.src_dir, n.c_dst, dst, &b, &a)?);
        let moving = self.begin_moves(moves, &a, &b)?;
        // An error from here on drops `moving`, which undoes it.
        self.exchange_copies((n.src_dir, n.c_src), (n.dst_dir, n.c_dst), &parts(src))?;
        moving.commit();
        self.set_dir_loc(&src[0].1, n.dst_dir.ino, n.newname);
        self.set_dir_loc(&dst[0].1, n.src_dir.ino, n.name_of_src());
        self.accounts.swap_owners(&a, &b);
        Ok(())
    }

    /// What one side of an exchange moves: a directory's whole subtree, or
    /// one file's charge from its directory's folder to the other's.
    fn side_moves(
        &self,
        here: &Node,
        there: &Node,
        c: &CStr,
        found: &[Found],
        from: &Path,
        to: &Path,
    ) -> FsResult<Vec<ChargeMove>> {
        let st = &found[0].1;
        if is_dir(st) {
            let copies = self.dir_copies(here, c, found)?;
            return Ok(self.subtree_moves(&copies, from, to));
        }
        let (f, t) = (self.folder_of(here), self.folder_of(there));
        if !is_reg(st) || f == t {
            return Ok(Vec::new());
        }
        Ok(vec![ChargeMove {
            key: Key::of(st),
            size: st.st_size as u64,
            from: f,
            to: t,
        }])
    }

    /// A directory node now answers to a new parent and name.
    fn set_dir_loc(&self, st: &libc::stat, parent: u64, name: &OsStr) {
        if let Some(node) = self.inodes.by_key(&Key::of(st))
            && let Some(d) = node.dir()
        {
            let mut loc = d.loc.write().unwrap();
            loc.parent = parent;
            loc.name = name.to_owned();
        }
    }

    /// Renames every copy of a directory on its own partition.
    /// A directory rename replaces an empty directory: it must be empty in
    /// every copy; copies where the source has none are removed first.
    fn clear_replaced_dir(&self, n: &Names, src: &[Found], dst: &[Found]) -> FsResult<()> {
        if !is_dir(&dst[0].1) {
            return Err(FsError::NotDir);
        }
        for (fd, _) in self
            .dir_copies(n.dst_dir, n.c_dst, dst)?
            .iter()
            .map(|(p, fd)| (fd, p))
        {
            if !backing::read_dir(fd.as_fd_ref())?.is_empty() {
                return Err(FsError::NotEmpty);
            }
        }
        for (part, st) in dst
            .iter()
            .filter(|(p, _)| src.iter().all(|(sp, _)| sp != p))
        {
            let pfd = n
                .dst_dir
                .dir()
                .expect("dir")
                .copy(*part)
                .ok_or(FsError::NotFound)?;
            let (key, holder) = self.holder_of(st);
            backing::unlink_at(pfd.as_fd_ref(), n.c_dst, true)?;
            self.inodes.forget_key(&key, holder);
        }
        Ok(())
    }

    fn dir_copies(
        &self,
        parent: &Node,
        c: &CStr,
        found: &[Found],
    ) -> FsResult<Vec<(usize, OwnedFd)>> {
        let d = parent.dir().expect("dir");
        found
            .iter()
            .map(|(p, _)| {
                let pfd = d.copy(*p).ok_or(FsError::NotFound)?;
                Ok((*p, backing::lookup_at(pfd.as_fd_ref(), c)?))
            })
            .collect()
    }

    /// Every regular file under a directory whose folder would change if
    /// the directory moved from `old` to `new`.
    fn subtree_moves(
        &self,
        copies: &[(usize, OwnedFd)],
        old: &Path,
        new: &Path,
    ) -> Vec<ChargeMove> {
        let mut moves = Vec::new();
        for (_, fd) in copies {
            self.walk_moves(fd, old.to_path_buf(), new.to_path_buf(), &mut moves);
        }
        moves
    }

    fn walk_moves(&self, fd: &OwnedFd, old: PathBuf, new: PathBuf, out: &mut Vec<ChargeMove>) {
        let from = self.folder_for_path(&old, fd.as_fd());
        let to = self.folder_after_move(&old, &new, fd.as_fd());
        let Ok(entries) = stat_entries(fd.as_fd()) else {
            return;
        };
        for (name, c, st) in entries {
            if is_dir(&st) {
                if let Ok(child) = backing::lookup_at(fd.as_fd_ref(), &c) {
                    self.walk_moves(&child, old.join(&name), new.join(&name), out);
                }
            } else if is_reg(&st) && from != to {
                out.push(ChargeMove {
                    key: Key::of(&st),
                    size: st.st_size as u64,
                    from,
                    to,
                });
            }
        }
    }

    /// Starts moving the subtree's charges (see `Accounts::begin_moves`);
    /// a refusal is logged with both paths.
    fn begin_moves(
        &self,
        moves: Vec<ChargeMove>,
        old: &Path,
        new: &Path,
    ) -> FsResult<SubtreeMove<'_>> {
        self.accounts.begin_moves(moves).map_err(|r| {
            log::warn!("EDQUOT: rename {} -> {}: {r}", old.display(), new.display());
            FsError::Quota(r)
        })
    }

    fn relocate_dir_node(&self, n: &Names, st: &libc::stat, old: &Path, new: &Path) {
        self.set_dir_loc(st, n.dst_dir.ino, n.newname);
        self.accounts.move_owners(old, new);
    }

    /// `dir`'s copy on `part` as a rename/link target: it must be the
    /// directory's home partition or the directory must exist there.
    fn target_dir_on(&self, dir: &Node, part: usize) -> FsResult<Arc<OwnedFd>> {
        if let Some(fd) = dir.dir().ok_or(FsError::NotDir)?.copy(part) {
            return Ok(fd);
        }
        if self.home_partition(dir) != part {
            let into = self.dir_path(dir);
            return Err(self.cross_partition("rename or link", Path::new(""), &into));
        }
        self.ensure_dir_on(dir, part)
    }

    /// `EXDEV`, so the caller copies: logged, as an operator may expect a
    /// rename where the daemon copies.
    fn cross_partition(&self, what: &str, from: &Path, to: &Path) -> FsError {
        if from.as_os_str().is_empty() {
            info!(
                "EXDEV: {what} into {}: not on the file's partition",
                to.display()
            );
        } else {
            info!(
                "EXDEV: {what} {} -> {}: different partitions",
                from.display(),
                to.display()
            );
        }
        FsError::CrossPartition
    }
}

/// The four names a rename works with.
struct Names<'a> {
    src_dir: &'a Node,
    dst_dir: &'a Node,
    c_src: &'a CStr,
    c_dst: &'a CStr,
    newname: &'a OsStr,
}

impl Names<'_> {
    fn name_of_src(&self) -> &OsStr {
        OsStr::from_bytes_ref(self.c_src)
    }

    fn src_path(&self, fs: &SpoolFs) -> PathBuf {
        fs.child_path(self.src_dir, self.name_of_src())
    }

    fn dst_path(&self, fs: &SpoolFs) -> PathBuf {
        fs.child_path(self.dst_dir, self.newname)
    }
}

trait FromCStr {
    fn from_bytes_ref(c: &CStr) -> &OsStr;
}

impl FromCStr for OsStr {
    fn from_bytes_ref(c: &CStr) -> &OsStr {
        use std::os::unix::ffi::OsStrExt;
        OsStr::from_bytes(c.to_bytes())
    }
}
