//! The workloads. Every target gets exactly the same seeded work.

pub mod deliver;
pub mod meta;
pub mod mountscan;
pub mod seqio;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use clap::ValueEnum;

use crate::report::Measure;
use crate::rng::Rng;
use crate::spoolfs::{domain_name, DOMAINS};
use crate::sys::{self, Ctx, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    Deliver1,
    Deliver4,
    Seqwrite,
    Seqread,
    Randread4k,
    Stat,
    Readdir,
    Unlink,
    MountScan,
}

impl Workload {
    pub fn all() -> Vec<Workload> {
        Workload::value_variants().to_vec()
    }
}

/// Presentation order of rows (by workload-name prefix).
pub const ROW_ORDER: &[&str] =
    &["deliver1", "deliver4", "seqwrite", "seqread", "randread4k", "stat", "readdir", "unlink", "mount-scan"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scale {
    Full,
    Small,
    Tiny,
}

/// Sizes for one scale.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Params {
    pub scale: Scale,
    pub seed: u64,
    pub messages: usize,
    pub mailboxes: usize,
    pub seq_bytes: u64,
    pub rand_bytes: u64,
    pub rand_secs: f64,
    pub rand_threads: usize,
    pub corpus_files: usize,
    pub corpus_dirs: usize,
    /// write(2) size used by deliver (a message is written in chunks of this).
    pub write_block: usize,
    pub block: usize,
}

const MIB: u64 = 1 << 20;

impl Params {
    pub fn new(scale: Scale, seed: u64, write_block: usize) -> Params {
        let (messages, seq, rand, secs, corpus) = match scale {
            Scale::Full => (20_000, 1024 * MIB, 512 * MIB, 10.0, 1_000_000),
            Scale::Small => (2_000, 256 * MIB, 128 * MIB, 3.0, 100_000),
            Scale::Tiny => (200, 16 * MIB, 16 * MIB, 1.0, 10_000),
        };
        Params {
            scale,
            seed,
            messages,
            mailboxes: 200,
            seq_bytes: seq,
            rand_bytes: rand,
            rand_secs: secs,
            rand_threads: 4,
            corpus_files: corpus,
            corpus_dirs: (corpus / 50).min(2_000),
            write_block,
            block: MIB as usize,
        }
    }
}

/// 2 MiB of seeded bytes; every file's content is a slice of it.
pub fn data() -> &'static [u8] {
    static DATA: OnceLock<Vec<u8>> = OnceLock::new();
    DATA.get_or_init(|| {
        let mut v = vec![0u8; 2 * MIB as usize];
        Rng::new(0xDA7A).fill(&mut v);
        v
    })
}

/// Content for a file of `size` (≤ 1 MiB) picked by `key`.
pub fn content(key: u64, size: usize) -> &'static [u8] {
    let d = data();
    let off = (key.wrapping_mul(4099) as usize) % (d.len() - MIB as usize);
    &d[off..off + size.min(MIB as usize)]
}

/// Mailbox `i` of `n`: `<domain>/<user>/`, users spread evenly over the domains.
pub fn mailbox_rel(i: usize, n: usize) -> PathBuf {
    let per = n.div_ceil(DOMAINS);
    PathBuf::from(domain_name(i / per)).join(format!("user{:03}", i % per))
}

/// Bulk files (seqwrite, randread) live in a mailbox too, so spoolfs charges them.
pub fn bulk_dir(root: &Path) -> PathBuf {
    root.join(domain_name(0)).join("bulk")
}

#[derive(Clone, Copy, Debug)]
pub struct Message {
    pub mailbox: usize,
    pub uid: u64,
    pub size: u64,
}

/// The seeded delivery plan: 90 % uniform 2–50 KiB, 10 % uniform 100 KiB–1 MiB,
/// each to a random mailbox, uids counting up per mailbox.
pub fn plan(p: &Params) -> Vec<Message> {
    let mut rng = Rng::new(p.seed);
    let mut next_uid = vec![1u64; p.mailboxes];
    (0..p.messages)
        .map(|_| {
            let mailbox = rng.below(p.mailboxes as u64) as usize;
            let size = if rng.below(10) == 0 { rng.range(100 * 1024, 1024 * 1024) } else { rng.range(2 * 1024, 50 * 1024) };
            let uid = next_uid[mailbox];
            next_uid[mailbox] += 1;
            Message { mailbox, uid, size }
        })
        .collect()
}

/// Warm figures are the median of this many passes right after the cold
/// one: steady state, which the first pass after a cold one may not be
/// (on FUSE it revalidates each directory's attributes once).
const WARM_PASSES: usize = 3;

fn median_of(n: usize, mut pass: impl FnMut() -> Result<f64>) -> Result<f64> {
    let mut v = (0..n).map(|_| pass()).collect::<Result<Vec<f64>>>()?;
    v.sort_by(|a, b| a.total_cmp(b));
    Ok(v[n / 2])
}

/// Flush everything and let the disk settle before a timed section.
pub fn settle() {
    sys::sync();
}

