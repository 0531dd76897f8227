//! The accounting type: [`Accounts`] owns every regular file's charges,
//! the owners learned for UUID mailbox directories, the layout epoch and
//! the ledger handle, all private. It is the only code that changes a
//! charge, so usage(m) = Σ st_size of the names under m holds by
//! construction: a size change, a name added, removed or renamed, a
//! directory subtree moving between folders, a directory learning its
//! owner — each is one method here.
//!
//! A file's bytes count once per quota root (mailbox account) however many
//! names it has there: `charges` lists the folder of each attributed name,
//! in the order the names came; the ledger holds the file's size at the
//! folder of its first name in each root (`charged`, see `charged.rs`).
//! A second name in the same mailbox costs nothing; a name in another
//! mailbox charges that one. Growth is reserved in the ledger *before* the
//! backing call, all-or-nothing over every mailbox and tenant touched, and
//! settled to the size actually reached afterwards. A rename's transfer is
//! a guard (`quota::Transfer`): committed once the backing rename is done,
//! undone on drop, so no error path leaves bytes held. A directory rename
//! moving a subtree between folders runs alone (`gate.rs`): every other
//! operation that works out a folder or changes a charge holds the gate
//! shared.
//!
//! What it does not know: the inode table and the spool paths (see
//! `account.rs`, which works out folders and names and logs refusals).

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

mod charged;
mod gate;
mod subtree;

use charged::{Recharge, moved, with_name, without_name};
use gate::MoveGate;
pub(super) use gate::Passage;
pub(super) use subtree::{ChargeMove, SubtreeMove};

use super::inode::{FileNode, Key};
use crate::error::{FsError, FsResult};
use crate::layout::FolderRef;
use crate::quota::{ChargeKind, FolderId, Ledger, Refusal};

/// What the accounting path knows about a regular file.
#[derive(Debug, Default)]
pub struct FileState {
    size: u64,
    nlink: u64,
    /// The folder of each name in an attributed folder, in the order the
    /// names came (a multiset).
    charges: Vec<FolderId>,
    /// Where the ledger holds this file's size when it has several names:
    /// one folder per quota root among `charges` (see `charged.rs`). Empty
    /// for a file with at most one name, held at `charges` itself (most
    /// files: no allocation).
    charged: Vec<FolderId>,
    /// Whether the last name seen is a metadata file (gets the grace).
    pub metadata: bool,
    /// Last name seen, for log lines only.
    pub parent: u64,
    pub name: OsString,
}

impl FileState {
    fn new(st: &libc::stat, folder: Option<FolderId>) -> FileState {
        FileState {
            size: st.st_size as u64,
            nlink: st.st_nlink,
            charges: folder.into_iter().collect(),
            ..Default::default()
        }
    }

    /// Where the ledger holds this file's size.
    fn charged(&self) -> &[FolderId] {
        if self.charges.len() <= 1 {
            &self.charges
        } else {
            &self.charged
        }
    }

    /// Records where the ledger now holds this file's size.
    fn set_charged(&mut self, charged: Vec<FolderId>) {
        self.charged = if self.charges.len() <= 1 {
            Vec::new()
        } else {
            charged
        };
    }

    /// The size the accounting path knows (for choosing how reads go).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The folder of one of its names, if any is attributed (for `df`).
    pub fn some_folder(&self) -> Option<FolderId> {
        self.charges.first().copied()
    }

    fn kind(&self) -> ChargeKind {
        if self.metadata {
            ChargeKind::Metadata
        } else {
            ChargeKind::Data
        }
    }

    /// The file's name is now `name` in directory `parent`.
    pub fn named(&mut self, parent: u64, name: &OsStr, metadata: bool) {
        self.metadata = metadata;
        self.parent = parent;
        self.name = name.to_owned();
    }
}

/// Builds the error a refusal answers with (and logs it with the names
/// only the caller knows).
pub(super) type OnRefusal<'a> = &'a dyn Fn(&FileState, Refusal) -> FsError;

