//! The filesystem core: decides everything, knows nothing of the kernel
//! protocol. `fuse.rs` unpacks requests, calls these methods, and replies.
//!
//! One file per family of operations:
//! - `inode.rs`   inode numbers, nodes, the table
//! - `anchor.rs`  how file nodes reach their backing inode (descriptor or handle)
//! - `accounts/`  the accounting type: every charge, owner and transfer (quota),
//!   a file charged once per quota root (`charged.rs`), subtree moves
//!   (`subtree.rs`)
//! - `account.rs` folders of directories, file states met by name, refusal logs
//! - `lookup.rs`  lookup, getattr, forget, readlink
//! - `dir.rs`     mkdir, rmdir, readdir, union directories
//! - `copies.rs`  changes to every copy of a union directory, all or nothing
//! - `listing.rs` the snapshots READDIR serves, and their offsets
//! - `create.rs`  create, mknod, symlink
//! - `file.rs`    open, read, write, fsync, release, fallocate, lseek, copy_file_range
//! - `handles.rs` the descriptors behind handles: one per open, or one per file
//! - `setattr.rs` chmod, chown, utimens, truncate
//! - `rename.rs`  rename, link, unlink
//! - `xattr.rs`   extended attributes
//! - `statfs.rs`  df: partition space or quota
//! - `types.rs`   what the core answers with (attributes, kinds, passthrough ids)
//! - `health.rs`  naming the partition in trouble in the log

mod account;
mod accounts;
mod anchor;
mod copies;
mod create;
mod dir;
mod file;
mod handles;
mod health;
pub mod inode;
mod listing;
mod lookup;
mod rename;
mod setattr;
mod statfs;
mod types;
mod xattr;

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use crate::backing::{self, AsFdRef};
use crate::config::Config;
use crate::error::{FsError, FsResult};
use crate::layout::Layout;
use crate::quota::Ledger;
use crate::routing::Router;

use accounts::Accounts;
pub use dir::DirEntryOut;
pub use file::Opened;
pub use handles::NO_HANDLE;
use inode::{Body, DirNode, InodeTable, Key, Loc, Node, ROOT_INO};
pub use listing::{Page as ListingPage, offset_after};
pub use setattr::SetAttr;
pub use statfs::StatFs;
pub use types::{Attr, FileKind, PassthroughId, SetTime};
pub use xattr::CONTROL_XATTR;

/// Who is asking: the credentials FUSE passes with every request.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
}

pub struct Partition {
    pub name: String,
    pub root: Arc<OwnedFd>,
    /// The root opened for reading: `open_by_handle_at` takes no `O_PATH`
    /// descriptor as its mount (see `anchor.rs`).
    pub handle_root: Arc<OwnedFd>,
}

pub struct SpoolFs {
    pub config: Config,
    pub partitions: Vec<Partition>,
    router: Router,
    pub layout: Layout,
    /// For reports and run-time limits (the control socket); every charge
    /// goes through `accounts`.
    pub ledger: Arc<Ledger>,
    /// The one accounting path (see `accounts.rs`).
    pub accounts: Accounts,
    inodes: InodeTable,
    handles: Arc<handles::Handles>,
    /// Off once the kernel has refused a passthrough backing file.
    passthrough: AtomicBool,
    pub ttl: Duration,
    health: health::HealthLog,
}

/// How many descriptors file nodes may hold (`[mount] held_descriptors`):
/// their anchors, and separately their per-file descriptors.
pub fn set_descriptor_budget(n: usize) {
    anchor::set_budget(n);
    handles::set_budget(n);
}

impl SpoolFs {
    /// Opens the partitions, rebuilds usage from them (see `scan.rs`) and
    /// returns a filesystem ready to be mounted.
    pub fn new(config: Config, ledger: Arc<Ledger>) -> Result<SpoolFs, String> {
        let partitions = open_partitions(&config)?;
        let partition_count = partitions.len();
        let roots: Vec<(usize, OwnedFd)> = partitions
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.root.as_fd_ref().try_clone_to_owned().expect("dup")))
            .collect();
        let root_keys = roots
            .iter()
            .map(|(_, fd)| backing::stat_fd(fd.as_fd_ref()).map(|st| Key::of(&st)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("cannot stat a partition root: {e}"))?;
        let loc = Loc {
            parent: 0,
            name: Default::default(),
        };
        let root = InodeTable::root_node(Body::Dir(DirNode::new(loc, partitions.len(), roots)));
        let handles = Arc::new(handles::Handles::default());
        handles::Handles::start_sweeper(&handles);
        Ok(SpoolFs {
            router: Router::new(&config),
            layout: Layout::new(&config.layout),
            ttl: Duration::from_secs(config.mount.ttl_secs),
            passthrough: AtomicBool::new(config.mount.passthrough),
            config,
            partitions,
            accounts: Accounts::new(ledger.clone()),
            ledger,
            inodes: InodeTable::new(root, &root_keys),
            handles,
            health: health::HealthLog::new(partition_count),
        })
    }

    fn node(&self, ino: u64) -> FsResult<Arc<Node>> {
        self.inodes.get(ino).ok_or(FsError::Stale)
    }

    fn dir_node(&self, ino: u64) -> FsResult<Arc<Node>> {
        let node = self.node(ino)?;
        if node.dir().is_none() {
            return Err(FsError::NotDir);
        }
        Ok(node)
    }

    /// The spool path of a directory node, walking up its parents (the
    /// kernel keeps every parent of a known node known).
    fn dir_path(&self, node: &Node) -> PathBuf {
        let mut names = Vec::new();
        let mut ino = node.ino;
        while ino != ROOT_INO {
            let Some(n) = self.inodes.get(ino) else { break };
            let Some(d) = n.dir() else { break };
            let loc = d.loc();
            names.push(loc.name);
            ino = loc.parent;
        }
        names.iter().rev().collect()
    }

    fn child_path(&self, dir: &Node, name: &OsStr) -> PathBuf {
        self.dir_path(dir).join(name)
    }

    /// The attributes callers see: the backing `lstat` with our inode
    /// number.
    pub fn attr(&self, ino: u64, st: &libc::stat) -> Attr {
        Attr::from_stat(ino, st)
    }

    pub fn partition_name(&self, part: usize) -> &str {
        &self.partitions[part].name
    }
}

fn open_partitions(config: &Config) -> Result<Vec<Partition>, String> {
    config
        .partitions
        .iter()
        .map(|p| {
            open_partition(&p.name, &p.path)
                .map_err(|e| format!("partition {} ({}): {e}", p.name, p.path.display()))
        })
        .collect()
}

fn open_partition(name: &str, path: &std::path::Path) -> std::io::Result<Partition> {
    let root = backing::open_root(path)?;
    let handle_root = backing::reopen(root.as_fd_ref(), libc::O_RDONLY | libc::O_DIRECTORY)?;
    Ok(Partition {
        name: name.to_string(),
        root: Arc::new(root),
        handle_root: Arc::new(handle_root),
    })
}

fn is_dir(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

fn is_reg(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Every entry of a backing directory with its component and `lstat`;
/// entries that vanish meanwhile or have unusable names are skipped.
pub fn stat_entries(dir: BorrowedFd) -> std::io::Result<Vec<(OsString, CString, libc::stat)>> {
    Ok(backing::read_dir(dir)?
        .into_iter()
        .filter_map(|e| {
            let c = backing::component(&e.name).ok()?;
            let st = backing::stat_at(dir, &c).ok()?;
            Some((e.name, c, st))
        })
        .collect())
}
