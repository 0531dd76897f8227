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
//! rate. Such tasks may take the CPU as soon as the thread turns
//! `SCHED_IDLE`, before it commits; the thread notices a switch that took
//! long (it was preempted, or its vCPU was), leaves the commit to the
//! ordinary wait that follows, and stays out of the hand-off for a while
//! (`HOLD`, doubling up to `BACKOFF` while that goes on). Work that
//! arrives during the commit is left to a guard thread, which puts a
//! thread held in its commit longer than `GRACE` back to `SCHED_OTHER`
//! and keeps it out of the hand-off for `BACKOFF`.
//!
//! The thread turns `SCHED_IDLE` only around the submission of the
//! commit and is an ordinary thread again before it waits for or serves
//! a request; a thread started with another policy (`chrt`, systemd's
//! `CPUSchedulingPolicy=`) keeps it and never hands off.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::{debug, error};

use crate::metrics;

/// How long a thread may sit in its commit as `SCHED_IDLE`. The caller
/// it woke normally blocks on its next request well within this.
const GRACE: Duration = Duration::from_millis(3);
/// How long a rescued thread commits as an ordinary thread.
const BACKOFF: Duration = Duration::from_secs(1);
/// A switch to `SCHED_IDLE` slower than this was preempted. The call
/// itself takes about a microsecond.
const SLOW_SWITCH: Duration = Duration::from_micros(30);
/// How long a thread that found its CPU busy first stays out.
const HOLD: Duration = Duration::from_millis(16);
/// The guard's poll interval while requests flow; it doubles up to
/// `QUIET_POLL` while none come.
const POLL: Duration = Duration::from_millis(2);
const QUIET_POLL: Duration = Duration::from_millis(64);
/// `hold_until` of a thread that never hands off.
const NEVER: u64 = u64::MAX;

/// The hand-off state of every ring thread, shared with the guard.
pub struct Handoff {
    slots: Box<[Slot]>,
    epoch: Instant,
    stopped: AtomicBool,
}

/// One ring thread's state. Only that thread writes `commits`; the guard
/// reads it to see whether requests flow. A cache line (pair) of its own:
/// threads on different CPUs write their slots on every request.
#[derive(Default)]
#[repr(align(128))]
struct Slot {
    /// The thread's id while its `Turn` lives, else 0. The guard changes
    /// a thread's policy only while holding this lock, and the `Turn`
    /// clears it under the lock before the thread ends, so the guard
    /// never acts on an id that may name another thread by then.
    tid: Mutex<i32>,
    /// When the thread began its `SCHED_IDLE` commit (ns since `epoch`,
    /// at least 1); 0 outside one. Set before the switch and cleared after
    /// the switch back, so it covers every instant the thread is idle.
    idle_since: AtomicU64,
    /// Until when (ns since `epoch`) it commits as an ordinary thread.
    hold_until: AtomicU64,
    /// The next hold after a slow switch (ns; 0 for `HOLD`).
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
            stopped: AtomicBool::new(false),
        });
        let watched = handoff.clone();
        std::thread::Builder::new()
            .name("ring-guard".into())
            .spawn(move || guard(watched))
            .map_err(|e| format!("cannot start the ring guard thread: {e}"))?;
        Ok(handoff)
    }

    /// Ends the guard (the ring threads are gone, or never all started).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    /// The slot of ring thread `index`, claimed by the calling thread.
    pub fn turn(self: &Arc<Handoff>, index: usize) -> Turn {
        let slot = &self.slots[index];
        // SAFETY: no preconditions.
        let (tid, policy) = unsafe { (libc::gettid(), libc::sched_getscheduler(0)) };
        *lock(&slot.tid) = tid;
        if policy != libc::SCHED_OTHER {
            debug!("ring thread {tid} keeps its scheduling policy {policy}: no hand-off");
            slot.hold_until.store(NEVER, Ordering::Relaxed);
        }
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
    /// Runs `submit` (the submission of a commit) as `SCHED_IDLE`, or,
    /// while this thread is held out of the hand-off, returns `None` and
    /// leaves the submission to the ordinary wait that follows.
    pub fn hand_off<T>(&self, submit: impl FnOnce() -> T) -> Option<T> {
        let slot = self.slot();
        let before = self.handoff.now();
        // One writer: a plain store, no locked add.
        let commits = slot.commits.load(Ordering::Relaxed);
        slot.commits.store(commits + 1, Ordering::Relaxed);
        if before < slot.hold_until.load(Ordering::Relaxed) {
            return None;
        }
        // Published before the switch: the guard sees every instant the
        // thread is SCHED_IDLE. Should it reset the thread before the
        // switch takes effect, `Idle` still switches back.
        slot.idle_since.store(before, Ordering::Release);
        if set_policy(0, libc::SCHED_IDLE).is_err() {
            slot.idle_since.store(0, Ordering::Release);
            slot.hold_until.store(NEVER, Ordering::Relaxed);
            return None;
        }
        let idle = Idle(slot);
        let switched = self.handoff.now();
        if switched - before > SLOW_SWITCH.as_nanos() as u64 {
            drop(idle);
            slot.hold_off(switched);
            return None;
        }
        slot.next_hold.store(0, Ordering::Relaxed);
        Some(submit())
    }

    fn slot(&self) -> &Slot {
        &self.handoff.slots[self.index]
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        *lock(&self.slot().tid) = 0;
    }
}

