//! One serving thread: its own io_uring with one ring entry registered on
//! one of the kernel's per-CPU queues. The kernel fills the entry with a
//! request; the thread serves it, writes the reply into the same buffers,
//! and a single `COMMIT_AND_FETCH` submission both answers and waits for
//! the next request: one system call per request instead of a write and a
//! read on `/dev/fuse`.
//!
//! One entry per thread, because a thread serves one request at a time: a
//! second entry would hold a request hostage behind a slow `fsync`.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::mpsc::Sender;

use io_uring::{IoUring, cqueue, opcode, squeue, types};
use log::{debug, error};

use super::abi::{self, Wire};
use super::backing::DevFuse;
use super::dispatch;
use super::handoff::Turn;
use crate::fuse::handler::Handler;

/// `fuse_uring_req_header`, aligned for the integers in it.
#[repr(C, align(8))]
struct HeaderBuf([u8; abi::REQ_HEADER_SIZE]);

/// The buffers the kernel writes a request into and reads a reply from;
/// their addresses must not move while registered.
struct RingEntry {
    header: Box<HeaderBuf>,
    payload: Vec<u8>,
    iov: Box<[libc::iovec; 2]>,
}

impl RingEntry {
    fn new(payload_size: usize) -> RingEntry {
        let mut header = Box::new(HeaderBuf([0; abi::REQ_HEADER_SIZE]));
        let mut payload = vec![0u8; payload_size];
        let iov = Box::new([
            libc::iovec {
                iov_base: header.0.as_mut_ptr().cast(),
                iov_len: abi::REQ_HEADER_SIZE,
            },
            libc::iovec {
                iov_base: payload.as_mut_ptr().cast(),
                iov_len: payload_size,
            },
        ]);
        RingEntry {
            header,
            payload,
            iov,
        }
    }

    /// The request the kernel just put here, served, and its reply
    /// written back; returns the commit id to answer with.
    fn serve(&mut self, handler: &Handler, dev: &DevFuse) -> u64 {
        let h = &self.header.0;
        let in_header = abi::InHeader::read(h).unwrap_or_default();
        let mut ent = abi::UringEntInOut::read(&h[abi::ENT_IN_OUT_OFFSET..]).unwrap_or_default();
        let payload_len = (ent.payload_sz as usize).min(self.payload.len());
        let op_in = &h[abi::OP_IN_OFFSET..abi::ENT_IN_OUT_OFFSET];
        let payload = &mut self.payload;
        let reply = catch_unwind(AssertUnwindSafe(|| {
            dispatch::serve_into(handler, dev, in_header, op_in, payload_len, payload)
        }))
        .unwrap_or_else(|_| {
            error!("request {} panicked; answered EIO", in_header.opcode);
            Err(libc::EIO)
        });
        let (error, out_len) = match reply {
            Ok(len) => (0, len),
            Err(errno) => (-errno, 0),
        };
        let out = abi::OutHeader {
            len: (std::mem::size_of::<abi::OutHeader>() + out_len) as u32,
            error,
            unique: in_header.unique,
        };
        ent.payload_sz = out_len as u32;
        let h = &mut self.header.0;
        h[..out.as_bytes().len()].copy_from_slice(out.as_bytes());
        let at = abi::ENT_IN_OUT_OFFSET;
        h[at..at + ent.as_bytes().len()].copy_from_slice(ent.as_bytes());
        ent.commit_id
    }
}

/// The SQE for a ring command on this entry: `addr` and `len` name the
/// two iovecs (header, payload), the command area holds the queue and the
/// commit id.
fn command(
    dev: &DevFuse,
    entry: &RingEntry,
    cmd_op: u32,
    qid: u16,
    commit_id: u64,
) -> squeue::Entry128 {
    let req = abi::UringCmdReq {
        flags: 0,
        commit_id,
        qid,
        padding: [0; 6],
    };
    let mut cmd = [0u8; 80];
    cmd[..req.as_bytes().len()].copy_from_slice(req.as_bytes());
    let sqe = opcode::UringCmd80::new(types::Fd(dev.raw()), cmd_op)
        .cmd(cmd)
        .addr(Some(entry.iov.as_ptr() as u64))
        .build();
    with_len(sqe, entry.iov.len() as u32)
}

