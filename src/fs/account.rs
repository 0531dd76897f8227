//! The accounting path as the filesystem sees it: which folder a directory
//! is charged to, the states of files met by name, and the log line of a
//! refusal. Every charge itself is changed by `Accounts` (`accounts.rs`):
//! a size change goes through [`SpoolFs::change_size`]; a name added,
//! removed or renamed through [`SpoolFs::add_name`] /
//! [`SpoolFs::remove_name`] / [`SpoolFs::rename_names`]; a directory
//! rename's subtree through `Accounts::begin_moves`. So usage(m) =
//! Σ st_size of the names under m holds by construction.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use log::{info, warn};

use super::accounts::{FileState, Place, RenameCharges};
use super::inode::{FileNode, Key, Node};
use super::{SpoolFs, is_reg, stat_entries};
use crate::backing::{self, AsFdRef};
use crate::error::{FsError, FsResult};
use crate::layout::{CYRUS_HEADER, DirRole, parse_cyrus_header};
use crate::quota::{ChargeKind, FolderId, Refusal};

/// `cyrus.header` files are small; anything bigger is not one.
const HEADER_READ_LIMIT: usize = 64 * 1024;

impl SpoolFs {
    /// The folder files directly in `dir` are charged to (None: nobody).
    pub(super) fn folder_of(&self, dir: &Node) -> Option<FolderId> {
        let d = dir.dir()?;
        let epoch = self.accounts.epoch();
        let mut cache = d.folder.lock().unwrap();
        if !cache.valid || cache.epoch != epoch {
            cache.folder = self.compute_folder(dir);
            cache.epoch = epoch;
            cache.valid = true;
        }
        cache.folder
    }

    fn compute_folder(&self, dir: &Node) -> Option<FolderId> {
        let path = self.dir_path(dir);
        match self.layout.classify(&path) {
            DirRole::Folder(f) => Some(self.accounts.folder(&f)),
            DirRole::UuidMailbox => self.uuid_owner(&path, dir),
            DirRole::Unowned => None,
        }
    }

    /// The owner of a UUID mailbox directory: remembered, or read from its
    /// `cyrus.header` (after a restart the scan has remembered it already).
    /// Only what was learned counts (at start-up, or when a header landed
    /// through this mount): the files in the directory were charged to
    /// exactly that, so reading a newer header here would desynchronise.
    fn uuid_owner(&self, path: &Path, _dir: &Node) -> Option<FolderId> {
        self.accounts.owner(path)
    }

    /// What the `cyrus.header` of a directory's copies says: the first
    /// copy with a usable one wins.
    fn read_header(&self, dir: &Node) -> Header {
        let Some(d) = dir.dir() else {
            return Header::Absent;
        };
        let path = self.dir_path(dir);
        let copies = d.copies();
        header_of_copies(
            copies
                .iter()
                .map(|(_, fd)| self.header_in(&path, fd.as_fd_ref())),
        )
    }

    /// The `cyrus.header` in one copy of the directory at `path`.
    fn header_in(&self, path: &Path, fd: BorrowedFd) -> Header {
        let name = std::ffi::CString::new(CYRUS_HEADER).expect("constant");
        match backing::read_small_file(fd, &name, HEADER_READ_LIMIT) {
            // Being written in place: truncated, not yet filled.
            Ok(bytes) if bytes.is_empty() => Header::Unusable,
            Ok(bytes) => match parse_cyrus_header(&bytes, self.layout.default_tenant()) {
                Ok(f) => Header::Names(self.accounts.folder(&f)),
                Err(e) => {
                    warn!("{}: unusable {CYRUS_HEADER}: {e}", path.display());
                    Header::Unusable
                }
            },
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Header::Absent,
            Err(e) => {
                warn!("{}: cannot read {CYRUS_HEADER}: {e}", path.display());
                Header::Unusable
            }
        }
    }

    /// The header of the directory at `path`, from `fd` or, when that copy
    /// has none, from its copies on the other partitions: a route changed
    /// between mounts can leave the header on one partition and later
    /// files on another.
    fn header_at_path(&self, path: &Path, fd: BorrowedFd) -> Header {
        let here = self.header_in(path, fd);
        if let Header::Names(_) = here {
            return here;
        }
        let elsewhere = self.partitions.iter().filter_map(|p| {
            let copy = backing::lookup_path(p.root.as_fd_ref(), path).ok()?;
            Some(self.header_in(path, copy.as_fd_ref()))
        });
        header_of_copies(std::iter::once(here).chain(elsewhere))
    }

    /// The folder of the backing directory `fd` at spool path `path`
    /// (used where no node exists: directory renames, the start-up scan).
    pub fn folder_for_path(&self, path: &Path, fd: BorrowedFd) -> Option<FolderId> {
        match self.layout.classify(path) {
            DirRole::Folder(f) => Some(self.accounts.folder(&f)),
            DirRole::Unowned => None,
            DirRole::UuidMailbox => {
                if let Some(f) = self.accounts.owner(path) {
                    return Some(f);
                }
                let Header::Names(id) = self.header_at_path(path, fd) else {
                    return None;
                };
                self.accounts.remember_owner(path, id);
                Some(id)
            }
        }
    }

