//! deliver1 / deliver4: what Cyrus lmtpd does per message — create a temp
//! file in the mailbox directory (O_CREAT|O_EXCL|O_WRONLY), write it, fsync,
//! close, rename to `<uid>.`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{content, mailbox_rel, Message, Params};
use crate::sys::{self, Ctx, Result};

/// The delivered files (final names, grouped by mailbox, uid order) and the
/// mailbox directories.
pub struct Tree {
    pub files: Vec<(PathBuf, u64)>,
    pub dirs: Vec<PathBuf>,
}

impl Tree {
    /// Untimed removal of the delivered files (directories stay).
    pub fn remove(&self) -> Result<()> {
        for (f, _) in &self.files {
            fs::remove_file(f).ctx(|| format!("removing {}", f.display()))?;
        }
        Ok(())
    }
}

pub struct Delivered {
    pub elapsed: Duration,
    pub bytes: u64,
    pub tree: Tree,
}

/// The 200 mailbox directories (created untimed: they exist before mail arrives).
pub fn make_mailboxes(root: &Path, p: &Params) -> Result<Vec<PathBuf>> {
    (0..p.mailboxes)
        .map(|i| {
            let d = root.join(mailbox_rel(i, p.mailboxes));
            fs::create_dir_all(&d).ctx(|| format!("creating {}", d.display()))?;
            Ok(d)
        })
        .collect()
}

fn deliver_one(dir: &Path, m: &Message, block: usize) -> Result<()> {
    let tmp = dir.join(format!(".lmtp.{}.tmp", m.uid));
    let fin = dir.join(format!("{}.", m.uid));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true) // O_CREAT|O_EXCL
        .open(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    let data = content(m.uid ^ ((m.mailbox as u64) << 32), m.size as usize);
    for chunk in data.chunks(block) {
        f.write_all(chunk).ctx(|| format!("writing {}", tmp.display()))?;
    }
    f.sync_all().ctx(|| format!("fsync {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &fin).ctx(|| format!("renaming {} to {}", tmp.display(), fin.display()))?;
    Ok(())
}

pub fn deliver(plan: &[Message], mailboxes: &[PathBuf], threads: usize, p: &Params) -> Result<Delivered> {
    let _ = super::data(); // generate outside the timed section
    let t0 = Instant::now();
    let results: Vec<Result<()>> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || -> Result<()> {
                    for (i, m) in plan.iter().enumerate() {
                        if i % threads != t {
                            continue;
                        }
                        if i.is_multiple_of(64) {
                            sys::check_interrupt()?;
                        }
                        deliver_one(&mailboxes[m.mailbox], m, p.write_block)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap_or_else(|_| Err("deliver thread panicked".into()))).collect()
    });
    let elapsed = t0.elapsed();
    for r in results {
        r?;
    }
    let mut files: Vec<(usize, u64, u64)> = plan.iter().map(|m| (m.mailbox, m.uid, m.size)).collect();
    files.sort();
    Ok(Delivered {
        elapsed,
        bytes: plan.iter().map(|m| m.size).sum(),
        tree: Tree {
            files: files.into_iter().map(|(mb, uid, size)| (mailboxes[mb].join(format!("{uid}.")), size)).collect(),
            dirs: mailboxes.to_vec(),
        },
    })
}
