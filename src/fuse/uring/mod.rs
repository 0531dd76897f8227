//! FUSE over io_uring (Linux 6.14+): the kernel hands requests to
//! per-CPU queues of ring entries instead of `/dev/fuse` reads, and one
//! submission both answers a request and fetches the next.
//!
//! fuser still mounts, answers INIT (asking for `FUSE_OVER_IO_URING`, see
//! `devfuse.rs`) and runs its `/dev/fuse` loop, which keeps carrying what
//! the kernel never puts on a ring (FORGET, INTERRUPT) and every request
//! when the ring is not used. The queues here decode requests and call the
//! same `Handler` as that loop.
//!
//! - `abi.rs`      the kernel's wire layouts
//! - `dispatch.rs` decode, serve, encode
//! - `queue.rs`    one thread, one ring, one entry
//! - `backing.rs`  passthrough backing files registered for ring opens
//! - `handoff.rs`  replies committed as SCHED_IDLE, so the caller keeps its CPU

mod abi;
mod backing;
mod dispatch;
mod handoff;
mod queue;

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::IoUringMode;
use crate::fuse::handler::Handler;

/// The largest request or reply payload: one write of 256 pages. INIT
/// sets `max_write` to it when the ring is used, and the kernel refuses
/// entries with smaller payload buffers.
pub const MAX_PAYLOAD: usize = 1 << 20;

const ENABLE_PARAMETER: &str = "/sys/module/fuse/parameters/enable_uring";

/// Whether INIT should ask for the ring, and what the kernel answered.
pub struct Offer {
    wanted: bool,
    offered: OnceLock<bool>,
}

impl Offer {
    pub fn new(wanted: bool) -> Offer {
        Offer {
            wanted,
            offered: OnceLock::new(),
        }
    }

    pub fn wanted(&self) -> bool {
        self.wanted
    }

    pub fn kernel_answered(&self, offered: bool) {
        let _ = self.offered.set(offered);
    }

    pub fn offered(&self) -> bool {
        self.offered.get().copied().unwrap_or(false)
    }
}

/// Why this kernel will not carry FUSE over io_uring, if it will not.
pub fn unavailable() -> Option<String> {
    match std::fs::read_to_string(ENABLE_PARAMETER) {
        Err(_) => Some(format!(
            "this kernel has no FUSE over io_uring (no {ENABLE_PARAMETER}; it needs Linux 6.14 or later built with CONFIG_FUSE_IO_URING)"
        )),
        Ok(v) if v.trim() != "Y" => Some(format!(
            "the fuse module parameter enable_uring is off (as root: echo Y > {ENABLE_PARAMETER})"
        )),
        Ok(_) => None,
    }
}

/// What `[mount] io_uring` and the kernel decide before mounting: `Ok`
/// with whether to ask for the ring at INIT, or the refusal for `on`.
pub fn decide(mode: IoUringMode) -> Result<(bool, Option<String>), String> {
    match (mode, unavailable()) {
        (IoUringMode::Off, _) => Ok((false, Some("io_uring is off".into()))),
        (IoUringMode::On, Some(why)) => Err(format!("io_uring is on, but {why}")),
        (IoUringMode::Auto, Some(why)) => Ok((false, Some(why))),
        (_, None) => Ok((true, None)),
    }
}

/// The running queues.
pub struct Rings {
    threads: Vec<JoinHandle<()>>,
    pub queues: usize,
    pub per_queue: usize,
    /// The hand-off state, or why replies are committed as ordinary
    /// threads (see `handoff.rs`).
    handoff: Result<Arc<handoff::Handoff>, String>,
}

impl Rings {
    /// Why replies are committed as ordinary threads, if they are.
    pub fn not_handed_off(&self) -> Option<&str> {
        self.handoff.as_ref().err().map(String::as_str)
    }

