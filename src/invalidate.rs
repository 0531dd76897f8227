//! Late invalidation of the kernel's directory listing cache.
//!
//! The kernel fills its readdir cache from a READDIR reply when the reader
//! gets to run, not when the reply is sent. If the directory changes while
//! that reply is in flight and another reader resets the cache meanwhile,
//! the older reply can still land in the reset cache under the new version,
//! and every later listing repeats it until the next change. The daemon
//! cannot order that, so after a change that may have raced with a listing
//! it drops the directory's cached pages again a little later, when the
//! reader has had time to run (`FUSE_NOTIFY_INVAL_INODE`).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::{INodeNo, Notifier};

/// When to invalidate after the change: soon, and once more for a reader
/// that a loaded machine kept waiting.
const DELAYS: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(400)];

#[derive(Clone)]
pub struct DirInvalidator {
    tx: Sender<u64>,
}

impl DirInvalidator {
    /// Starts the thread; invalidations are sent once `notifier` is set
    /// (the session exists only after the adapter is built).
    pub fn start(notifier: Arc<OnceLock<Notifier>>) -> DirInvalidator {
        let (tx, rx) = mpsc::channel::<u64>();
        std::thread::Builder::new()
            .name("dir-invalidate".into())
            .spawn(move || {
                let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
                loop {
                    let wait = due
                        .peek()
                        .map(|Reverse((t, _))| t.saturating_duration_since(Instant::now()))
                        .unwrap_or(Duration::from_secs(3600));
                    match rx.recv_timeout(wait) {
                        Ok(ino) => {
                            let now = Instant::now();
                            due.extend(DELAYS.iter().map(|d| Reverse((now + *d, ino))));
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    while let Some(Reverse((t, ino))) = due.peek().copied() {
                        if t > Instant::now() {
                            break;
                        }
                        due.pop();
                        if let Some(n) = notifier.get() {
                            // ENOENT: the kernel has forgotten it, nothing cached.
                            let _ = n.inval_inode(INodeNo(ino), 0, 0);
                        }
                    }
                }
            })
            .expect("spawning the invalidation thread");
        DirInvalidator { tx }
    }

    pub fn schedule(&self, dir: u64) {
        let _ = self.tx.send(dir);
    }
}