/// A name's new place after a rename: its directory, name, and whether it
/// is a metadata name.
pub(super) struct Place<'a> {
    pub dir: u64,
    pub name: &'a OsStr,
    pub metadata: bool,
    pub folder: Option<FolderId>,
}

/// A rename of regular-file names (see [`Accounts::rename_names`]).
pub(super) struct RenameCharges<'a> {
    pub src: Option<&'a Arc<Mutex<FileState>>>,
    /// The target, if a regular file, with its backing key.
    pub dst: Option<(Key, &'a Arc<Mutex<FileState>>)>,
    pub exchange: bool,
    pub src_at: Place<'a>,
    pub dst_at: Place<'a>,
}

/// The file-state index, by backing key.
type Files = DashMap<Key, Arc<Mutex<FileState>>>;

pub struct Accounts {
    ledger: Arc<Ledger>,
    /// Regular files' accounting state, by backing key: every file with a
    /// live node, and every file with more than one name (so its names'
    /// charges survive the node being forgotten).
    files: Arc<Files>,
    /// Bumped whenever a directory's folder may have changed (directory
    /// renames, `cyrus.header` landing): cached folders are then recomputed.
    epoch: AtomicU64,
    /// Owners of UUID mailbox directories learned from their `cyrus.header`.
    owners: DashMap<PathBuf, FolderId>,
    /// Subtree moves run alone (see `gate.rs`).
    gate: Arc<MoveGate>,
}

impl Accounts {
    pub fn new(ledger: Arc<Ledger>) -> Accounts {
        let files: Arc<Files> = Arc::default();
        let gate = Arc::new(MoveGate::default());
        // A run-time limit can make a folder its own quota root (or stop
        // it being one): files with names in several folders are recounted,
        // alone, as a subtree move would be.
        let (weak, index, alone) = (Arc::downgrade(&ledger), files.clone(), gate.clone());
        ledger.on_roots_changed(Box::new(move || {
            if let Some(ledger) = weak.upgrade() {
                let _alone = alone.exclusive();
                charged::rebalance(&ledger, &index);
            }
        }));
        Accounts {
            ledger,
            files,
            epoch: AtomicU64::new(1),
            owners: DashMap::new(),
            gate,
        }
    }

    // --- the gate -------------------------------------------------------