/// Run the selected per-target workloads (everything but mount-scan) with
/// `root` as the spool root of the target. Leaves `root` empty. Results go
/// to `out` as they are measured, so a later failure keeps the earlier ones.
pub fn run_on_target(root: &Path, p: &Params, sel: &[Workload], log: &mut dyn FnMut(&str), out: &mut Vec<Measure>) -> Result<()> {
    let has = |w| sel.contains(&w);
    let plan = plan(p);
    let mailboxes = deliver::make_mailboxes(root, p)?;
    let mut tree: Option<deliver::Tree> = None;

    for (w, threads) in [(Workload::Deliver1, 1usize), (Workload::Deliver4, 4)] {
        if !has(w) {
            continue;
        }
        if let Some(t) = tree.take() {
            t.remove()?;
        }
        sys::check_interrupt()?;
        settle();
        log(&format!("deliver{threads}"));
        let r = deliver::deliver(&plan, &mailboxes, threads, p)?;
        let name = format!("deliver{threads}");
        let secs = r.elapsed.as_secs_f64();
        out.push(Measure::new(&name, "rate", "msgs/s", plan.len() as f64 / secs));
        out.push(Measure::new(&name, "bandwidth", "MB/s", r.bytes as f64 / 1e6 / secs));
        tree = Some(r.tree);
    }

    let need_tree = has(Workload::Stat) || has(Workload::Readdir) || has(Workload::Unlink);
    if need_tree && tree.is_none() {
        log("populate (untimed)");
        tree = Some(deliver::deliver(&plan, &mailboxes, 4, p)?.tree);
    }
    if let Some(t) = tree.as_ref() {
        if has(Workload::Stat) {
            sys::check_interrupt()?;
            log("stat");
            for cold in [true, false] {
                if cold {
                    sys::drop_caches(3);
                }
                let secs = if cold {
                    meta::stat_all(t)?.as_secs_f64()
                } else {
                    median_of(WARM_PASSES, || meta::stat_all(t).map(|d| d.as_secs_f64()))?
                };
                let name = if cold { "stat-cold" } else { "stat-warm" };
                out.push(Measure::new(name, "rate", "ops/s", t.files.len() as f64 / secs));
            }
        }
        if has(Workload::Readdir) {
            sys::check_interrupt()?;
            log("readdir");
            for cold in [true, false] {
                if cold {
                    sys::drop_caches(3);
                }
                let entries = t.files.len() as f64;
                let secs = if cold {
                    meta::readdir_all(t)?.0.as_secs_f64()
                } else {
                    median_of(WARM_PASSES, || meta::readdir_all(t).map(|(d, _)| d.as_secs_f64()))?
                };
                let name = if cold { "readdir-cold" } else { "readdir-warm" };
                out.push(Measure::new(name, "rate", "entries/s", entries / secs));
            }
        }
        if has(Workload::Unlink) {
            sys::check_interrupt()?;
            settle();
            log("unlink");
            let t = tree.take().unwrap();
            // Same starting state whatever ran before: inodes and dentries
            // cached (an expunge stats the messages it is about to remove).
            meta::stat_all(&t)?;
            let secs = meta::unlink_all(&t)?.as_secs_f64();
            out.push(Measure::new("unlink", "rate", "ops/s", t.files.len() as f64 / secs));
        }
    }
    if let Some(t) = tree.take() {
        t.remove()?;
    }
    for d in mailboxes.iter() {
        std::fs::remove_dir(d).ctx(|| format!("removing {}", d.display()))?;
    }

    if has(Workload::Seqwrite) || has(Workload::Seqread) || has(Workload::Randread4k) {
        let bulk = bulk_dir(root);
        std::fs::create_dir_all(&bulk).ctx(|| format!("creating {}", bulk.display()))?;
        let seq = bulk.join("seq.dat");
        if has(Workload::Seqwrite) {
            sys::check_interrupt()?;
            settle();
            log("seqwrite");
            let secs = seqio::write_file(&seq, p.seq_bytes, p.block)?.as_secs_f64();
            out.push(Measure::new("seqwrite", "bandwidth", "MB/s", p.seq_bytes as f64 / 1e6 / secs));
        }
        if has(Workload::Seqread) {
            sys::check_interrupt()?;
            if !seq.exists() {
                log("seqread: creating file (untimed)");
                seqio::write_file(&seq, p.seq_bytes, p.block)?;
            }
            log("seqread");
            sys::drop_caches(3);
            let secs = seqio::read_file(&seq, p.seq_bytes, p.block)?.as_secs_f64();
            out.push(Measure::new("seqread", "bandwidth", "MB/s", p.seq_bytes as f64 / 1e6 / secs));
        }
        if seq.exists() {
            std::fs::remove_file(&seq).ctx(|| format!("removing {}", seq.display()))?;
        }
        if has(Workload::Randread4k) {
            sys::check_interrupt()?;
            let f = bulk.join("rand.dat");
            log("randread4k: creating + warming file (untimed)");
            seqio::write_file(&f, p.rand_bytes, p.block)?;
            settle();
            seqio::read_file(&f, p.rand_bytes, p.block)?; // warm the page cache
            log("randread4k");
            let (elapsed, ops) = seqio::randread(&f, p.rand_bytes, p.rand_threads, p.rand_secs, p.seed)?;
            out.push(Measure::new("randread4k", "iops", "IOPS", ops as f64 / elapsed.as_secs_f64()));
            std::fs::remove_file(&f).ctx(|| format!("removing {}", f.display()))?;
        }
        std::fs::remove_dir(&bulk).ctx(|| format!("removing {}", bulk.display()))?;
    }
    // The domain directories.
    for d in 0..DOMAINS {
        let p = root.join(domain_name(d));
        if p.exists() {
            std::fs::remove_dir(&p).ctx(|| format!("removing {}", p.display()))?;
        }
    }
    Ok(())
}