/// The calling thread's `SCHED_IDLE` stretch; ends it when dropped, also
/// on a panic.
struct Idle<'a>(&'a Slot);

impl Drop for Idle<'_> {
    fn drop(&mut self) {
        // Also when the guard has taken this stretch (its reset may come
        // after this thread has gone on to wait), and before the stretch
        // is marked over, so that the guard sees it until then.
        if let Err(e) = set_policy(0, libc::SCHED_OTHER) {
            self.0.hold_until.store(NEVER, Ordering::Relaxed);
            error!("a ring thread cannot leave SCHED_IDLE ({e}); it no longer hands off");
        }
        self.0.idle_since.store(0, Ordering::Release);
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
        self.hold_until.fetch_max(now + hold, Ordering::Relaxed);
        let next = (hold * 2).min(BACKOFF.as_nanos() as u64);
        self.next_hold.store(next, Ordering::Relaxed);
    }
}

/// Watches the ring threads until they are gone.
fn guard(handoff: Arc<Handoff>) {
    let mut poll = POLL;
    let mut seen = 0;
    while !handoff.stopped.load(Ordering::Relaxed) && Arc::strong_count(&handoff) > 1 {
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
    let backoff = BACKOFF.as_nanos() as u64;
    for slot in handoff.slots.iter() {
        let since = slot.idle_since.load(Ordering::Acquire);
        if since == 0 || now.saturating_sub(since) <= grace {
            continue;
        }
        let tid = lock(&slot.tid);
        let taken = slot
            .idle_since
            .compare_exchange(since, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if *tid == 0 || !taken {
            continue; // it finished meanwhile, or is gone
        }
        slot.hold_until.fetch_max(now + backoff, Ordering::Relaxed);
        slot.next_hold.store(backoff, Ordering::Relaxed);
        let _ = set_policy(*tid, libc::SCHED_OTHER);
        metrics::global().handoff_rescued();
        debug!(
            "ring thread {} waited {} µs for its CPU in a commit; it commits as an ordinary thread for {} s",
            *tid,
            (now - since) / 1000,
            BACKOFF.as_secs()
        );
    }
}

fn lock(tid: &Mutex<i32>) -> std::sync::MutexGuard<'_, i32> {
    tid.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
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

/// `sched_setscheduler` for thread `tid` (0: the calling thread); the nice
/// value is kept.
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

    /// The hand-off state, or `None` where this process may not switch
    /// (an unprivileged `cargo test`).
    fn started() -> Option<Arc<Handoff>> {
        Handoff::start(1)
            .map_err(|why| eprintln!("skipped: {why}"))
            .ok()
    }

    /// Hands `submit` off, retrying while a slow switch (a busy test
    /// machine) holds the thread back.
    fn handed_off<T>(turn: &Turn, submit: impl Fn() -> T) -> T {
        for _ in 0..50 {
            if let Some(result) = turn.hand_off(&submit) {
                return result;
            }
            assert_eq!(policy(), libc::SCHED_OTHER);
            std::thread::sleep(HOLD * 3);
        }
        panic!("held back 50 times in a row");
    }

    #[test]
    fn a_commit_runs_idle_and_the_thread_ends_ordinary() {
        let Some(handoff) = started() else { return };
        let turn = handoff.turn(0);
        assert_eq!(handed_off(&turn, policy), libc::SCHED_IDLE);
        assert_eq!(policy(), libc::SCHED_OTHER);
        handoff.stop();
    }

    #[test]
    fn the_guard_frees_a_held_thread_and_holds_it_back() {
        let Some(handoff) = started() else { return };
        let turn = handoff.turn(0);
        let rescues = metrics::global().handoff_rescues();
        let inside = handed_off(&turn, || {
            // the guard acts after GRACE, within a poll or two
            std::thread::sleep(GRACE * 4 + POLL * 4);
            policy()
        });
        assert_eq!(inside, libc::SCHED_OTHER, "the guard put it back");
        assert_eq!(policy(), libc::SCHED_OTHER);
        assert!(metrics::global().handoff_rescues() > rescues);
        assert!(turn.hand_off(policy).is_none(), "held back after a rescue");
        handoff.stop();
    }

    #[test]
    fn a_thread_with_another_policy_keeps_it() {
        let Some(handoff) = started() else { return };
        let kept = std::thread::spawn(move || {
            set_policy(0, libc::SCHED_BATCH).unwrap();
            let turn = handoff.turn(0);
            let handed = turn.hand_off(policy);
            handoff.stop();
            (handed, policy())
        })
        .join()
        .unwrap();
        assert_eq!(kept, (None, libc::SCHED_BATCH));
    }
}
