//! The accounting path. Every operation that changes a regular file's size
//! goes through [`SpoolFs::change_size`]; every operation that adds or
//! removes a name of one goes through [`SpoolFs::add_name`] /
//! [`SpoolFs::remove_name`] / [`SpoolFs::rename_names`]. Nothing else touches
//! the ledger, so usage(m) = Σ st_size of the names under m holds by
//! construction.
//!
//! A file is charged once per name in an attributed folder (`charges`, a
//! multiset of folders). Growth is reserved in the ledger *before* the
//! backing call, all-or-nothing over every mailbox and tenant touched, and
//! settled to the size actually reached afterwards.

use std::ffi::OsStr;
use std::io;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use log::{info, warn};

use super::SpoolFs;
use super::inode::{FileNode, FileState, Key, Node};
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
        let epoch = self.epoch.load(Ordering::Acquire);
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
            DirRole::Folder(f) => Some(self.ledger.folder(&f)),
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
        self.uuid_owners.get(path).map(|f| *f)
    }

    fn read_header(&self, dir: &Node) -> Option<FolderId> {
        let name = std::ffi::CString::new(CYRUS_HEADER).expect("constant");
        for (_, fd) in dir.dir()?.copies() {
            match backing::read_small_file(fd.as_fd_ref(), &name, HEADER_READ_LIMIT) {
                Ok(bytes) => match parse_cyrus_header(&bytes, self.layout.default_tenant()) {
                    Ok(f) => return Some(self.ledger.folder(&f)),
                    Err(e) => warn!(
                        "{}: unusable {CYRUS_HEADER}: {e}",
                        self.dir_path(dir).display()
                    ),
                },
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => warn!(
                    "{}: cannot read {CYRUS_HEADER}: {e}",
                    self.dir_path(dir).display()
                ),
            }
        }
        None
    }

    /// The folder of the backing directory `fd` at spool path `path`
    /// (used where no node exists: directory renames, the start-up scan).
    pub fn folder_for_path(&self, path: &Path, fd: BorrowedFd) -> Option<FolderId> {
        match self.layout.classify(path) {
            DirRole::Folder(f) => Some(self.ledger.folder(&f)),
            DirRole::Unowned => None,
            DirRole::UuidMailbox => {
                if let Some(f) = self.uuid_owners.get(path) {
                    return Some(*f);
                }
                let name = std::ffi::CString::new(CYRUS_HEADER).expect("constant");
                let bytes = backing::read_small_file(fd, &name, HEADER_READ_LIMIT).ok()?;
                let f = parse_cyrus_header(&bytes, self.layout.default_tenant()).ok()?;
                let id = self.ledger.folder(&f);
                self.uuid_owners.insert(path.to_path_buf(), id);
                Some(id)
            }
        }
    }

    /// For `statfs` on a directory: the tightest quota of its folder
    /// (mailbox or tenant), or of the tenant whose directory it is, as
    /// (limit, used). None: show the partitions' real space.
    pub(super) fn quota_of_dir(&self, dir: &Node) -> Option<(u64, u64)> {
        match self.folder_of(dir) {
            Some(f) => self.ledger.statfs_quota(f),
            None => {
                let tenant = self.layout.tenant_of_dir(&self.dir_path(dir))?;
                self.ledger.tenant_quota(&tenant)
            }
        }
    }

    /// The scan met a name of a file with several names: remember which
    /// folder this name charges, so writes through any name charge all.
    pub fn note_multi_link(&self, st: &libc::stat, folder: Option<FolderId>) {
        let state = self.files.entry(Key::of(st)).or_insert_with(|| {
            Arc::new(Mutex::new(FileState {
                size: st.st_size as u64,
                nlink: st.st_nlink,
                ..Default::default()
            }))
        });
        state.lock().unwrap().charges.extend(folder);
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
        let state = self
            .files
            .entry(key)
            .or_insert_with(|| {
                let charges = self.folder_of(parent).into_iter().collect();
                Arc::new(Mutex::new(FileState {
                    size: st.st_size as u64,
                    nlink: st.st_nlink,
                    charges,
                    ..Default::default()
                }))
            })
            .clone();
        let mut s = state.lock().unwrap();
        s.metadata = self.layout.is_metadata_name(name);
        s.parent = parent.ino;
        s.name = name.to_owned();
        drop(s);
        state
    }

    /// A file node was forgotten: keep its state only if other names need it.
    pub(super) fn release_file_state(&self, file: &FileNode) {
        let single_name = file.state.lock().unwrap().nlink <= 1;
        // Two references: the index's and the dying node's; a third means a
        // new node for the same file already took it.
        self.files.remove_if(&file.key, |_, s| {
            single_name && Arc::ptr_eq(s, &file.state) && Arc::strong_count(s) <= 2
        });
    }

    /// THE accounting path for sizes. Under the file's lock: reserve what
    /// `planned` may add, run `op`, settle to the size `reached` says the
    /// file now has. A refusal changes nothing and is logged once.
    pub(super) fn change_size<R>(
        &self,
        state: &Mutex<FileState>,
        what: &'static str,
        planned: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> io::Result<R>,
        reached: impl FnOnce(&R, u64) -> u64,
    ) -> FsResult<R> {
        let mut s = state.lock().unwrap();
        let old = s.size;
        let plan = planned(old);
        if plan > old {
            let kind = if s.metadata {
                ChargeKind::Metadata
            } else {
                ChargeKind::Data
            };
            if let Err(r) = self.ledger.reserve(&s.charges, plan - old, kind) {
                return Err(self.refused(what, &s, r, None));
            }
        }
        let charged = old.max(plan);
        match op() {
            Ok(r) => {
                let now = reached(&r, old);
                self.settle(&s.charges, charged, now);
                s.size = now;
                Ok(r)
            }
            Err(e) => {
                self.settle(&s.charges, charged, old);
                Err(e.into())
            }
        }
    }

    /// Brings the charges from `charged` bytes to the `actual` size.
    fn settle(&self, charges: &[FolderId], charged: u64, actual: u64) {
        if actual < charged {
            self.ledger.refund(charges, charged - actual);
        } else if actual > charged {
            self.ledger.charge_unchecked(charges, actual - charged);
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

    /// A new name for a file in `folder` (link, rename in): reserves its
    /// size there first; `op` makes the name.
    pub(super) fn add_name(
        &self,
        state: &Mutex<FileState>,
        folder: Option<FolderId>,
        (dir, name): (&Node, &OsStr),
        what: &'static str,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        let mut s = state.lock().unwrap();
        if let Some(f) = folder
            && let Err(r) = self.ledger.reserve(&[f], s.size, self.charge_kind(name))
        {
            // The target path is only worked out for the log line.
            let target = self.child_path(dir, name);
            return Err(self.refused(what, &s, r, Some(&target)));
        }
        if let Err(e) = op() {
            if let Some(f) = folder {
                self.ledger.refund(&[f], s.size);
            }
            return Err(e);
        }
        s.nlink += 1;
        s.charges.extend(folder);
        Ok(())
    }

    /// A name of a regular file is removed (unlink) by `op`.
    pub(super) fn remove_name(
        &self,
        key: Key,
        state: &Arc<Mutex<FileState>>,
        folder: Option<FolderId>,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        let s = state.lock().unwrap();
        op()?;
        if let Some(f) = folder {
            self.ledger.refund(&[f], s.size);
        }
        self.name_gone(key, state, s, folder);
        Ok(())
    }

    /// Bookkeeping after one of a file's names is gone: its charge there,
    /// and the file's state and node once it has no name left.
    fn name_gone(
        &self,
        key: Key,
        state: &Arc<Mutex<FileState>>,
        mut s: MutexGuard<FileState>,
        folder: Option<FolderId>,
    ) {
        s.nlink = s.nlink.saturating_sub(1);
        if let Some(f) = folder {
            remove_one(&mut s.charges, f);
        }
        let (gone, single) = (s.nlink == 0, s.nlink <= 1);
        drop(s);
        if gone {
            // The backing inode number may be reused by a new file at once:
            // neither the node nor this state may answer for it any more.
            self.inodes.forget_key(&key);
            self.files.remove_if(&key, |_, st| Arc::ptr_eq(st, state));
        } else if single {
            // Only multi-name files need their state kept without a node.
            self.files
                .remove_if(&key, |_, st| Arc::strong_count(st) == 1);
        }
    }

    /// A rename of regular-file names, done by `op`: the source's name
    /// moves from its folder to the target's; the target's name, if a
    /// regular file, is replaced (leaves its folder) or, in an exchange,
    /// moves the other way. One ledger transfer covers it all, checked on
    /// net growth, so moving mail within a full mailbox or tenant is not
    /// refused and no report ever shows more than the rename leaves.
    pub(super) fn rename_names(
        &self,
        plan: RenamePlan,
        op: impl FnOnce() -> FsResult<()>,
    ) -> FsResult<()> {
        let (from, to) = (self.folder_of(plan.src_at.0), self.folder_of(plan.dst_at.0));
        let (mut src, dst) = lock_pair(plan.src, plan.dst.map(|(_, d)| d));
        let (mut charges, mut credits) = (Vec::new(), Vec::new());
        let mut arriving = Vec::new();
        if let (Some(s), true) = (&src, from != to) {
            charges.extend(to.map(|t| (t, s.size)));
            credits.extend(from.map(|f| (f, s.size)));
            arriving.push(plan.dst_at.1);
        }
        if let Some(d) = &dst {
            if !plan.exchange {
                credits.extend(to.map(|t| (t, d.size)));
            } else if from != to {
                charges.extend(from.map(|f| (f, d.size)));
                credits.extend(to.map(|t| (t, d.size)));
                arriving.push(plan.src_at.1);
            }
        }
        // Metadata grace only when every name that arrives is metadata.
        let kind =
            if !arriving.is_empty() && arriving.iter().all(|n| self.layout.is_metadata_name(n)) {
                ChargeKind::Metadata
            } else {
                ChargeKind::Data
            };
        let transfer = match self.ledger.begin_transfer(&charges, &credits, kind) {
            Ok(t) => t,
            Err(r) => {
                let who = src.as_deref().or(dst.as_deref()).expect("a regular file");
                // The target path is only worked out for the log line.
                let target = self.child_path(plan.dst_at.0, plan.dst_at.1);
                return Err(self.refused("rename", who, r, Some(&target)));
            }
        };
        let result = op();
        self.ledger.end_transfer(transfer, result.is_ok());
        result?;
        if let Some(s) = src.as_deref_mut() {
            move_charge(s, from, to);
            self.renamed(s, plan.dst_at);
        }
        match (dst, plan.exchange) {
            (Some(mut d), true) => {
                move_charge(&mut d, to, from);
                self.renamed(&mut d, plan.src_at);
            }
            (Some(d), false) => {
                let (key, state) = plan.dst.expect("locked with it");
                drop(src); // name_gone may drop the state map entry
                self.name_gone(key, state, d, to);
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// A file's name is now `name` in `dir`.
    fn renamed(&self, s: &mut FileState, (dir, name): (&Node, &OsStr)) {
        s.metadata = self.layout.is_metadata_name(name);
        s.parent = dir.ino;
        s.name = name.to_owned();
    }

    /// A `cyrus.header` landed (renamed into place, or written and synced or
    /// closed) in `dir`: if it names a new owner, move the directory's files
    /// to it. Not refused: Cyrus cannot recover from a failed header write;
    /// growth after it is limited.
    pub(super) fn learn_uuid_owner(&self, dir: &Node) {
        let path = self.dir_path(dir);
        if self.layout.classify(&path) != DirRole::UuidMailbox {
            return;
        }
        let Some(new) = self.read_header(dir) else {
            return;
        };
        let old = self.uuid_owners.get(&path).map(|f| *f);
        self.uuid_owners.insert(path.clone(), new);
        if old != Some(new) {
            info!(
                "{}: mailbox {}",
                path.display(),
                self.ledger.folder_ref(new).display()
            );
            self.reattribute_files(dir, old, Some(new));
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Moves every regular file directly in `dir` from folder `old` to `new`.
    pub(super) fn reattribute_files(
        &self,
        dir: &Node,
        old: Option<FolderId>,
        new: Option<FolderId>,
    ) {
        let Some(d) = dir.dir() else { return };
        for (_, fd) in d.copies() {
            let Ok(entries) = backing::read_dir(fd.as_fd_ref()) else {
                continue;
            };
            for e in entries {
                let Ok(c) = backing::component(&e.name) else {
                    continue;
                };
                let Ok(st) = backing::stat_at(fd.as_fd_ref(), &c) else {
                    continue;
                };
                if super::is_reg(&st) {
                    self.move_charge(Key::of(&st), st.st_size as u64, old, new);
                }
            }
        }
    }

    /// Moves one name's charge between folders, unchecked (reattribution).
    pub(super) fn move_charge(
        &self,
        key: Key,
        size: u64,
        old: Option<FolderId>,
        new: Option<FolderId>,
    ) {
        let state = self.files.get(&key).map(|s| s.clone());
        let size = match &state {
            Some(s) => {
                let mut s = s.lock().unwrap();
                if let Some(o) = old {
                    remove_one(&mut s.charges, o);
                }
                s.charges.extend(new);
                s.size
            }
            None => size,
        };
        if let Some(o) = old {
            self.ledger.refund(&[o], size);
        }
        if let Some(n) = new {
            self.ledger.charge_unchecked(&[n], size);
        }
    }
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

/// Locks two file states in address order, so two renames crossing the
/// same pair of files cannot deadlock.
fn lock_pair<'a>(
    a: Option<&'a Arc<Mutex<FileState>>>,
    b: Option<&'a Arc<Mutex<FileState>>>,
) -> (
    Option<MutexGuard<'a, FileState>>,
    Option<MutexGuard<'a, FileState>>,
) {
    match (a, b) {
        (Some(a), Some(b)) if Arc::as_ptr(b) < Arc::as_ptr(a) => {
            let gb = b.lock().unwrap();
            (Some(a.lock().unwrap()), Some(gb))
        }
        (a, b) => {
            let ga = a.map(|a| a.lock().unwrap());
            (ga, b.map(|b| b.lock().unwrap()))
        }
    }
}

/// A name's charge moves from folder `from` to `to`.
fn move_charge(s: &mut FileState, from: Option<FolderId>, to: Option<FolderId>) {
    if from != to {
        if let Some(f) = from {
            remove_one(&mut s.charges, f);
        }
        s.charges.extend(to);
    }
}

fn remove_one(charges: &mut Vec<FolderId>, f: FolderId) {
    if let Some(i) = charges.iter().position(|c| *c == f) {
        charges.swap_remove(i);
    }
}
