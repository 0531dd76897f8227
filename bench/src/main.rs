//! spoolfs-bench: the same seeded mail-spool workloads against a native
//! directory, a spoolfs mount and optionally any other mount point, in one
//! run; medians over `--runs` and the ratio to native per workload.

mod report;
mod rng;
mod scratch;
mod spoolfs;
mod sys;
mod workloads;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use serde::Serialize;

use report::{Measure, Results};
use spoolfs::{MountGuard, SpoolfsConfig};
use sys::{Ctx, Result};
use workloads::{Params, Scale, Workload};

#[derive(Parser, Debug)]
#[command(name = "spoolfs-bench", version, about = "Benchmark spoolfs against the native filesystem with mail-spool workloads")]
struct Cli {
    /// The spoolfs binary [default: `spoolfs` next to this binary, else the repo's target/release/spoolfs].
    #[arg(long)]
    spoolfs_bin: Option<PathBuf>,
    /// Where to put the native directory, the spoolfs partitions and the
    /// mount-scan corpus (all on this one filesystem); with --fs, where the
    /// image of the scratch filesystem goes.
    #[arg(long, default_value = "/var/tmp")]
    dir: PathBuf,
    /// Run on --dir as it is (host), or on a fresh journaled ext4 / XFS in
    /// a loop image under it, made for this run and removed after it.
    #[arg(long, value_enum, default_value = "host")]
    fs: scratch::FsKind,
    /// Size of the --fs image (sparse).
    #[arg(long, default_value = "16G")]
    fs_size: String,
    /// Repetitions; the table shows the median.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Comma-separated subset of the workloads [default: all].
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Comma-separated targets [default: native, spoolfs (skipped with a note if
    /// its binary is missing), and other if --other is given].
    #[arg(long, value_enum, value_delimiter = ',')]
    targets: Vec<TargetKind>,
    /// A third target: any mount point (e.g. a mergerfs mount). The bench
    /// works in a fresh subdirectory of it.
    #[arg(long, value_name = "MOUNTPOINT")]
    other: Option<PathBuf>,
    /// Print JSON on stdout instead of the table (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
    /// Keep the mount-scan corpus (DIR/spoolfs-bench-corpus-N) for the next invocation.
    #[arg(long)]
    keep_corpus: bool,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// `[mount] threads` in the spoolfs config.
    #[arg(long, default_value_t = 4)]
    spoolfs_threads: usize,
    /// write(2) size deliver uses for a message (bigger messages take several writes).
    #[arg(long, default_value_t = 65536)]
    write_block: usize,
    /// Cluster mode: the URL of an etcd (v3) to run the `spoolfs-cluster`
    /// target against: spoolfs with a `[cluster]` section, so its tenant
    /// limits are escrowed in etcd (e.g. http://127.0.0.1:2379).
    #[arg(long, value_name = "URL")]
    etcd: Option<String>,
    /// Mount options for the spoolfs target (`spoolfs mount -o OPTS`), to
    /// measure one lever, e.g. `noopen_handles` or `io_uring=off`.
    #[arg(long, value_name = "OPTS")]
    mount_options: Option<String>,
    /// Seconds to wait for a spoolfs mount to appear.
    #[arg(long, default_value_t = 600)]
    mount_timeout: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum TargetKind {
    Native,
    Spoolfs,
    /// spoolfs in cluster mode (needs --etcd).
    SpoolfsCluster,
    Other,
}

#[derive(Clone, Debug)]
enum Kind {
    Native,
    /// The binary, and in cluster mode the etcd URL.
    Spoolfs(PathBuf, Option<String>),
    Other(PathBuf),
}

#[derive(Clone, Debug, Serialize)]
struct TargetInfo {
    name: String,
    /// The directory or binary + mount point.
    detail: String,
    #[serde(skip)]
    kind: Option<Kind>,
    /// Set when the target failed; it is skipped in later runs.
    error: Option<String>,
}

#[derive(Serialize)]
struct JsonOut<'a> {
    machine: &'a sys::Machine,
    params: &'a Params,
    runs: usize,
    targets: &'a [TargetInfo],
    results: &'a [report::Row],
    notes: &'a [String],
    errors: &'a [String],
}

struct Env {
    tmp: PathBuf,
    params: Params,
    sel: Vec<Workload>,
    spoolfs_threads: usize,
    mount_timeout: Duration,
    mount_options: Option<String>,
    corpus: Option<workloads::mountscan::Corpus>,
}

fn main() {
    let cli = Cli::parse();
    sys::install_signal_handlers();
    match run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("spoolfs-bench: {e}");
            std::process::exit(2);
        }
    }
}

