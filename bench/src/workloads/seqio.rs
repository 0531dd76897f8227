//! seqwrite / seqread (1 MiB blocks) and randread4k.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use super::data;
use crate::rng::Rng;
use crate::sys::{self, Ctx, Result};

/// Create `path` (truncating), write `bytes` in `block`-sized write(2)s, fsync,
/// close. The time covers all of it.
pub fn write_file(path: &Path, bytes: u64, block: usize) -> Result<Duration> {
    let d = data();
    let t0 = Instant::now();
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .ctx(|| format!("creating {}", path.display()))?;
    let mut done = 0u64;
    let mut i = 0usize;
    while done < bytes {
        if i.is_multiple_of(64) {
            sys::check_interrupt()?;
        }
        let n = (bytes - done).min(block as u64) as usize;
        let off = (i * 4099) % (d.len() - block);
        f.write_all(&d[off..off + n]).ctx(|| format!("writing {}", path.display()))?;
        done += n as u64;
        i += 1;
    }
    f.sync_all().ctx(|| format!("fsync {}", path.display()))?;
    drop(f);
    Ok(t0.elapsed())
}

/// Read `path` to the end in `block`-sized read(2)s; checks the length.
pub fn read_file(path: &Path, bytes: u64, block: usize) -> Result<Duration> {
    let mut buf = vec![0u8; block];
    let t0 = Instant::now();
    let mut f = File::open(path).ctx(|| format!("opening {}", path.display()))?;
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).ctx(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    drop(f);
    let el = t0.elapsed();
    if total != bytes {
        return Err(format!("read {total} bytes from {}, expected {bytes}", path.display()).into());
    }
    Ok(el)
}

/// `threads` threads, each with its own read-only fd, pread 4 KiB at seeded
/// random 4 KiB-aligned offsets for `secs` seconds. Returns (elapsed, ops).
pub fn randread(path: &Path, bytes: u64, threads: usize, secs: f64, seed: u64) -> Result<(Duration, u64)> {
    let blocks = bytes / 4096;
    let dur = Duration::from_secs_f64(secs);
    let barrier = Barrier::new(threads + 1);
    let files: Vec<File> = (0..threads)
        .map(|_| File::open(path).ctx(|| format!("opening {}", path.display())))
        .collect::<Result<_>>()?;
    let base = Rng::new(seed);
    let (t0, results) = std::thread::scope(|s| {
        let hs: Vec<_> = files
            .iter()
            .enumerate()
            .map(|(t, f)| {
                let barrier = &barrier;
                let mut rng = base.fork(t as u64 + 1);
                s.spawn(move || -> Result<(u64, Instant)> {
                    let mut buf = [0u8; 4096];
                    let mut ops = 0u64;
                    barrier.wait();
                    let start = Instant::now();
                    let end = start + dur;
                    loop {
                        for _ in 0..64 {
                            let off = rng.below(blocks) * 4096;
                            let n = f.read_at(&mut buf, off).ctx(|| format!("pread {}", path.display()))?;
                            if n != 4096 {
                                return Err(format!("short read ({n}) at {off}").into());
                            }
                            ops += 1;
                        }
                        let now = Instant::now();
                        if now >= end || sys::interrupted() {
                            return Ok((ops, now));
                        }
                    }
                })
            })
            .collect();
        barrier.wait();
        let t0 = Instant::now();
        (t0, hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("randread thread panicked".into()))).collect::<Vec<_>>())
    });
    sys::check_interrupt()?;
    let mut ops = 0;
    let mut last = t0;
    for r in results {
        let (o, end) = r?;
        ops += o;
        last = last.max(end);
    }
    let _ = fs::metadata(path);
    Ok((last.duration_since(t0), ops))
}
