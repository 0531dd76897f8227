//! Handing the CPU straight back to the caller when a reply is committed.
//!
//! A ring thread serves the requests of tasks on its own CPU. Committing a
//! reply wakes the caller while the ring thread is still running there, so
//! the scheduler wakes the caller on another, idle CPU: under one Dovecot
//! LMTP connection the caller changed CPU on nine requests in ten, each
//! time a cross-CPU wakeup. The scheduler counts a CPU whose running tasks
//! are all `SCHED_IDLE` as idle, so a thread that commits as `SCHED_IDLE`
//! has the caller woken where it slept, and the caller takes the CPU at
//! once; the thread finishes its submission when the caller blocks again.
//!
//! It pays only while the thread's CPU has nothing else to run. A
//! `SCHED_IDLE` thread runs only when no ordinary task wants its CPU, so
//! with other tasks waiting there its reply (and the queue's next
//! request) would wait behind them, and the caller would be woken
//! elsewhere anyway: under four Cyrus LMTP connections on two CPUs,
//! committing as `SCHED_IDLE` every time cost a tenth of the delivery
//! rate. Such tasks take the CPU the moment the thread turns
//! `SCHED_IDLE`, before it commits, which the thread sees as a slow
//! switch: it then commits as an ordinary thread and stays out of the
//! hand-off for a while (`HOLD`, doubling up to `BACKOFF` while the CPU
//! stays busy). Work that arrives during the commit is left to a guard
//! thread, which puts a thread held in its commit longer than `GRACE`
//! back to `SCHED_OTHER` and keeps it out of the hand-off for `BACKOFF`.
//! The thread waits for and serves requests as an ordinary thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::debug;

use crate::metrics;

/// How long a thread may sit in its commit as `SCHED_IDLE`. The caller
/// it woke normally blocks on its next request well within this.
const GRACE: Duration = Duration::from_millis(3);
/// How long a rescued thread commits as an ordinary thread.
const BACKOFF: Duration = Duration::from_secs(1);
/// A switch to `SCHED_IDLE` slower than this was preempted: other tasks
/// wanted the CPU. The call itself takes about a microsecond.
const SLOW_SWITCH: Duration = Duration::from_micros(30);
/// How long a thread that found its CPU busy first stays out.
const HOLD: Duration = Duration::from_millis(16);
/// The guard's poll interval while requests flow; it doubles up to
/// `QUIET_POLL` while none come.
const POLL: Duration = Duration::from_millis(2);
const QUIET_POLL: Duration = Duration::from_millis(64);

/// The hand-off state of every ring thread, shared with the guard.
pub struct Handoff {
    slots: Box<[Slot]>,
    epoch: Instant,
}

/// One ring thread's state. Only that thread writes `commits`; the guard
/// reads it to see whether requests flow.
#[derive(Default)]
struct Slot {
    tid: AtomicI32,
    /// When the thread turned `SCHED_IDLE` (ns since `epoch`, at least 1);
    /// 0 while it is an ordinary thread.
    idle_since: AtomicU64,
    /// Until when (ns since `epoch`) it must commit as an ordinary thread.
    hold_until: AtomicU64,
    /// The next hold after a slow switch (ns; 0 for `HOLD`). Only the
    /// thread itself uses it.
    next_hold: AtomicU64,
    commits: AtomicU64,
}

/// A ring thread's handle on its slot.
pub struct Turn {
    handoff: Arc<Handoff>,
    index: usize,
}

impl Handoff {
    /// State for `threads` ring threads and the guard that watches them,
    /// or why this process cannot hand off (an unprivileged daemon may
    /// turn `SCHED_IDLE` but not back).
    pub fn start(threads: usize) -> Result<Arc<Handoff>, String> {
        probe()?;
        let handoff = Arc::new(Handoff {
            slots: (0..threads).map(|_| Slot::default()).collect(),
            epoch: Instant::now(),
        });
        let watched = handoff.clone();
        std::thread::Builder::new()
            .name("ring-guard".into())
            .spawn(move || guard(watched))
            .map_err(|e| format!("cannot start the ring guard thread: {e}"))?;
        Ok(handoff)
    }

    /// The slot of ring thread `index`, claimed by the calling thread.
    pub fn turn(self: &Arc<Handoff>, index: usize) -> Turn {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.slots[index].tid.store(tid, Ordering::Relaxed);
        Turn {
            handoff: self.clone(),
            index,
        }
    }

    fn now(&self) -> u64 {
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }
}

