//! Subtree moves run alone.
//!
//! A directory rename that moves a subtree's charges to other folders
//! works in steps: walk the subtree noting each file's size, transfer the
//! charges, rename the backing directories, then let cached folders be
//! worked out again. The kernel locks only the two parent directories, so
//! a write, create, link or unlink inside the subtree could run between
//! the steps: growth charged to the old folder after its file's charge
//! moved, a file created there charged to the old folder for good, an
//! unlinked one charged twice. So the operations that move charges
//! wholesale hold this gate exclusively, and every other operation that
//! works out a folder or changes a charge holds it shared. The exclusive
//! ones are rare (an administrator renaming a user or a folder, a limit
//! change making a new quota root); shared holders never wait on each
//! other.

use std::cell::Cell;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

thread_local! {
    /// How many passages this thread holds. An operation that calls
    /// another does not lock again: a second shared lock could queue
    /// behind a waiting exclusive one, which waits for the first.
    static DEPTH: Cell<usize> = const { Cell::new(0) };
}

#[derive(Default)]
pub struct MoveGate {
    lock: RwLock<()>,
}

/// Held while an operation runs; dropping it lets the others through.
/// Both guards are `None` inside a passage this thread already holds.
#[must_use = "the gate is only held while the passage lives"]
pub struct Passage<'a> {
    _shared: Option<RwLockReadGuard<'a, ()>>,
    _exclusive: Option<RwLockWriteGuard<'a, ()>>,
}

impl MoveGate {
    /// For an operation that works out folders or changes charges: no
    /// subtree move runs until the passage is dropped.
    pub fn shared(&self) -> Passage<'_> {
        let outermost = enter();
        Passage {
            _shared: outermost.then(|| self.lock.read().unwrap_or_else(|e| e.into_inner())),
            _exclusive: None,
        }
    }

    /// For an operation that moves charges wholesale: it runs alone.
    pub fn exclusive(&self) -> Passage<'_> {
        let outermost = enter();
        debug_assert!(
            outermost,
            "an exclusive passage inside another would wait for itself"
        );
        Passage {
            _shared: None,
            _exclusive: outermost.then(|| self.lock.write().unwrap_or_else(|e| e.into_inner())),
        }
    }
}

/// Counts one more passage on this thread; true if it is the only one.
fn enter() -> bool {
    let depth = DEPTH.get();
    DEPTH.set(depth + 1);
    depth == 0
}

impl Drop for Passage<'_> {
    fn drop(&mut self) {
        DEPTH.set(DEPTH.get() - 1);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_nested_shared_passage_does_not_queue_behind_a_waiting_exclusive_one() {
        let gate = Arc::new(MoveGate::default());
        let outer = gate.shared();
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gate, done) = (gate.clone(), done.clone());
            std::thread::spawn(move || {
                let _alone = gate.exclusive();
                done.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50)); // the writer now waits
        let inner = gate.shared(); // would deadlock if it locked again
        assert!(
            !done.load(Ordering::SeqCst),
            "exclusive ran beside a shared passage"
        );
        drop(inner);
        drop(outer);
        writer.join().unwrap();
        assert!(done.load(Ordering::SeqCst));
    }

    #[test]
    fn an_exclusive_passage_waits_for_shared_ones_and_excludes_new_ones() {
        let gate = Arc::new(MoveGate::default());
        let alone = gate.exclusive();
        let entered = Arc::new(AtomicBool::new(false));
        let reader = {
            let (gate, entered) = (gate.clone(), entered.clone());
            std::thread::spawn(move || {
                let _p = gate.shared();
                entered.store(true, Ordering::SeqCst);
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !entered.load(Ordering::SeqCst),
            "shared passage during an exclusive one"
        );
        drop(alone);
        reader.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }
}