    /// Waits (bounded) for the queue threads to end after the kernel has
    /// ended the connection; a thread still blocked is left to the exit.
    pub fn wait(mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for Rings {
    /// Ends the hand-off guard, also when not every entry registered.
    fn drop(&mut self) {
        if let Ok(handoff) = &self.handoff {
            handoff.stop();
        }
    }
}

/// Spreads `threads` serving threads (one entry each) over the queues of
/// the online CPUs, at least one per queue, and gives every other possible
/// CPU's queue one (the kernel needs them all before it uses the ring);
/// each thread is pinned to its CPU and, with `handoff`, commits replies
/// as SCHED_IDLE where this process may (see `handoff.rs`). Returns once
/// every entry is registered, or with the kernel's refusal.
pub fn start(
    handler: Arc<Handler>,
    dev: OwnedFd,
    threads: usize,
    handoff: bool,
) -> Result<Rings, String> {
    let dev = backing::DevFuse::new(dev);
    let possible = cpu_count("/sys/devices/system/cpu/possible")?;
    let online = cpu_list("/sys/devices/system/cpu/online").unwrap_or_default();
    let per_queue = threads.div_ceil(online.len().max(1)).max(1);
    let counts: Vec<usize> = (0..possible)
        .map(|qid| if online.contains(&qid) { per_queue } else { 1 })
        .collect();
    let handoff = match handoff {
        true => handoff::Handoff::start(counts.iter().sum()),
        false => Err("handoff is off".to_string()),
    };
    // Made first, so that any early return stops the hand-off guard.
    let mut rings = Rings {
        threads: Vec::new(),
        queues: possible,
        per_queue,
        handoff,
    };
    let (tx, rx) = mpsc::channel();
    for (qid, &count) in counts.iter().enumerate() {
        for i in 0..count {
            let (handler, dev, tx) = (handler.clone(), dev.clone(), tx.clone());
            let slot = (rings.handoff.clone().ok(), rings.threads.len());
            let spawned = std::thread::Builder::new()
                .name(format!("ring-{qid}.{i}"))
                .spawn(move || {
                    pin_to_cpu(qid);
                    let turn = slot.0.map(|h| h.turn(slot.1));
                    queue::run(qid as u16, MAX_PAYLOAD, handler, dev, tx, turn);
                })
                .map_err(|e| format!("cannot start a ring thread: {e}"))?;
            rings.threads.push(spawned);
        }
    }
    drop(tx);
    for _ in 0..rings.threads.len() {
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("the kernel refused a ring entry: {e}")),
            Err(_) => return Err("a ring thread did not register in 10 s".into()),
        }
    }
    Ok(rings)
}

/// The kernel's `nr_cpu_ids`: one more than the highest possible CPU.
fn cpu_count(path: &str) -> Result<usize, String> {
    let cpus = cpu_list(path).ok_or_else(|| format!("cannot read {path}"))?;
    cpus.iter()
        .max()
        .map(|m| m + 1)
        .ok_or_else(|| format!("no CPU in {path}"))
}

/// A sysfs CPU list (`0-3,5,7-8`).
fn cpu_list(path: &str) -> Option<Vec<usize>> {
    parse_cpu_list(std::fs::read_to_string(Path::new(path)).ok()?.trim())
}

fn parse_cpu_list(list: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => cpus.extend(a.parse::<usize>().ok()?..=b.parse::<usize>().ok()?),
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// Requests on a queue come from tasks on its CPU: serving them there
/// keeps the caller's data in that CPU's cache. Best effort.
fn pin_to_cpu(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays in bounds
    // for any cpu below CPU_SETSIZE, which sched_setaffinity checks.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if cpu < libc::CPU_SETSIZE as usize {
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_read_as_sysfs_writes_them() {
        assert_eq!(parse_cpu_list("0-1"), Some(vec![0, 1]));
        assert_eq!(parse_cpu_list("0-2,5,7-8"), Some(vec![0, 1, 2, 5, 7, 8]));
        assert_eq!(parse_cpu_list("3"), Some(vec![3]));
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn off_never_asks_and_on_names_what_is_missing() {
        assert!(!decide(IoUringMode::Off).unwrap().0);
        match unavailable() {
            Some(why) => {
                let refusal = decide(IoUringMode::On).unwrap_err();
                assert!(refusal.contains(&why), "{refusal}");
                assert_eq!(decide(IoUringMode::Auto).unwrap(), (false, Some(why)));
            }
            None => assert_eq!(decide(IoUringMode::On).unwrap(), (true, None)),
        }
    }
}