    /// Held by every operation that works out a folder or changes a
    /// charge, from before the first until after the last: no subtree
    /// move runs meanwhile (see `gate.rs`).
    pub fn steady(&self) -> Passage<'_> {
        self.gate.shared()
    }

    /// `steady()`, or, for an operation that moves charges wholesale
    /// (a directory rename, a `cyrus.header` landing or leaving), the gate
    /// alone.
    pub fn passage(&self, wholesale: bool) -> Passage<'_> {
        match wholesale {
            true => self.gate.exclusive(),
            false => self.gate.shared(),
        }
    }

    // --- folders and owners -------------------------------------------

    pub fn folder(&self, f: &FolderRef) -> FolderId {
        self.ledger.folder(f)
    }

    pub fn folder_name(&self, f: FolderId) -> FolderRef {
        self.ledger.folder_ref(f)
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    fn bump_epoch(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// The learned owner of the UUID mailbox directory at `path`.
    pub fn owner(&self, path: &Path) -> Option<FolderId> {
        self.owners.get(path).map(|f| *f)
    }

    /// Remembers the owner a directory had when its files were charged
    /// (the start-up scan, a directory rename's walk).
    pub fn remember_owner(&self, path: &Path, f: FolderId) {
        self.owners.insert(path.to_path_buf(), f);
    }

    /// A `cyrus.header` landed or went: the directory at `path` belongs to
    /// `new` (None: nobody). `files` lists its regular files (key, size)
    /// and is only asked for when the owner changed; their charges move
    /// unchecked (Cyrus cannot recover from a failed header write).
    pub fn learn_owner(
        &self,
        path: &Path,
        new: Option<FolderId>,
        files: impl FnOnce() -> Vec<(Key, u64)>,
    ) -> bool {
        let old = match new {
            Some(f) => self.owners.insert(path.to_path_buf(), f),
            None => self.owners.remove(path).map(|(_, f)| f),
        };
        let changed = old != new;
        if changed {
            for (key, size) in files() {
                self.move_charge(key, size, old, new);
            }
        }
        self.bump_epoch();
        changed
    }

    /// The directory at `path` is gone (rmdir): owners learned at or below
    /// it are forgotten, so a directory made there later learns its own.
    pub fn forget_owners(&self, path: &Path) {
        let before = self.owners.len();
        self.owners.retain(|k, _| !k.starts_with(path));
        if self.owners.len() != before {
            self.bump_epoch();
        }
    }

    /// Learned owners follow a directory renamed from `old` to `new`.
    pub fn move_owners(&self, old: &Path, new: &Path) {
        let moved: Vec<(PathBuf, FolderId)> = self
            .owners
            .iter()
            .filter(|e| e.key().starts_with(old))
            .map(|e| (rebase(e.key(), old, new), *e.value()))
            .collect();
        self.owners.retain(|k, _| !k.starts_with(old));
        for (k, v) in moved {
            self.owners.insert(k, v);
        }
        self.bump_epoch();
    }

    /// Learned owners follow their directories when two swap places.
    pub fn swap_owners(&self, a: &Path, b: &Path) {
        let moved: Vec<(PathBuf, FolderId)> = self
            .owners
            .iter()
            .filter_map(|e| {
                let k = e.key();
                let to = if k.starts_with(a) {
                    rebase(k, a, b)
                } else if k.starts_with(b) {
                    rebase(k, b, a)
                } else {
                    return None;
                };
                Some((to, *e.value()))
            })
            .collect();
        self.owners
            .retain(|k, _| !k.starts_with(a) && !k.starts_with(b));
        for (k, v) in moved {
            self.owners.insert(k, v);
        }
        self.bump_epoch();
    }

    // --- read-only views of the ledger ----------------------------------

    pub fn statfs_quota(&self, f: FolderId) -> Option<(u64, u64)> {
        self.ledger.statfs_quota(f)
    }

    pub fn tenant_quota(&self, tenant: &str) -> Option<(u64, u64)> {
        self.ledger.tenant_quota(tenant)
    }

    pub fn set_partition(&self, f: FolderId, partition: &str) {
        self.ledger.set_partition(f, partition);
    }

    // --- file states ----------------------------------------------------

    /// The accounting state of a regular file met by name in a directory
    /// of `folder`: the known one (live or multi-link), or a fresh one from
    /// its `lstat`, kept in the index.
    pub fn file_state(
        &self,
        key: Key,
        st: &libc::stat,
        folder: impl FnOnce() -> Option<FolderId>,
    ) -> Arc<Mutex<FileState>> {
        self.files
            .entry(key)
            .or_insert_with(|| Arc::new(Mutex::new(FileState::new(st, folder()))))
            .clone()
    }

    /// The shared state if known, else a private one from its `lstat`
    /// (a file met by name that no node or other name needs).
    pub fn known_state(
        &self,
        key: Key,
        st: &libc::stat,
        folder: impl FnOnce() -> Option<FolderId>,
    ) -> Arc<Mutex<FileState>> {
        match self.files.get(&key) {
            Some(s) => s.clone(),
            None => Arc::new(Mutex::new(FileState::new(st, folder()))),
        }
    }

    /// The scan met a name of a file with several names: remember which
    /// folder this name charges, so writes through any name charge all.
    pub fn note_multi_link(&self, st: &libc::stat, folder: Option<FolderId>) {
        let state = self
            .files
            .entry(Key::of(st))
            .or_insert_with(|| Arc::new(Mutex::new(FileState::new(st, None))));
        state.lock().unwrap().charges.extend(folder);
    }

    /// After the scan: every file met with several names is charged once
    /// per quota root among them (the scan charged the others directly).
    pub fn charge_multi_links(&self) {
        for e in self.files.iter() {
            let mut s = e.value().lock().unwrap();
            // Nothing is charged for it yet (see `scan.rs`).
            let charged = charged::charged_set(&self.ledger, &s.charges);
            self.ledger.charge_unchecked(&charged, s.size);
            s.set_charged(charged);
        }
    }

    /// A file node was forgotten: keep its state only if other names need it.
    pub fn release_file_state(&self, file: &FileNode) {
        let single_name = file.state.lock().unwrap().nlink <= 1;
        // Two references: the index's and the dying node's; a third means a
        // new node for the same file already took it.
        self.files.remove_if(&file.key, |_, s| {
            single_name && Arc::ptr_eq(s, &file.state) && Arc::strong_count(s) <= 2
        });
    }

    /// A stale node gives up its claim on `key`.
    pub fn retire(&self, key: &Key, state: &Arc<Mutex<FileState>>) {
        self.files.remove_if(key, |_, s| Arc::ptr_eq(s, state));
    }

    // --- sizes ----------------------------------------------------------

    /// THE accounting path for sizes. Under the file's lock: reserve what
    /// `planned` may add, run `op`, settle to the size `reached` says the
    /// file now has — or, if `op` failed, to the size `measured` finds
    /// (ext4 grows a file chunk by chunk before an `fallocate` runs out of
    /// space; an `O_SYNC` write's data is in the file before its sync
    /// fails). A refusal changes nothing.
    pub fn change_size<R>(
        &self,
        state: &Mutex<FileState>,
        planned: impl FnOnce(u64) -> u64,
        op: impl FnOnce() -> io::Result<R>,
        reached: impl FnOnce(&R, u64) -> u64,
        measured: impl FnOnce() -> Option<u64>,
        refused: OnRefusal,
    ) -> FsResult<R> {
        let mut s = state.lock().unwrap();
        let old = s.size;
        let plan = planned(old);
        if plan > old
            && let Err(r) = self.ledger.reserve(s.charged(), plan - old, s.kind())
        {
            return Err(refused(&s, r));
        }
        let charged = old.max(plan);
        match op() {
            Ok(r) => {
                let now = reached(&r, old);
                self.settle(s.charged(), charged, now);
                s.size = now;
                Ok(r)
            }
            Err(e) => {
                let now = measured().unwrap_or(old);
                self.settle(s.charged(), charged, now);
                s.size = now;
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

    // --- names ----------------------------------------------------------

    /// A new name for a file in `folder` (link): reserves its size there
    /// first, unless the file has a name in that quota root already; `op`
    /// makes the name.
    pub fn add_name(
        &self,
        state: &Mutex<FileState>,
        folder: Option<FolderId>,
        kind: ChargeKind,
        op: impl FnOnce() -> FsResult<()>,
        refused: OnRefusal,
    ) -> FsResult<()> {
        let mut s = state.lock().unwrap();
        let r = self.recharge(&s, with_name(&s.charges, folder));
        if let Err(e) = self.ledger.reserve(&r.added, s.size, kind) {
            return Err(refused(&s, e));
        }
        if let Err(e) = op() {
            self.ledger.refund(&r.added, s.size);
            return Err(e);
        }
        self.ledger.refund(&r.removed, s.size);
        s.nlink += 1;
        r.apply(&mut s);
        Ok(())
    }

    /// A name of a regular file in `folder` is removed (unlink) by `op`.
    /// `gone` runs when it was the file's last name.
    pub fn remove_name(
        &self,
        key: Key,
        state: &Arc<Mutex<FileState>>,
        folder: Option<FolderId>,
        op: impl FnOnce() -> FsResult<()>,
        gone: impl FnOnce(),
    ) -> FsResult<()> {
        let s = state.lock().unwrap();
        op()?;
        let r = self.recharge(&s, without_name(&s.charges, folder));
        self.apply_unchecked(s.size, &r);
        self.name_gone(key, state, s, r, gone);
        Ok(())
    }

    /// Bookkeeping after one of a file's names is gone (the ledger is
    /// done): its names, and the file's state once it has no name left.
    fn name_gone(
        &self,
        key: Key,
        state: &Arc<Mutex<FileState>>,
        mut s: MutexGuard<FileState>,
        r: Recharge,
        gone: impl FnOnce(),
    ) {
        s.nlink = s.nlink.saturating_sub(1);
        r.apply(&mut s);
        let (last, single) = (s.nlink == 0, s.nlink <= 1);
        drop(s);
        if last {
            // The backing inode number may be reused by a new file at once:
            // neither the node nor this state may answer for it any more.
            gone();
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
    /// `kind`: metadata only when every name that arrives is metadata.
    /// `gone` runs when the replaced file lost its last name.
    pub(super) fn rename_names(
        &self,
        plan: RenameCharges,
        kind: ChargeKind,
        op: impl FnOnce() -> FsResult<()>,
        refused: OnRefusal,
        gone: impl FnOnce(),
    ) -> FsResult<()> {
        let (from, to) = (plan.src_at.folder, plan.dst_at.folder);
        let (mut src, dst) = lock_pair(plan.src, plan.dst.map(|(_, d)| d));
        let (mut charges, mut credits) = (Vec::new(), Vec::new());
        let mut delta = |s: &FileState, names: Vec<FolderId>| {
            let r = self.recharge(s, names);
            charges.extend(r.added.iter().map(|&f| (f, s.size)));
            credits.extend(r.removed.iter().map(|&f| (f, s.size)));
            r
        };
        let src_r = match &src {
            Some(s) if from != to => Some(delta(s, moved(&s.charges, from, to))),
            _ => None,
        };
        let dst_r = match &dst {
            Some(d) if !plan.exchange => Some(delta(d, without_name(&d.charges, to))),
            Some(d) if from != to => Some(delta(d, moved(&d.charges, to, from))),
            _ => None,
        };
        let transfer = match self.ledger.begin_transfer(&charges, &credits, kind) {
            Ok(t) => t,
            Err(r) => {
                let who = src.as_deref().or(dst.as_deref()).expect("a regular file");
                return Err(refused(who, r));
            }
        };
        op()?;
        transfer.commit();
        if let Some(s) = src.as_deref_mut() {
            if let Some(r) = src_r {
                r.apply(s);
            }
            s.named(plan.dst_at.dir, plan.dst_at.name, plan.dst_at.metadata);
        }
        match (dst, plan.exchange) {
            (Some(mut d), true) => {
                if let Some(r) = dst_r {
                    r.apply(&mut d);
                }
                d.named(plan.src_at.dir, plan.src_at.name, plan.src_at.metadata);
            }
            (Some(d), false) => {
                let (key, state) = plan.dst.expect("locked with it");
                drop(src); // name_gone may drop the state map entry
                let r = dst_r.expect("a replaced name");
                self.name_gone(key, state, d, r, gone);
            }
            (None, _) => {}
        }
        Ok(())
    }

    /// Moves one name's charge between folders, unchecked (reattribution).
    fn move_charge(&self, key: Key, size: u64, old: Option<FolderId>, new: Option<FolderId>) {
        match self.files.get(&key).map(|s| s.clone()) {
            Some(state) => {
                let mut s = state.lock().unwrap();
                let r = self.recharge(&s, moved(&s.charges, old, new));
                self.apply_unchecked(s.size, &r);
                r.apply(&mut s);
            }
            None => {
                self.ledger.refund(old.as_slice(), size);
                self.ledger.charge_unchecked(new.as_slice(), size);
            }
        }
    }

    // --- the start-up scan ----------------------------------------------

    /// Zeroes all usage, before a rescan.
    pub fn begin_rebuild(&self) {
        self.ledger.reset_usage();
    }

    /// The scan found `bytes` of regular files in a directory of `folder`.
    pub fn charge_found(&self, folder: FolderId, bytes: u64) {
        self.ledger.charge_unchecked(&[folder], bytes);
    }
}

fn rebase(path: &Path, from: &Path, to: &Path) -> PathBuf {
    to.join(path.strip_prefix(from).expect("prefix"))
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