fn run(cli: Cli) -> Result<i32> {
    if cli.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let dir = cli.dir.canonicalize().ctx(|| format!("--dir {}", cli.dir.display()))?;
    // Declared before everything made inside it, so it is unmounted last.
    let scratch = scratch::ScratchFs::create(cli.fs, &cli.fs_size, &dir)?;
    let dir = scratch.as_ref().map_or(dir, |s| s.mnt.clone());
    let sel = if cli.workloads.is_empty() { Workload::all() } else { cli.workloads.clone() };
    let params = Params::new(cli.scale, cli.seed, cli.write_block.max(1));
    let mut notes: Vec<String> = Vec::new();
    let mut errors: Vec<String> = Vec::new();
    if scratch.is_some() {
        notes.push(format!("on a fresh {:?} image of {} (--fs), removed after the run", cli.fs, cli.fs_size));
        if cli.keep_corpus {
            notes.push("--keep-corpus has no effect with --fs: the image is removed".into());
        }
    }

    // ---- targets
    let explicit = !cli.targets.is_empty();
    let wanted: Vec<TargetKind> = if explicit {
        cli.targets.clone()
    } else {
        let mut v = vec![TargetKind::Native, TargetKind::Spoolfs];
        if cli.etcd.is_some() {
            v.push(TargetKind::SpoolfsCluster);
        }
        if cli.other.is_some() {
            v.push(TargetKind::Other);
        }
        v
    };
    let mut targets: Vec<TargetInfo> = Vec::new();
    for k in &wanted {
        match k {
            TargetKind::Native => targets.push(TargetInfo {
                name: "native".into(),
                detail: format!("fresh directory under {}", dir.display()),
                kind: Some(Kind::Native),
                error: None,
            }),
            TargetKind::Spoolfs | TargetKind::SpoolfsCluster => {
                let etcd = match k {
                    TargetKind::SpoolfsCluster => match &cli.etcd {
                        Some(url) => Some(url.clone()),
                        None => return Err("--targets spoolfs-cluster needs --etcd URL".into()),
                    },
                    _ => None,
                };
                let bin = cli.spoolfs_bin.clone().or_else(spoolfs::default_bin);
                match bin {
                    Some(b) if b.is_file() => targets.push(TargetInfo {
                        name: if etcd.is_some() { "spoolfs-cluster" } else { "spoolfs" }.into(),
                        detail: format!(
                            "{} mount, partitions p1+p2 under {}{}",
                            b.display(),
                            dir.display(),
                            etcd.as_ref().map(|u| format!(", cluster mode on etcd {u}")).unwrap_or_default()
                        ),
                        kind: Some(Kind::Spoolfs(b.canonicalize().unwrap_or(b), etcd)),
                        error: None,
                    }),
                    other => {
                        let msg = match other {
                            Some(b) => format!("spoolfs binary {} does not exist", b.display()),
                            None => "no spoolfs binary found (looked next to this binary and in the repo's \
                                     target/release/; build it or pass --spoolfs-bin)"
                                .to_string(),
                        };
                        if explicit || cli.spoolfs_bin.is_some() {
                            return Err(msg.into());
                        }
                        eprintln!("note: skipping the spoolfs target: {msg}");
                        notes.push(format!("spoolfs target skipped: {msg}"));
                    }
                }
            }
            TargetKind::Other => {
                let Some(o) = cli.other.clone() else {
                    return Err("--targets other needs --other MOUNTPOINT".into());
                };
                let o = o.canonicalize().ctx(|| format!("--other {}", o.display()))?;
                let fstype = sys::mount_of(&o).map(|m| m.fstype).unwrap_or_default();
                if sys::mount_at(&o).is_none() {
                    eprintln!("warning: --other {} is not itself a mount point (it is on {fstype})", o.display());
                }
                targets.push(TargetInfo {
                    name: "other".into(),
                    detail: format!("{} ({fstype})", o.display()),
                    kind: Some(Kind::Other(o)),
                    error: None,
                });
            }
        }
    }
    if targets.is_empty() {
        return Err("no targets to run".into());
    }
    let has_spoolfs = targets.iter().any(|t| matches!(t.kind, Some(Kind::Spoolfs(..))));
    if sel.contains(&Workload::MountScan) && !has_spoolfs {
        notes.push("mount-scan is spoolfs-only and spoolfs is not a target: skipped".into());
    }

    // ---- machine
    let machine = sys::machine(&dir);
    let mut header = String::new();
    header.push_str(&format!(
        "machine: {} CPUs ({}), {} MiB RAM, {}\n",
        machine.nproc, machine.cpu, machine.mem_total_mib, machine.kernel
    ));
    header.push_str(&format!(
        "dir: {} on {} ({} by statfs, {}, mount type {})\n",
        dir.display(),
        machine.dir_mount_source,
        machine.dir_fs,
        machine.dir_fs_magic,
        machine.dir_mount_fstype
    ));
    header.push_str(&format!(
        "scale: {:?}, runs: {}, seed: {}, deliver: {} msgs / {} mailboxes / {} domains, write size {} B; seq {} MiB; randread {} MiB x {} threads x {} s; mount-scan {} files / {} dirs\n",
        params.scale,
        cli.runs,
        params.seed,
        params.messages,
        params.mailboxes,
        spoolfs::DOMAINS,
        params.write_block,
        params.seq_bytes >> 20,
        params.rand_bytes >> 20,
        params.rand_threads,
        params.rand_secs,
        params.corpus_files,
        params.corpus_dirs
    ));
    for t in &targets {
        header.push_str(&format!("target {}: {}\n", t.name, t.detail));
    }
    eprint!("{header}");

    // ---- work area
    let tmp = sys::TempDir::create(dir.join(format!("spoolfs-bench.{}", std::process::id())))?;
    let mut env = Env {
        tmp: tmp.path.clone(),
        params,
        sel: sel.clone(),
        spoolfs_threads: cli.spoolfs_threads,
        mount_timeout: Duration::from_secs(cli.mount_timeout),
        mount_options: cli.mount_options.clone(),
        corpus: None,
    };
    let t_start = Instant::now();
    if has_spoolfs && sel.contains(&Workload::MountScan) {
        let mut log = |s: &str| eprintln!("[setup] {s}");
        match workloads::mountscan::prepare(&dir, &env.params, &mut log) {
            Ok(c) => env.corpus = Some(c),
            Err(e) => {
                errors.push(format!("mount-scan corpus: {e}"));
                eprintln!("error: mount-scan corpus: {e}");
            }
        }
    }

    // ---- runs
    let mut results = Results::default();
    for run in 0..cli.runs {
        let n = targets.len();
        for i in 0..n {
            if sys::interrupted() {
                break;
            }
            // Alternate the order: run r starts with target r mod n.
            let ti = (i + run) % n;
            if targets[ti].error.is_some() {
                continue;
            }
            let name = targets[ti].name.clone();
            let kind = targets[ti].kind.clone().unwrap();
            let t0 = Instant::now();
            let mut log = |s: &str| eprintln!("[run {}/{} {name}] {s}", run + 1, cli.runs);
            let mut ms = Vec::new();
            let r = run_target(&kind, run, &env, &mut log, &mut ms);
            // Keep what was measured before a failure.
            for m in &ms {
                results.add(&name, m);
            }
            match r {
                Ok(()) => log(&format!("done in {:.1} s", t0.elapsed().as_secs_f64())),
                Err(e) => {
                    let msg = format!("run {} {name}: {e}", run + 1);
                    eprintln!("error: {msg}");
                    errors.push(msg);
                    targets[ti].error = Some(e.to_string());
                }
            }
        }
    }
    if sys::interrupted() {
        errors.push("interrupted".into());
    }

    // ---- cleanup
    if let Some(c) = env.corpus.take() {
        if cli.keep_corpus {
            notes.push(format!(
                "mount-scan corpus {} at {} (--keep-corpus)",
                if c.reused { "reused and kept" } else { "kept" },
                c.base.display()
            ));
        } else {
            sys::remove_tree(&c.base);
        }
    }
    drop(env);
    drop(tmp);

    // ---- notes
    if !sys::drop_caches_works() {
        notes.push("drop_caches was not possible (not root?): cold results are warm".into());
    } else {
        notes.push("cold = after `sync; echo 3 > /proc/sys/vm/drop_caches` (this also drops FUSE dentries/inodes, so spoolfs's kernel entry/attr cache is cold too)".into());
    }
    if sel.contains(&Workload::Randread4k) {
        notes.push("randread4k runs with a warm page cache: the file is read once through the target before timing".into());
    }
    notes.push(format!("total wall time {:.0} s", t_start.elapsed().as_secs_f64()));

    // ---- report
    let rows = results.rows(workloads::ROW_ORDER);
    let names: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    let mut text = header.clone();
    text.push('\n');
    text.push_str(&report::table(&rows, &names));
    text.push('\n');
    for n in &notes {
        text.push_str(&format!("note: {n}\n"));
    }
    for e in &errors {
        text.push_str(&format!("ERROR: {e}\n"));
    }
    let json = serde_json::to_string_pretty(&JsonOut {
        machine: &machine,
        params: &Params::new(cli.scale, cli.seed, cli.write_block.max(1)),
        runs: cli.runs,
        targets: &targets,
        results: &rows,
        notes: &notes,
        errors: &errors,
    })?;
    if let Some(p) = &cli.json_out {
        std::fs::write(p, format!("{json}\n")).ctx(|| format!("writing {}", p.display()))?;
    }
    if cli.json {
        eprint!("\n{text}");
        println!("{json}");
    } else {
        print!("{text}");
    }
    Ok(if errors.is_empty() { 0 } else { 1 })
}

