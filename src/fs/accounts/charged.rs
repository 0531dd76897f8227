//! Where a file's bytes are charged: once per quota root among its names,
//! at the folder of its first name there. A change of names is a
//! [`Recharge`]: the folders the ledger gains and loses the file's size at.

use std::sync::MutexGuard;

use super::{Accounts, FileState, Files};
use crate::quota::{FolderId, Ledger};

/// A file's names becoming `names`: the new charged folders, and what the
/// ledger must add and take off (each by the file's size) to get there.
pub(super) struct Recharge {
    names: Vec<FolderId>,
    charged: Vec<FolderId>,
    pub added: Vec<FolderId>,
    pub removed: Vec<FolderId>,
}

impl Recharge {
    /// Where the file will be charged.
    pub fn charged(&self) -> &[FolderId] {
        &self.charged
    }

    /// Records the new names in the state (the ledger is done separately).
    pub fn apply(self, s: &mut FileState) {
        s.charges = self.names;
        s.set_charged(self.charged);
    }
}

impl Accounts {
    pub(super) fn recharge(&self, s: &FileState, names: Vec<FolderId>) -> Recharge {
        let charged = charged_set(&self.ledger, &names);
        Recharge {
            added: minus(&charged, s.charged()),
            removed: minus(s.charged(), &charged),
            names,
            charged,
        }
    }

    /// Applies a recharge to the ledger without a check (what is on disk
    /// already, or a charge moving within one quota root).
    pub(super) fn apply_unchecked(&self, size: u64, r: &Recharge) {
        self.ledger.refund(&r.removed, size);
        self.ledger.charge_unchecked(&r.added, size);
    }
}

/// The folders a file with names in `names` is charged at: one per quota
/// root, the first name's folder there.
pub(super) fn charged_set(ledger: &Ledger, names: &[FolderId]) -> Vec<FolderId> {
    if names.len() <= 1 {
        return names.to_vec();
    }
    let roots = ledger.roots(names);
    names
        .iter()
        .enumerate()
        .filter(|(i, _)| !roots[..*i].contains(&roots[*i]))
        .map(|(_, f)| *f)
        .collect()
}

/// Quota roots changed (a run-time limit): every file with several names
/// is charged again by the new roots.
pub(super) fn rebalance(ledger: &Ledger, files: &Files) {
    let states: Vec<_> = files.iter().map(|e| e.value().clone()).collect();
    for state in states {
        let mut s: MutexGuard<FileState> = state.lock().unwrap();
        if s.charges.len() <= 1 {
            continue;
        }
        let charged = charged_set(ledger, &s.charges);
        ledger.refund(&minus(s.charged(), &charged), s.size);
        ledger.charge_unchecked(&minus(&charged, s.charged()), s.size);
        s.set_charged(charged);
    }
}

pub(super) fn minus(a: &[FolderId], b: &[FolderId]) -> Vec<FolderId> {
    a.iter().filter(|f| !b.contains(f)).copied().collect()
}

/// `names` with one more name in `folder` (last in order).
pub(super) fn with_name(names: &[FolderId], folder: Option<FolderId>) -> Vec<FolderId> {
    let mut out = names.to_vec();
    out.extend(folder);
    out
}

/// `names` without one name in `folder`, the order of the others kept.
pub(super) fn without_name(names: &[FolderId], folder: Option<FolderId>) -> Vec<FolderId> {
    let mut out = names.to_vec();
    if let Some(i) = folder.and_then(|f| out.iter().position(|c| *c == f)) {
        out.remove(i);
    }
    out
}

/// One name moves from folder `from` to `to`.
pub(super) fn moved(
    names: &[FolderId],
    from: Option<FolderId>,
    to: Option<FolderId>,
) -> Vec<FolderId> {
    if from == to {
        return names.to_vec();
    }
    with_name(&without_name(names, from), to)
}