    /// Where the files of directory `fd` are charged once it has moved from
    /// `old` to `new`: a UUID mailbox directory takes its owner with it (its
    /// header moves with it), whatever the path was before.
    pub(super) fn folder_after_move(
        &self,
        old: &Path,
        new: &Path,
        fd: BorrowedFd,
    ) -> Option<FolderId> {
        if self.layout.classify(new) != DirRole::UuidMailbox {
            return self.folder_for_path(new, fd);
        }
        match self.layout.classify(old) {
            DirRole::UuidMailbox => self.folder_for_path(old, fd),
            _ => match self.header_at_path(old, fd) {
                Header::Names(f) => Some(f),
                Header::Absent | Header::Unusable => None,
            },
        }
    }

    /// For `statfs` on a directory: the tightest quota of its folder
    /// (mailbox or tenant), or of the tenant whose directory it is, as
    /// (limit, used). None: show the partitions' real space.
    pub(super) fn quota_of_dir(&self, dir: &Node) -> Option<(u64, u64)> {
        match self.folder_of(dir) {
            Some(f) => self.accounts.statfs_quota(f),
            None => {
                let tenant = self.layout.tenant_of_dir(&self.dir_path(dir))?;
                self.accounts.tenant_quota(&tenant)
            }
        }
    }

    /// The scan met a name of a file with several names.
    pub fn note_multi_link(&self, st: &libc::stat, folder: Option<FolderId>) {
        self.accounts.note_multi_link(st, folder);
    }

    pub(super) fn charge_kind(&self, name: &OsStr) -> ChargeKind {
        if self.layout.is_metadata_name(name) {
            ChargeKind::Metadata
        } else {
            ChargeKind::Data
        }
    }

    /// The accounting state of a regular file met by name in `parent`:
    /// the known one (live or multi-link), or a fresh one from its `lstat`.
    pub(super) fn file_state(
        &self,
        key: Key,
        st: &libc::stat,
        parent: &Node,
        name: &OsStr,
    ) -> Arc<Mutex<FileState>> {
        let _steady = self.accounts.steady();
        let state = self.accounts.file_state(key, st, || self.folder_of(parent));
        let metadata = self.layout.is_metadata_name(name);
        state.lock().unwrap().named(parent.ino, name, metadata);
        state
    }

    /// The accounting state of a regular file met by name: the shared one
    /// if known, else a private one from its `lstat`.
    pub(super) fn known_state(
        &self,
        key: Key,
        st: &libc::stat,
        dir: &Node,
    ) -> Arc<Mutex<FileState>> {
        self.accounts.known_state(key, st, || self.folder_of(dir))
    }

    /// A size change of a regular file through the accounting path (see
    /// `Accounts::change_size`), `fd` on its backing file; a refusal is
    /// logged as `what`.
    pub(super) fn change_size<R>(
        &self,
        file: &FileNode,
        fd: BorrowedFd,
        what: &'static str,
        planned: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> io::Result<R>,
        reached: impl FnOnce(&R, u64) -> u64,
    ) -> FsResult<R> {
        // Writing a `cyrus.header` in place may move its directory's
        // charges (`header_written`): that runs alone.
        let header = file.state.lock().unwrap().name == CYRUS_HEADER;
        let _gate = self.accounts.passage(header);
        let refused = |s: &FileState, r| self.refused(what, s, r, None);
        let measured = || backing::stat_fd(fd).ok().map(|st| st.st_size as u64);
        let done = self
            .accounts
            .change_size(&file.state, planned, op, reached, measured, &refused)
            .map_err(|e| self.on_partition(file.leaf.part, e))?;
        self.header_written(file);
        Ok(done)
    }

    /// A `cyrus.header` written in place (Cyrus copies a mailbox to another
    /// partition that way) names its directory's owner. Every write,
    /// truncate, fallocate and copy goes through `change_size`, whether or
    /// not a RELEASE follows (per-file descriptors get none); a header not
    /// yet complete does not parse and names nobody.
    fn header_written(&self, file: &FileNode) {
        let parent = {
            let s = file.state.lock().unwrap();
            if s.name != CYRUS_HEADER {
                return;
            }
            s.parent
        };
        if let Ok(dir) = self.dir_node(parent) {
            self.learn_uuid_owner(&dir);
        }
    }

    /// Logs a refusal with everything an operator needs, returns EDQUOT.
    /// `target`: the new name a link or rename asked for.
    fn refused(&self, what: &str, s: &FileState, r: Refusal, target: Option<&Path>) -> FsError {
        let path = self
            .inodes
            .get(s.parent)
            .map(|d| self.child_path(&d, &s.name));
        let path = path.unwrap_or_else(|| Path::new(&s.name).to_path_buf());
        match target {
            Some(t) => warn!("EDQUOT: {what} {} -> {}: {r}", path.display(), t.display()),
            None => warn!("EDQUOT: {what} {}: {r}", path.display()),
        }
        FsError::Quota(r)
    }