/// One target, one run: fresh directory (or fresh spoolfs mount over fresh
/// partitions), all selected workloads, then everything removed again.
fn run_target(kind: &Kind, run: usize, env: &Env, log: &mut dyn FnMut(&str), out: &mut Vec<Measure>) -> Result<()> {
    let per_target: Vec<Workload> = env.sel.iter().copied().filter(|w| *w != Workload::MountScan).collect();
    match kind {
        Kind::Native => {
            let root = env.tmp.join(format!("run{}-native", run + 1));
            std::fs::create_dir(&root).ctx(|| format!("creating {}", root.display()))?;
            let r = workloads::run_on_target(&root, &env.params, &per_target, log, out);
            sys::remove_tree(&root);
            r
        }
        Kind::Other(mp) => {
            let root = mp.join(format!("spoolfs-bench.{}.run{}", std::process::id(), run + 1));
            std::fs::create_dir(&root).ctx(|| format!("creating {}", root.display()))?;
            let r = workloads::run_on_target(&root, &env.params, &per_target, log, out);
            sys::remove_tree(&root);
            r
        }
        Kind::Spoolfs(bin, etcd) => {
            let cluster = etcd.as_deref().map(|url| (url, run));
            let suffix = if etcd.is_some() { "spoolfs-cluster" } else { "spoolfs" };
            let base = env.tmp.join(format!("run{}-{suffix}", run + 1));
            let r = run_spoolfs(bin, cluster, &base, env, &per_target, log, out);
            sys::remove_tree(&base);
            r
        }
    }
}