impl Turn {
    /// Runs `commit` (the submission that answers a request) as
    /// `SCHED_IDLE`, unless this thread is held out of the hand-off.
    pub fn commit<T>(&self, commit: impl FnOnce() -> T) -> T {
        let handoff = &self.handoff;
        let slot = &handoff.slots[self.index];
        let before = handoff.now();
        slot.commits.fetch_add(1, Ordering::Relaxed);
        if before < slot.hold_until.load(Ordering::Relaxed) {
            return commit();
        }
        slot.idle_since.store(before, Ordering::Release);
        if set_policy(0, libc::SCHED_IDLE).is_err() {
            slot.idle_since.store(0, Ordering::Release);
            return commit();
        }
        let switched = handoff.now();
        if switched - before > SLOW_SWITCH.as_nanos() as u64 {
            self.leave_idle(slot);
            slot.hold_off(switched);
            return commit();
        }
        slot.next_hold.store(0, Ordering::Relaxed);
        let result = commit();
        self.leave_idle(slot);
        result
    }

    fn leave_idle(&self, slot: &Slot) {
        // Zero: the guard took this turn and resets the policy itself.
        if slot.idle_since.swap(0, Ordering::AcqRel) != 0 {
            let _ = set_policy(0, libc::SCHED_OTHER);
        }
    }
}

impl Slot {
    /// Holds the thread out of the hand-off from `now` for its next hold,
    /// and doubles the one after (up to `BACKOFF`).
    fn hold_off(&self, now: u64) {
        let hold = match self.next_hold.load(Ordering::Relaxed) {
            0 => HOLD.as_nanos() as u64,
            n => n,
        };
        self.hold_until.store(now + hold, Ordering::Relaxed);
        let next = (hold * 2).min(BACKOFF.as_nanos() as u64);
        self.next_hold.store(next, Ordering::Relaxed);
    }
}

/// Watches the ring threads until they are gone (the guard then holds the
/// last reference).
fn guard(handoff: Arc<Handoff>) {
    let mut poll = POLL;
    let mut seen = 0;
    while Arc::strong_count(&handoff) > 1 {
        std::thread::sleep(poll);
        let commits: u64 = handoff
            .slots
            .iter()
            .map(|s| s.commits.load(Ordering::Relaxed))
            .sum();
        poll = if commits == seen {
            (poll * 2).min(QUIET_POLL)
        } else {
            POLL
        };
        seen = commits;
        rescue_held(&handoff);
    }
}

/// Puts every thread held in its commit for longer than `GRACE` back to
/// `SCHED_OTHER`, and holds it out of the hand-off for `BACKOFF`.
fn rescue_held(handoff: &Handoff) {
    let now = handoff.now();
    let grace = GRACE.as_nanos() as u64;
    for slot in handoff.slots.iter() {
        let since = slot.idle_since.load(Ordering::Acquire);
        if since == 0 || now.saturating_sub(since) <= grace {
            continue;
        }
        if slot
            .idle_since
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            continue; // it finished meanwhile
        }
        slot.hold_until
            .store(now + BACKOFF.as_nanos() as u64, Ordering::Relaxed);
        let tid = slot.tid.load(Ordering::Relaxed);
        let _ = set_policy(tid, libc::SCHED_OTHER);
        metrics::global().handoff_rescued();
        debug!(
            "ring thread {tid} waited {} µs for its CPU in a commit; it commits as an ordinary thread for {} s",
            (now - since) / 1000,
            BACKOFF.as_secs()
        );
    }
}

/// Whether a thread here can turn `SCHED_IDLE` and back, tried on a
/// throwaway thread.
fn probe() -> Result<(), String> {
    let tried = std::thread::spawn(|| {
        set_policy(0, libc::SCHED_IDLE).and_then(|()| set_policy(0, libc::SCHED_OTHER))
    })
    .join()
    .map_err(|_| "the scheduling probe panicked".to_string())?;
    tried.map_err(|e| format!("a thread cannot turn SCHED_IDLE and back ({e})"))
}

/// `sched_setscheduler` for thread `tid` (0: the calling thread).
fn set_policy(tid: i32, policy: i32) -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: `param` is a valid sched_param for the call's duration.
    if unsafe { libc::sched_setscheduler(tid, policy, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> i32 {
        // SAFETY: no preconditions.
        unsafe { libc::sched_getscheduler(0) }
    }

    #[test]
    fn a_commit_runs_idle_and_ends_ordinary() {
        let handoff = Handoff::start(1).expect("root or CAP_SYS_NICE in tests");
        let turn = handoff.turn(0);
        assert_eq!(turn.commit(policy), libc::SCHED_IDLE);
        assert_eq!(policy(), libc::SCHED_OTHER);
    }

    #[test]
    fn the_guard_frees_a_held_thread_and_holds_it_back() {
        let handoff = Handoff::start(1).expect("probe");
        let turn = handoff.turn(0);
        let after = turn.commit(|| {
            // the guard acts after GRACE and at most one poll
            std::thread::sleep(GRACE * 4 + POLL * 4);
            policy()
        });
        assert_eq!(after, libc::SCHED_OTHER, "the guard put it back");
        assert_eq!(policy(), libc::SCHED_OTHER);
        assert_eq!(
            turn.commit(policy),
            libc::SCHED_OTHER,
            "held back after a rescue"
        );
    }
}
