//! `--fs ext4|xfs`: the whole run (native directory, spoolfs partitions,
//! mount-scan corpus) on a fresh journaled filesystem in a loop image, made
//! before the first run and removed after the last, also on Ctrl-C or an
//! error. A host filesystem carries history that moves results: on an ext4
//! without a journal, every new inode scans past the inodes deleted in the
//! last 60-300 s, so what ran a minute before decides how fast files are
//! created, for every target alike; and no spool runs on such a filesystem.
//! The real-daemon benchmarks (`scratch_fs.py`) do the same.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::ValueEnum;

use crate::sys::{self, Ctx, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsKind {
    /// The directory `--dir` names, as it is.
    Host,
    /// A fresh ext4 (with its default journal) in a loop image under `--dir`.
    Ext4,
    /// A fresh XFS in a loop image under `--dir`.
    Xfs,
}

impl FsKind {
    /// The mkfs command line (without the image) and its Debian package.
    fn mkfs(self) -> Option<(&'static [&'static str], &'static str)> {
        match self {
            FsKind::Host => None,
            FsKind::Ext4 => Some((&["mkfs.ext4", "-q", "-F"], "e2fsprogs")),
            FsKind::Xfs => Some((&["mkfs.xfs", "-q", "-f"], "xfsprogs")),
        }
    }
}

/// A mounted scratch filesystem; unmounted and removed when dropped.
pub struct ScratchFs {
    work: PathBuf,
    pub mnt: PathBuf,
    mounted: bool,
}

impl ScratchFs {
    /// `None` for `host`; otherwise a new `kind` filesystem of `size`
    /// (a sparse image under `under`), mounted and world-writable.
    pub fn create(kind: FsKind, size: &str, under: &Path) -> Result<Option<ScratchFs>> {
        let Some((mkfs, package)) = kind.mkfs() else { return Ok(None) };
        ensure_installed(mkfs[0], package)?;
        let work = under.join(format!("spoolfs-bench-fs.{}", std::process::id()));
        fs::create_dir(&work).ctx(|| format!("creating {}", work.display()))?;
        let mut scratch = ScratchFs { mnt: work.join("mnt"), work, mounted: false };
        fs::create_dir(&scratch.mnt).ctx(|| format!("creating {}", scratch.mnt.display()))?;
        let image = scratch.work.join("fs.img");
        must(Command::new("truncate").arg("-s").arg(size).arg(&image), &format!("--fs-size {size}"))?;
        must(Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image), &format!("--fs {kind:?}"))?;
        must(
            Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&scratch.mnt),
            "--fs: loop mount (are loop devices available?)",
        )?;
        scratch.mounted = true;
        set_mode(&scratch.mnt, 0o1777)?;
        Ok(Some(scratch))
    }
}

impl Drop for ScratchFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
        // refuses (and says so) while anything is still mounted below it
        sys::remove_tree(&self.work);
    }
}

/// Installs `package` if `program` is missing, as the real-daemon
/// benchmarks install the daemons they run.
fn ensure_installed(program: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if found {
        return Ok(());
    }
    eprintln!("[setup] installing {package} for {program}");
    must(Command::new("apt-get").args(["update", "-q"]), "apt-get update")?;
    must(
        Command::new("apt-get").args(["install", "-y", "-q", "--no-install-recommends", package]),
        &format!("installing {package}"),
    )
}

/// Runs `cmd`; a failure is an error naming `what` and the command's own
/// message.
fn must(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .ctx(|| format!("{what}: running {:?}", cmd.get_program()))?;
    if out.status.success() {
        return Ok(());
    }
    let why = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr });
    Err(format!("{what}: {:?} failed: {}", cmd.get_program(), why.trim()).into())
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).ctx(|| format!("chmod {}", p.display()))
}