/// `cluster`: the etcd URL and the run number (each run its own prefix).
fn run_spoolfs(bin: &Path, cluster: Option<(&str, usize)>, base: &Path, env: &Env, per_target: &[Workload], log: &mut dyn FnMut(&str), out: &mut Vec<Measure>) -> Result<()> {
    let (p1, p2, state, mnt) = (base.join("p1"), base.join("p2"), base.join("state"), base.join("mnt"));
    for d in [&p1, &p2, &state, &mnt] {
        std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
    }
    let mut first: Result<()> = Ok(());
    if !per_target.is_empty() {
        let cfg = base.join("spoolfs.toml");
        let cluster = cluster.map(|(url, run)| spoolfs::ClusterSection {
            etcd: url.to_string(),
            prefix: format!("/spoolfs-bench/{}/run{}", std::process::id(), run + 1),
        });
        spoolfs::write_config(
            &cfg,
            &SpoolfsConfig { p1: &p1, p2: &p2, state_dir: &state, threads: env.spoolfs_threads, cluster: cluster.as_ref() },
        )?;
        log(&format!("mounting {}", mnt.display()));
        let mut g = MountGuard::mount(bin, &cfg, &mnt, &base.join("spoolfs.log"), env.mount_timeout, env.mount_options.as_deref())?;
        let r = workloads::run_on_target(&mnt, &env.params, per_target, log, out);
        let u = g.unmount();
        drop(g);
        first = r.and(u);
    }
    // mount-scan runs even if a workload above failed (it uses its own mounts;
    // single-host only: the start-up scan does not depend on the cluster).
    if let (Some(c), None) = (&env.corpus, cluster) {
        if !sys::interrupted() {
            let ms = workloads::mountscan::measure(c, bin, base, env.spoolfs_threads, env.mount_timeout, log);
            match ms {
                Ok(ms) => out.extend(ms),
                Err(e) if first.is_ok() => first = Err(e),
                Err(e) => eprintln!("error: mount-scan: {e}"),
            }
        }
    }
    first
}
