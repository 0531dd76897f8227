//! A directory rename (or exchange) moving a whole subtree's charges
//! between folders, as one ledger transfer undone unless committed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::charged::{charged_set, minus, moved};
use super::{Accounts, FileState};
use crate::fs::inode::Key;
use crate::quota::{ChargeKind, FolderId, Refusal, Transfer};

/// One name whose charge a directory rename moves between folders.
pub(in crate::fs) struct ChargeMove {
    pub key: Key,
    pub size: u64,
    pub from: Option<FolderId>,
    pub to: Option<FolderId>,
}

/// A file with a known state whose names move: its moves, and where the
/// transfer left its charge.
struct Pending {
    state: Arc<Mutex<FileState>>,
    moves: Vec<(Option<FolderId>, Option<FolderId>)>,
    expected: Vec<FolderId>,
}

impl Accounts {
    /// Moves every file's share to its new folders, all or nothing, checked
    /// on net growth (the files leave their old folders). A file with
    /// several names is charged once per quota root before and after. The
    /// returned guard is undone on drop unless committed after the backing
    /// rename.
    pub(in crate::fs) fn begin_moves(
        &self,
        moves: Vec<ChargeMove>,
    ) -> Result<SubtreeMove<'_>, Refusal> {
        let (mut charges, mut credits) = (Vec::new(), Vec::new());
        let mut by_key: HashMap<Key, Vec<ChargeMove>> = HashMap::new();
        for m in moves {
            by_key.entry(m.key).or_default().push(m);
        }
        let mut pending = Vec::new();
        for (key, ms) in by_key {
            let Some(state) = self.files.get(&key).map(|s| s.clone()) else {
                // A file with one name: its name's charge moves.
                for m in ms {
                    charges.extend(m.to.map(|t| (t, m.size)));
                    credits.extend(m.from.map(|f| (f, m.size)));
                }
                continue;
            };
            let steps: Vec<_> = ms.iter().map(|m| (m.from, m.to)).collect();
            let s = state.lock().unwrap();
            let r = self.recharge(&s, apply_moves(&s.charges, &steps));
            charges.extend(r.added.iter().map(|&f| (f, s.size)));
            credits.extend(r.removed.iter().map(|&f| (f, s.size)));
            let expected = r.charged().to_vec();
            drop(s);
            pending.push(Pending {
                state,
                moves: steps,
                expected,
            });
        }
        let transfer = self
            .ledger
            .begin_transfer(&charges, &credits, ChargeKind::Data)?;
        Ok(SubtreeMove {
            accounts: self,
            transfer,
            pending,
        })
    }
}

fn apply_moves(
    names: &[FolderId],
    steps: &[(Option<FolderId>, Option<FolderId>)],
) -> Vec<FolderId> {
    steps
        .iter()
        .fold(names.to_vec(), |n, &(from, to)| moved(&n, from, to))
}

/// A directory rename's (or exchange's) charges under way: commit once the
/// backing rename is done; dropped uncommitted, it undoes itself.
#[must_use = "a subtree move is undone when dropped; commit it once the rename is done"]
pub(in crate::fs) struct SubtreeMove<'a> {
    accounts: &'a Accounts,
    transfer: Transfer<'a>,
    pending: Vec<Pending>,
}

impl SubtreeMove<'_> {
    /// The rename happened: known file states learn their new folders (a
    /// change to a file's names since the transfer began is reconciled).
    pub fn commit(self) {
        self.transfer.commit();
        let ledger = &self.accounts.ledger;
        for p in self.pending {
            let mut s = p.state.lock().unwrap();
            let names = apply_moves(&s.charges, &p.moves);
            let charged = charged_set(ledger, &names);
            // The transfer left the file charged at `expected`.
            ledger.refund(&minus(&p.expected, &charged), s.size);
            ledger.charge_unchecked(&minus(&charged, &p.expected), s.size);
            s.charges = names;
            s.set_charged(charged);
        }
    }
}
