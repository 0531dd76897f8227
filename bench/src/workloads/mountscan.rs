//! mount-scan (spoolfs only): time from spawning `spoolfs mount` until the
//! mount shows up in /proc/mounts, over a pre-populated spool (spoolfs
//! rebuilds usage before it mounts), and the daemon's peak RSS right after.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{content, Params};
use crate::report::Measure;
use crate::rng::Rng;
use crate::spoolfs::{self, domain_name, domain_on_p2, MountGuard, SpoolfsConfig, DOMAINS};
use crate::sys::{self, Ctx, Result};

/// The corpus: `<base>/p1` and `<base>/p2` laid out as spoolfs would route
/// them (`d1*` domains on p2), `<base>/complete` once fully written.
pub struct Corpus {
    pub base: PathBuf,
    pub files: usize,
    pub reused: bool,
}

impl Corpus {
    pub fn p1(&self) -> PathBuf {
        self.base.join("p1")
    }
    pub fn p2(&self) -> PathBuf {
        self.base.join("p2")
    }
}

fn marker(p: &Params) -> String {
    format!("files={} dirs={} seed={} layout=v1\n", p.corpus_files, p.corpus_dirs, p.seed)
}

/// Make (or reuse) the corpus under `dir`, written straight to the backing
/// partitions — not through any mount.
pub fn prepare(dir: &Path, p: &Params, log: &mut dyn FnMut(&str)) -> Result<Corpus> {
    let base = dir.join(format!("spoolfs-bench-corpus-{}", p.corpus_files));
    let mark = base.join("complete");
    if fs::read_to_string(&mark).ok().as_deref() == Some(marker(p).as_str()) {
        log(&format!("mount-scan: reusing corpus {}", base.display()));
        return Ok(Corpus { base, files: p.corpus_files, reused: true });
    }
    if base.exists() {
        log(&format!("mount-scan: removing incomplete corpus {}", base.display()));
        sys::remove_tree(&base);
    }
    log(&format!("mount-scan: writing {} files over {} dirs to {} (untimed)", p.corpus_files, p.corpus_dirs, base.display()));
    let c = Corpus { base, files: p.corpus_files, reused: false };
    let per_domain = p.corpus_dirs.div_ceil(DOMAINS);
    let dir_of = |k: usize| -> PathBuf {
        let d = k / per_domain;
        let part = if domain_on_p2(d) { c.p2() } else { c.p1() };
        part.join(domain_name(d)).join(format!("user{:04}", k % per_domain))
    };
    for k in 0..p.corpus_dirs {
        let d = dir_of(k);
        fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
    }
    let threads = 4;
    let seed = p.seed;
    let (nfiles, ndirs) = (p.corpus_files, p.corpus_dirs);
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let dir_of = &dir_of;
                s.spawn(move || -> Result<()> {
                    let mut rng = Rng::new(seed).fork(0xC0 + t as u64);
                    for k in (t..ndirs).step_by(threads) {
                        sys::check_interrupt()?;
                        let d = dir_of(k);
                        // Files k, k+ndirs, k+2*ndirs, … go to dir k.
                        let mut uid = 1u64;
                        let mut i = k;
                        while i < nfiles {
                            let size = rng.range(100, 4096) as usize;
                            let f = d.join(format!("{uid}."));
                            let mut fh = OpenOptions::new()
                                .write(true)
                                .create_new(true)
                                .open(&f)
                                .ctx(|| format!("creating {}", f.display()))?;
                            fh.write_all(content(i as u64, size)).ctx(|| format!("writing {}", f.display()))?;
                            uid += 1;
                            i += ndirs;
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("corpus thread panicked".into()))).collect()
    });
    for r in results {
        r?;
    }
    sys::sync();
    fs::write(&mark, marker(p)).ctx(|| format!("writing {}", mark.display()))?;
    Ok(c)
}

/// Mount spoolfs over the corpus twice: cold (after drop_caches) and warm
/// (immediately again). Each mount gets a fresh, empty state directory.
pub fn measure(corpus: &Corpus, bin: &Path, work: &Path, threads: usize, timeout: Duration, log: &mut dyn FnMut(&str)) -> Result<Vec<Measure>> {
    let mut out = Vec::new();
    for cold in [true, false] {
        sys::check_interrupt()?;
        let name = if cold { "mount-scan-cold" } else { "mount-scan-warm" };
        let base = work.join(name);
        fs::create_dir_all(&base).ctx(|| format!("creating {}", base.display()))?;
        let state = base.join("state");
        let mnt = base.join("mnt");
        fs::create_dir_all(&state)?;
        fs::create_dir_all(&mnt)?;
        let cfg = base.join("spoolfs.toml");
        spoolfs::write_config(&cfg, &SpoolfsConfig { p1: &corpus.p1(), p2: &corpus.p2(), state_dir: &state, threads, cluster: None })?;
        if cold {
            sys::drop_caches(3);
        } else {
            sys::sync();
        }
        log(name);
        let mut g = MountGuard::mount(bin, &cfg, &mnt, &base.join("spoolfs.log"), timeout, None)?;
        let secs = g.mount_time.as_secs_f64();
        let rss = sys::vm_hwm_kib(g.pid);
        // Sanity: the union of both partitions shows all domains.
        match fs::read_dir(&mnt) {
            Ok(rd) => {
                let n = rd.count();
                if n != DOMAINS {
                    eprintln!("warning: {} lists {n} top-level entries, expected {DOMAINS}", mnt.display());
                }
            }
            Err(e) => eprintln!("warning: listing {}: {e}", mnt.display()),
        }
        g.unmount()?;
        drop(g);
        out.push(Measure::new(name, "rate", "files/s", corpus.files as f64 / secs));
        match rss {
            Some(kib) => out.push(Measure::new(name, "peak_rss", "RSS MiB", kib as f64 / 1024.0).lower_better()),
            None => eprintln!("warning: could not read VmHWM of the spoolfs daemon"),
        }
        sys::remove_tree(&base);
    }
    Ok(out)
}
