//! The start-up walk: rebuilds usage from what is really on the partitions,
//! so it is right after a crash, a `kill -9` mid-write, or changes made
//! while unmounted. It runs before the mount appears, on several threads.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use log::info;

use crate::backing::{self, AsFdRef};
use crate::fs::{SpoolFs, stat_entries};

/// One directory to read: which partition, its spool path, and where to
/// open it from. Opened only when read, so the walk holds a descriptor per
/// directory being read and per parent with children still queued, not one
/// per queued directory (a directory with 100,000 subdirectories would
/// otherwise need 100,000 at once).
struct Job {
    part: usize,
    path: PathBuf,
    at: Arc<OwnedFd>,
    /// None: `at` is the directory itself (a partition root).
    name: Option<CString>,
}

impl Job {
    fn open(&self) -> std::io::Result<Arc<OwnedFd>> {
        match &self.name {
            None => Ok(self.at.clone()),
            Some(name) => backing::lookup_at(self.at.as_fd_ref(), name).map(Arc::new),
        }
    }
}

/// Work shared by the walkers: a stack of directories and how many are
/// still being read (the walk ends when both are empty).
struct Queue {
    state: Mutex<(Vec<Job>, usize)>,
    wake: Condvar,
}

/// Totals of a scan, for the log and the benchmark.
#[derive(Debug, Default)]
pub struct ScanStats {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub seconds: f64,
}

pub fn rebuild_usage(fs: &SpoolFs, threads: usize) -> ScanStats {
    let start = Instant::now();
    fs.accounts.begin_rebuild();
    let queue = Arc::new(Queue {
        state: Mutex::new((Vec::new(), 0)),
        wake: Condvar::new(),
    });
    for (part, p) in fs.partitions.iter().enumerate() {
        let fd = p
            .root
            .as_fd_ref()
            .try_clone_to_owned()
            .expect("dup of a partition root");
        queue.state.lock().unwrap().0.push(Job {
            part,
            path: PathBuf::new(),
            at: Arc::new(fd),
            name: None,
        });
    }
    let counters = Counters::default();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| walker(fs, &queue, &counters));
        }
    });
    fs.accounts.charge_multi_links();
    let stats = ScanStats {
        files: counters.files.load(Ordering::Relaxed),
        dirs: counters.dirs.load(Ordering::Relaxed),
        bytes: counters.bytes.load(Ordering::Relaxed),
        seconds: start.elapsed().as_secs_f64(),
    };
    info!(
        "usage rebuilt: {} files in {} directories, {} bytes, {:.2}s",
        stats.files, stats.dirs, stats.bytes, stats.seconds
    );
    stats
}

#[derive(Default)]
struct Counters {
    files: AtomicU64,
    dirs: AtomicU64,
    bytes: AtomicU64,
}

const PROGRESS_EVERY: u64 = 100_000;

fn walker(fs: &SpoolFs, queue: &Queue, counters: &Counters) {
    while let Some(job) = next_job(queue) {
        let children = scan_dir(fs, &job, counters);
        let mut st = queue.state.lock().unwrap();
        st.0.extend(children);
        st.1 -= 1;
        queue.wake.notify_all();
    }
}

fn next_job(queue: &Queue) -> Option<Job> {
    let mut st = queue.state.lock().unwrap();
    loop {
        if let Some(job) = st.0.pop() {
            st.1 += 1;
            return Some(job);
        }
        if st.1 == 0 {
            return None;
        }
        st = queue.wake.wait(st).unwrap();
    }
}

/// Charges the regular files of one directory and returns its subdirectories.
fn scan_dir(fs: &SpoolFs, job: &Job, counters: &Counters) -> Vec<Job> {
    let fd = match job.open() {
        Ok(fd) => fd,
        Err(e) => {
            log::warn!("scan: cannot open {}: {e}", job.path.display());
            return Vec::new();
        }
    };
    let entries = match stat_entries(fd.as_fd()) {
        Ok(e) => e,
        Err(e) => {
            log::warn!("scan: cannot read {}: {e}", job.path.display());
            return Vec::new();
        }
    };
    let folder = fs.folder_for_path(&job.path, fd.as_fd());
    if let Some(f) = folder {
        fs.accounts.set_partition(f, fs.partition_name(job.part));
    }
    let mut subdirs = Vec::new();
    let mut bytes = 0u64;
    let mut single_bytes = 0u64;
    let mut files = 0u64;
    for (name, c, st) in entries {
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => subdirs.push(Job {
                part: job.part,
                path: job.path.join(&name),
                at: fd.clone(),
                name: Some(c),
            }),
            libc::S_IFREG => {
                files += 1;
                bytes += st.st_size as u64;
                if st.st_nlink > 1 {
                    // Charged once per quota root after the walk.
                    fs.note_multi_link(&st, folder);
                } else {
                    single_bytes += st.st_size as u64;
                }
            }
            _ => {}
        }
    }
    if let Some(f) = folder {
        fs.accounts.charge_found(f, single_bytes);
    }
    counters.dirs.fetch_add(1, Ordering::Relaxed);
    counters.bytes.fetch_add(bytes, Ordering::Relaxed);
    let before = counters.files.fetch_add(files, Ordering::Relaxed);
    if (before + files) / PROGRESS_EVERY > before / PROGRESS_EVERY {
        info!("scan: {} files so far", before + files);
    }
    subdirs
}