/// `UringCmd80` has no setter for the SQE's `len`, which FUSE reads as
/// the number of iovecs at `addr`.
fn with_len(sqe: squeue::Entry128, len: u32) -> squeue::Entry128 {
    /// `io_uring_sqe.len`: after opcode, flags, ioprio, fd, off and addr.
    const LEN_OFFSET: usize = 24;
    // SAFETY: Entry128 is a repr(C) pair of the 64-byte SQE and 64 bytes
    // of command data, every byte initialised; so is the array.
    let mut raw: [u8; 128] = unsafe { std::mem::transmute(sqe) };
    raw[LEN_OFFSET..LEN_OFFSET + 4].copy_from_slice(&len.to_ne_bytes());
    unsafe { std::mem::transmute::<[u8; 128], squeue::Entry128>(raw) }
}

type Ring = IoUring<squeue::Entry128, cqueue::Entry>;

fn submit(ring: &mut Ring, sqe: &squeue::Entry128) -> io::Result<()> {
    // SAFETY: the buffers the SQE points at live in the RingEntry, which
    // outlives the ring (dropped after it in `run`).
    unsafe { ring.submission().push(sqe) }.map_err(|_| io::Error::other("submission queue full"))
}

/// Waits for the entry's next completion (its result: 0 when a request
/// is there, a negative errno when the kernel ended it).
fn next_completion(ring: &mut Ring) -> io::Result<i32> {
    loop {
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        if let Some(cqe) = ring.completion().next() {
            return Ok(cqe.result());
        }
    }
}

/// Registers one entry on queue `qid`, tells `registered` how that went,
/// then serves requests until the kernel ends the connection.
pub fn run(
    qid: u16,
    payload_size: usize,
    handler: Arc<Handler>,
    dev: DevFuse,
    registered: Sender<io::Result<()>>,
    handoff: Option<Turn>,
) {
    let mut entry = RingEntry::new(payload_size);
    // One thread submits and reaps this ring (SINGLE_ISSUER), and it only
    // ever waits in io_uring_enter: the kernel's work that delivers a
    // request can then wait for that call (DEFER_TASKRUN) instead of
    // interrupting the thread, which is cheaper on every request.
    let built = Ring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(2);
    let mut ring = match built {
        Ok(ring) => ring,
        Err(e) => {
            let _ = registered.send(Err(e));
            return;
        }
    };
    let register = command(&dev, &entry, abi::CMD_REGISTER, qid, 0);
    if let Err(e) = submit(&mut ring, &register).and_then(|()| ring.submit().map(|_| ())) {
        let _ = registered.send(Err(e));
        return;
    }
    // A refused registration completes at once; an accepted one completes
    // only when a request arrives.
    let mut ready = None;
    if let Some(cqe) = ring.completion().next() {
        if cqe.result() < 0 {
            let _ = registered.send(Err(io::Error::from_raw_os_error(-cqe.result())));
            return;
        }
        ready = Some(cqe.result());
    }
    let _ = registered.send(Ok(()));
    loop {
        let result = match ready.take() {
            Some(r) => Ok(r),
            None => next_completion(&mut ring),
        };
        match result {
            Ok(r) if r >= 0 => {}
            Ok(r) => {
                debug!(
                    "ring queue {qid}: ended ({})",
                    io::Error::from_raw_os_error(-r)
                );
                return;
            }
            Err(e) => {
                error!("ring queue {qid}: {e}");
                return;
            }
        }
        let commit_id = entry.serve(&handler, &dev);
        let commit = command(&dev, &entry, abi::CMD_COMMIT_AND_FETCH, qid, commit_id);
        if let Err(e) = submit(&mut ring, &commit) {
            error!("ring queue {qid}: {e}");
            return;
        }
        // A hand-off submits the commit on its own, as SCHED_IDLE; the
        // wait that follows is an ordinary one, and submits the commit
        // itself when there was no hand-off or its submission failed.
        if let Some(turn) = &handoff {
            let _ = turn.hand_off(|| ring.submit());
        }
    }
}