    /// A new name for a file in `dir` (link): reserves its size there
    /// first; `op` makes the name.
    pub(super) fn add_name(
        &self,
        state: &Mutex<FileState>,
        (dir, name): (&Node, &OsStr),
        what: &'static str,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        // The target path is only worked out for the log line.
        let refused = |s: &FileState, r| {
            let target = self.child_path(dir, name);
            self.refused(what, s, r, Some(&target))
        };
        let kind = self.charge_kind(name);
        self.accounts
            .add_name(state, self.folder_of(dir), kind, op, &refused)
    }

    /// A name of a regular file in `dir` is removed (unlink) by `op`.
    pub(super) fn remove_name(
        &self,
        key: Key,
        state: &Arc<Mutex<FileState>>,
        dir: &Node,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        let holder = self.inodes.holder(&key);
        let gone = || self.inodes.forget_key(&key, holder);
        self.accounts
            .remove_name(key, state, self.folder_of(dir), op, gone)
    }

    /// A rename of regular-file names, done by `op` (see
    /// `Accounts::rename_names`).
    pub(super) fn rename_names(
        &self,
        plan: RenamePlan,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        let (src_at, dst_at) = (self.place(plan.src_at), self.place(plan.dst_at));
        // Metadata grace only when every name that arrives is metadata.
        let moves = src_at.folder != dst_at.folder;
        let mut arriving = Vec::new();
        if plan.src.is_some() && moves {
            arriving.push(dst_at.metadata);
        }
        if plan.dst.is_some() && plan.exchange && moves {
            arriving.push(src_at.metadata);
        }
        let kind = if !arriving.is_empty() && arriving.iter().all(|m| *m) {
            ChargeKind::Metadata
        } else {
            ChargeKind::Data
        };
        let target = plan.dst_at;
        // The target path is only worked out for the log line.
        let refused = |s: &FileState, r| {
            let t = self.child_path(target.0, target.1);
            self.refused("rename", s, r, Some(&t))
        };
        let replaced = plan.dst.map(|(key, _)| (key, self.inodes.holder(&key)));
        let gone = || {
            if let Some((key, holder)) = replaced {
                self.inodes.forget_key(&key, holder);
            }
        };
        let charges = RenameCharges {
            src: plan.src,
            dst: plan.dst,
            exchange: plan.exchange,
            src_at,
            dst_at,
        };
        self.accounts
            .rename_names(charges, kind, op, &refused, gone)
    }

    fn place<'a>(&self, (dir, name): (&Node, &'a OsStr)) -> Place<'a> {
        Place {
            dir: dir.ino,
            name,
            metadata: self.layout.is_metadata_name(name),
            folder: self.folder_of(dir),
        }
    }

    /// A `cyrus.header` in `dir` landed (renamed or linked into place,
    /// written in place) or went (unlinked, renamed away): if the directory
    /// now names another owner, or none, move its files there. Not refused:
    /// Cyrus cannot recover from a failed header write; growth after it is
    /// limited. A header that does not parse (one being written in place is
    /// empty for a moment) changes nothing.
    pub(super) fn learn_uuid_owner(&self, dir: &Node) {
        let path = self.dir_path(dir);
        if self.layout.classify(&path) != DirRole::UuidMailbox {
            return;
        }
        let new = match self.read_header(dir) {
            Header::Names(f) => Some(f),
            Header::Absent => None,
            Header::Unusable => return,
        };
        let files = || self.regular_files(dir);
        if self.accounts.learn_owner(&path, new, files) {
            let owner = new.map(|f| self.accounts.folder_name(f).display());
            info!(
                "{}: mailbox {}",
                path.display(),
                owner.as_deref().unwrap_or("none (no cyrus.header)")
            );
        }
    }

    /// Every regular file directly in `dir` (any copy), with its size.
    fn regular_files(&self, dir: &Node) -> Vec<(Key, u64)> {
        let Some(d) = dir.dir() else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for (_, fd) in d.copies() {
            for (_, _, st) in stat_entries(fd.as_fd_ref()).unwrap_or_default() {
                if is_reg(&st) {
                    out.push((Key::of(&st), st.st_size as u64));
                }
            }
        }
        out
    }
}

/// What a UUID mailbox directory's `cyrus.header` says.
enum Header {
    Names(FolderId),
    Absent,
    /// Present but unreadable or not (yet) a header.
    Unusable,
}

/// The first copy's header that names an owner; else unusable if any copy
/// has one, absent if none has.
fn header_of_copies(copies: impl Iterator<Item = Header>) -> Header {
    let mut seen = Header::Absent;
    for h in copies {
        match h {
            Header::Names(_) => return h,
            Header::Unusable => seen = Header::Unusable,
            Header::Absent => {}
        }
    }
    seen
}

/// What `rename_names` needs to know of a rename: the regular files on
/// each side (the target with its backing key), and where each name is.
pub(super) struct RenamePlan<'a> {
    pub src: Option<&'a Arc<Mutex<FileState>>>,
    pub dst: Option<(Key, &'a Arc<Mutex<FileState>>)>,
    pub exchange: bool,
    pub src_at: (&'a Node, &'a OsStr),
    pub dst_at: (&'a Node, &'a OsStr),
}
