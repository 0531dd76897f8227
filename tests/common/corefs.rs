//! The filesystem core without a kernel: a `SpoolFs` over temporary
//! partitions, called directly. For accounting and routing tests that need
//! no mount (each runs in milliseconds); what only the kernel shows stays
//! in the mount tests.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use spoolfs::config::Config;
use spoolfs::error::{FsError, FsResult};
use spoolfs::fs::{Attr, Caller, NO_HANDLE, SetAttr, SpoolFs};
use spoolfs::quota::{Ledger, Scope};

pub const ROOT: u64 = 1;

/// An open file as requests name it: (inode, handle).
pub type OpenRef = (u64, u64);
const WHO: Caller = Caller {
    uid: 0,
    gid: 0,
    pid: 0,
};

pub struct Core {
    pub fs: SpoolFs,
    /// Partition roots, in configuration order.
    pub parts: Vec<PathBuf>,
    config: Config,
    _tmp: tempfile::TempDir,
}

impl Core {
    /// Partitions `names` (the first is the default) and the rest of the
    /// TOML configuration (`extra`: routes, layout, quota, limits).
    pub fn new(names: &[&str], extra: &str) -> Core {
        let tmp = tempfile::Builder::new()
            .prefix("spoolfs-core")
            .tempdir()
            .unwrap();
        let mut toml = String::from("[partitions]\n");
        let mut parts = Vec::new();
        for n in names {
            let p = tmp.path().join(format!("part-{n}"));
            std::fs::create_dir(&p).unwrap();
            toml.push_str(&format!("{n} = \"{}\"\n", p.display()));
            parts.push(p);
        }
        toml.push_str(extra);
        let state = tmp.path().join("state");
        toml.push_str(&format!(
            "\n[control]\nstate_dir = \"{}\"\n",
            state.display()
        ));
        let config = Config::parse(&toml, Path::new("core-test.toml")).unwrap();
        let fs = start(&config);
        Core {
            fs,
            parts,
            config,
            _tmp: tmp,
        }
    }

    /// A fresh `SpoolFs` over the same partitions, usage rebuilt by the
    /// start-up scan (as after a restart).
    pub fn restart(&mut self) {
        self.fs = start(&self.config);
    }

    /// The inode of a spool path, looked up from the root.
    pub fn ino(&self, rel: &str) -> FsResult<u64> {
        let mut ino = ROOT;
        for c in Path::new(rel).iter() {
            ino = self.fs.lookup(ino, c)?.ino;
        }
        Ok(ino)
    }

    /// The parent directory's inode and the last component of `rel`.
    pub fn at(&self, rel: &str) -> (u64, OsString) {
        let p = Path::new(rel);
        let parent = p.parent().map_or("", |p| p.to_str().unwrap());
        let ino = self.ino(parent).unwrap_or_else(|e| panic!("{parent}: {e}"));
        (ino, p.file_name().unwrap().to_owned())
    }

    /// `mkdir -p`.
    pub fn mkdirs(&self, rel: &str) -> u64 {
        let mut ino = ROOT;
        for c in Path::new(rel).iter() {
            ino = match self.fs.lookup(ino, c) {
                Ok(a) => a.ino,
                Err(_) => self.fs.mkdir(WHO, ino, c, 0o755, 0o022).unwrap().ino,
            };
        }
        ino
    }

    /// Creates `rel` open for writing.
    pub fn create(&self, rel: &str) -> FsResult<OpenRef> {
        let (dir, name) = self.at(rel);
        let (attr, fh) = self
            .fs
            .create(WHO, dir, &name, 0o644, 0o022, libc::O_WRONLY)?;
        Ok((attr.ino, fh))
    }

    /// Opens an existing file for writing, as the kernel would: without
    /// a handle where the daemon keeps descriptors per file.
    pub fn open_rw(&self, rel: &str) -> FsResult<OpenRef> {
        let ino = self.ino(rel)?;
        let no_passthrough = |_: std::os::fd::BorrowedFd| Err(std::io::Error::other("none"));
        match self.fs.open(ino, libc::O_RDWR, no_passthrough) {
            Ok(o) => Ok((ino, o.fh)),
            Err(FsError::OpensByKernel) => Ok((ino, NO_HANDLE)),
            Err(e) => Err(e),
        }
    }

    /// Writes `n` bytes at `offset` through an open file.
    pub fn write(&self, f: OpenRef, offset: u64, n: u64) -> FsResult<u32> {
        self.fs.write(f.0, f.1, offset, &vec![b'x'; n as usize], 0)
    }

    /// Creates `rel` with `n` bytes (refused: the empty file stays).
    pub fn put(&self, rel: &str, n: u64) -> FsResult<()> {
        let f = self.create(rel)?;
        let r = if n > 0 {
            self.write(f, 0, n).map(drop)
        } else {
            Ok(())
        };
        self.fs.release(f.1);
        r
    }

    pub fn truncate(&self, rel: &str, size: u64) -> FsResult<Attr> {
        let change = SetAttr {
            size: Some(size),
            ..SetAttr::default()
        };
        self.fs.setattr(self.ino(rel)?, change)
    }

    pub fn unlink(&self, rel: &str) -> FsResult<()> {
        let (dir, name) = self.at(rel);
        self.fs.unlink(dir, &name)
    }

    pub fn link(&self, from: &str, to: &str) -> FsResult<Attr> {
        let ino = self.ino(from)?;
        let (dir, name) = self.at(to);
        self.fs.link(ino, dir, &name)
    }

    pub fn rename(&self, from: &str, to: &str, flags: u32) -> FsResult<()> {
        let (a, an) = self.at(from);
        let (b, bn) = self.at(to);
        self.fs.rename(a, &an, b, &bn, flags)
    }

    pub fn mailbox(&self, name: &str) -> u64 {
        self.fs.ledger.usage(&Scope::Mailbox(name.into()))
    }

    pub fn tenant(&self, name: &str) -> u64 {
        self.fs.ledger.usage(&Scope::Tenant(name.into()))
    }

    /// Σ st_size of the regular-file names under `rel` on every partition.
    pub fn on_disk(&self, rel: &str) -> u64 {
        self.parts
            .iter()
            .map(|p| super::recount(&p.join(rel)))
            .sum()
    }

    /// `on_disk(rel)` without the subtree `skip` (a nested quota root).
    pub fn on_disk_without(&self, rel: &str, skip: &str) -> u64 {
        let one = |p: &PathBuf| super::recount_without(&p.join(rel), &p.join(skip));
        self.parts.iter().map(one).sum()
    }

    /// Which partitions hold `rel`.
    pub fn partitions_of(&self, rel: &str) -> Vec<usize> {
        (0..self.parts.len())
            .filter(|i| self.parts[*i].join(rel).symlink_metadata().is_ok())
            .collect()
    }
}

fn start(config: &Config) -> SpoolFs {
    let ledger = std::sync::Arc::new(Ledger::new(config).unwrap());
    let fs = SpoolFs::new(config.clone(), ledger).unwrap();
    spoolfs::scan::rebuild_usage(&fs, 1);
    fs
}

/// The errno a core call failed with.
#[track_caller]
pub fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    match r {
        Err(e) => e.errno(),
        Ok(v) => panic!("expected an error, got {v:?}"),
    }
}

pub fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}
