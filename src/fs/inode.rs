//! Inodes: what the kernel's inode numbers stand for.
//!
//! A node holds `O_PATH` descriptors on its backing objects, so it keeps
//! reaching the same object across renames, and it is keyed by the backing
//! `(st_dev, st_ino)`, so two hard links are one node with one inode number.
//! A directory that exists on several partitions is one node with one copy
//! per partition (numbered after its first copy).
//!
//! Inode numbers are derived from the backing key, `device index << 48 |
//! backing inode`, so a plain READDIR can give every entry the number a
//! later lookup will (`d_ino` = `st_ino`) without looking it up. A number
//! is never handed to a second object while the kernel still knows the
//! first (a backing inode number reused after a delete, before the kernel
//! forgot the old file): that object gets a spare number instead.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};

use super::accounts::FileState;
use super::anchor::{Anchor, LeafFd};
use super::listing::Listings;
use crate::backing::{self, AsFdRef};
use crate::quota::FolderId;

pub const ROOT_INO: u64 = 1;

/// Identity of a backing object.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    pub dev: u64,
    pub ino: u64,
}

impl Key {
    pub fn of(st: &libc::stat) -> Key {
        Key {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

pub struct Node {
    pub ino: u64,
    lookups: AtomicU64,
    /// Every backing key that answers to this node (dirs: one per copy).
    keys: Mutex<Vec<Key>>,
    pub body: Body,
}

pub enum Body {
    Dir(DirNode),
    File(FileNode),
    /// Symlinks, FIFOs, sockets, devices: stored and returned, never followed.
    Other(LeafNode),
}

/// Where a directory sits in the tree (directories have exactly one name).
#[derive(Clone, Debug)]
pub struct Loc {
    pub parent: u64,
    pub name: OsString,
}

pub struct DirNode {
    pub loc: RwLock<Loc>,
    /// One `O_PATH` descriptor per partition the directory exists on.
    copies: RwLock<Vec<Option<Arc<OwnedFd>>>>,
    /// The folder files here are charged to, valid for one layout epoch.
    pub folder: Mutex<FolderCache>,
    /// Snapshots READDIR is serving (see `listing.rs`).
    pub listings: Listings,
}

#[derive(Clone, Copy, Default)]
pub struct FolderCache {
    pub epoch: u64,
    pub valid: bool,
    pub folder: Option<FolderId>,
}

pub struct LeafNode {
    anchor: Anchor,
    pub part: usize,
}

impl LeafNode {
    /// `fd` is an `O_PATH` descriptor on the object; `mount` the root of
    /// its partition (see `anchor.rs`).
    pub fn new(fd: OwnedFd, part: usize, mount: &Arc<OwnedFd>) -> LeafNode {
        LeafNode {
            anchor: Anchor::new(fd, mount),
            part,
        }
    }

    /// A descriptor on the object for one operation.
    pub fn fd(&self) -> std::io::Result<LeafFd<'_>> {
        self.anchor.fd()
    }
}

pub struct FileNode {
    pub leaf: LeafNode,
    pub key: Key,
    /// Shared with the file-state index (see `account.rs`); locked for
    /// every size change of this file.
    pub state: Arc<Mutex<FileState>>,
    pub opens: Mutex<OpenState>,
    /// Signalled when the last passthrough open of this file is released.
    pub passthrough_gone: Condvar,
    /// Known to carry no set-user-ID or set-group-ID bit, so a write that
    /// must clear them (`kill_suidgid`) costs no `fstat`: read from the
    /// `lstat` the node was made from, kept by every mode change (only the
    /// daemon changes modes while mounted; chown only clears bits).
    pub no_setid: AtomicBool,
}

/// Open-mode bookkeeping for passthrough: the kernel wants every open of an
/// inode with a passthrough open to be passthrough too.
#[derive(Default)]
pub struct OpenState {
    pub writers: u32,
    /// Read-only opens served through the daemon and the page cache; the
    /// kernel refuses a passthrough open while one is open.
    pub cached_readers: u32,
    pub passthrough_opens: u32,
    pub backing: Option<super::PassthroughId>,
}

impl Node {
    pub fn dir(&self) -> Option<&DirNode> {
        match &self.body {
            Body::Dir(d) => Some(d),
            _ => None,
        }
    }

    pub fn file(&self) -> Option<&FileNode> {
        match &self.body {
            Body::File(f) => Some(f),
            _ => None,
        }
    }

    /// `lstat` of the backing object; for a directory, of its first copy.
    pub fn stat(&self) -> std::io::Result<libc::stat> {
        match &self.body {
            Body::Dir(d) => {
                let (_, fd) = d.copies().into_iter().next().ok_or_else(gone)?;
                backing::stat_fd(fd.as_fd_ref())
            }
            Body::File(f) => backing::stat_fd(f.leaf.fd()?.as_fd_ref()),
            Body::Other(l) => backing::stat_fd(l.fd()?.as_fd_ref()),
        }
    }

    /// The leaf (file or other) descriptor and partition.
    pub fn leaf(&self) -> Option<&LeafNode> {
        match &self.body {
            Body::File(f) => Some(&f.leaf),
            Body::Other(l) => Some(l),
            Body::Dir(_) => None,
        }
    }
}

fn gone() -> std::io::Error {
    std::io::Error::from_raw_os_error(libc::ENOENT)
}

impl DirNode {
    pub fn new(loc: Loc, partitions: usize, copies: Vec<(usize, OwnedFd)>) -> DirNode {
        let mut v: Vec<Option<Arc<OwnedFd>>> = (0..partitions).map(|_| None).collect();
        for (p, fd) in copies {
            v[p] = Some(Arc::new(fd));
        }
        DirNode {
            loc: RwLock::new(loc),
            copies: RwLock::new(v),
            folder: Mutex::new(FolderCache::default()),
            listings: Listings::default(),
        }
    }

    /// `(partition, descriptor)` for every partition the directory is on.
    pub fn copies(&self) -> Vec<(usize, Arc<OwnedFd>)> {
        let v = self.copies.read().unwrap();
        v.iter()
            .enumerate()
            .filter_map(|(p, c)| c.clone().map(|fd| (p, fd)))
            .collect()
    }

    pub fn copy(&self, part: usize) -> Option<Arc<OwnedFd>> {
        self.copies.read().unwrap()[part].clone()
    }

    /// Records a copy made on another partition; keeps an existing one.
    pub fn add_copy(&self, part: usize, fd: OwnedFd) -> Arc<OwnedFd> {
        let mut v = self.copies.write().unwrap();
        v[part].get_or_insert_with(|| Arc::new(fd)).clone()
    }

    pub fn remove_copy(&self, part: usize) {
        self.copies.write().unwrap()[part] = None;
    }

    pub fn loc(&self) -> Loc {
        self.loc.read().unwrap().clone()
    }
}

/// All nodes the kernel currently knows, by inode number and by backing key.
pub struct InodeTable {
    inner: RwLock<Tables>,
}

struct Tables {
    nodes: HashMap<u64, Arc<Node>>,
    by_key: HashMap<Key, u64>,
    /// Small numbers for backing devices, in first-seen order from 1.
    devs: HashMap<u64, u64>,
    next_spare: u64,
}

/// Bits of the backing inode number in a derived number; the device index
/// takes the bits above, up to bit 61.
const INO_BITS: u32 = 48;
/// Spare numbers (for objects whose number cannot be derived or is taken)
/// start here, above every derived number.
const SPARE_BASE: u64 = 1 << 62;

/// `dev << 48 | ino` for a device index and a backing inode number, if
/// both fit below the spare numbers.
fn derive(dev: u64, ino: u64) -> Option<u64> {
    (ino < 1 << INO_BITS && dev < SPARE_BASE >> INO_BITS).then_some(dev << INO_BITS | ino)
}

impl Tables {
    /// The number derived from `key`, if it fits (numbering its device
    /// first if it is new).
    fn derived(&mut self, key: &Key) -> Option<u64> {
        let next = self.devs.len() as u64 + 1;
        let dev = *self.devs.entry(key.dev).or_insert(next);
        derive(dev, key.ino)
    }

    /// The number for a new node: derived, unless a node the kernel still
    /// knows has it.
    fn number_for(&mut self, key: &Key) -> u64 {
        match self.derived(key) {
            Some(ino) if !self.nodes.contains_key(&ino) => ino,
            _ => {
                self.next_spare += 1;
                self.next_spare
            }
        }
    }
}

impl InodeTable {
    pub fn new(root: Node, root_keys: &[Key]) -> InodeTable {
        let mut t = Tables {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            devs: HashMap::new(),
            next_spare: SPARE_BASE,
        };
        for k in root_keys {
            t.by_key.insert(*k, ROOT_INO);
            // Partitions' devices first, in config order: the same numbers
            // at every mount.
            let next = t.devs.len() as u64 + 1;
            t.devs.entry(k.dev).or_insert(next);
        }
        t.nodes.insert(ROOT_INO, Arc::new(root));
        InodeTable {
            inner: RwLock::new(t),
        }
    }

    pub fn root_node(body: Body) -> Node {
        // The root is never forgotten.
        Node {
            ino: ROOT_INO,
            lookups: AtomicU64::new(u64::MAX / 2),
            keys: Mutex::default(),
            body,
        }
    }

    pub fn get(&self, ino: u64) -> Option<Arc<Node>> {
        self.inner.read().unwrap().nodes.get(&ino).cloned()
    }

    pub fn by_key(&self, key: &Key) -> Option<Arc<Node>> {
        let t = self.inner.read().unwrap();
        t.by_key.get(key).and_then(|ino| t.nodes.get(ino)).cloned()
    }

    /// The inode number a directory listing gives the object with `key`:
    /// its node's if the kernel knows it, else the one a lookup would
    /// derive (for the rare key whose number cannot be derived, a
    /// placeholder that `stat` will not match).
    pub fn listed_ino(&self, key: &Key) -> u64 {
        {
            let t = self.inner.read().unwrap();
            if let Some(ino) = t.by_key.get(key) {
                return *ino;
            }
            if let Some(ino) = t.devs.get(&key.dev).and_then(|dev| derive(*dev, key.ino)) {
                return ino;
            }
        }
        let mut t = self.inner.write().unwrap();
        t.derived(key).unwrap_or(key.ino | 1 << 63)
    }

    /// Counts one kernel lookup of the node for `key` if it is known.
    pub fn remember_known(&self, key: &Key) -> Option<Arc<Node>> {
        // The write lock serialises the count with `forget`, which may be
        // dropping the node at this moment.
        #[allow(clippy::readonly_write_lock)]
        let t = self.inner.write().unwrap();
        let node = t.by_key.get(key).and_then(|ino| t.nodes.get(ino))?;
        node.lookups.fetch_add(1, Ordering::Relaxed);
        Some(node.clone())
    }

    /// Counts one kernel lookup of the node for `key`, creating it with
    /// `make` if it is not known. `make` gets the new inode number and
    /// returns the body plus every key it answers to.
    pub fn remember(&self, key: Key, make: impl FnOnce() -> (Body, Vec<Key>)) -> Arc<Node> {
        let mut t = self.inner.write().unwrap();
        if let Some(node) = t.by_key.get(&key).and_then(|ino| t.nodes.get(ino)) {
            node.lookups.fetch_add(1, Ordering::Relaxed);
            return node.clone();
        }
        let ino = t.number_for(&key);
        let (body, keys) = make();
        for k in &keys {
            t.by_key.insert(*k, ino);
        }
        let node = Arc::new(Node {
            ino,
            lookups: AtomicU64::new(1),
            keys: Mutex::new(keys),
            body,
        });
        t.nodes.insert(ino, node.clone());
        node
    }

    /// Counts one more kernel reference to a node already known.
    pub fn bump(&self, node: &Node) {
        let _t = self.inner.write().unwrap(); // serialises with `forget`
        node.lookups.fetch_add(1, Ordering::Relaxed);
    }

    /// Makes `key` (a new directory copy) answer to `ino`.
    pub fn add_key(&self, key: Key, node: &Node) {
        self.inner.write().unwrap().by_key.insert(key, node.ino);
        node.keys.lock().unwrap().push(key);
    }

    /// The node that answers for `key` now (taken before removing the
    /// object, for `forget_key`).
    pub fn holder(&self, key: &Key) -> Option<u64> {
        self.inner.read().unwrap().by_key.get(key).copied()
    }

    /// The backing object `holder` stood for is gone: a new object may
    /// reuse its key. Only that node gives the key up: the inode number may
    /// already have gone to a new file (ext4 reuses it at once when nothing
    /// holds the old one), whose node must keep it.
    pub fn forget_key(&self, key: &Key, holder: Option<u64>) {
        let Some(ino) = holder else {
            return;
        };
        let mut t = self.inner.write().unwrap();
        if t.by_key.get(key) == Some(&ino) {
            t.by_key.remove(key);
        }
    }

    /// The kernel's FORGET: returns the node if this was its last reference.
    pub fn forget(&self, ino: u64, n: u64) -> Option<Arc<Node>> {
        let mut t = self.inner.write().unwrap();
        let node = t.nodes.get(&ino)?.clone();
        // Under the write lock nobody else changes the count.
        let before = node.lookups.load(Ordering::Relaxed);
        node.lookups
            .store(before.saturating_sub(n), Ordering::Relaxed);
        if before > n {
            return None;
        }
        t.nodes.remove(&ino);
        for k in node.keys.lock().unwrap().iter() {
            if t.by_key.get(k) == Some(&ino) {
                t.by_key.remove(k);
            }
        }
        Some(node)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{Body, DirNode, INO_BITS, InodeTable, Key, Loc, Node, ROOT_INO, SPARE_BASE};

    fn dir_body() -> Body {
        let loc = Loc {
            parent: ROOT_INO,
            name: "d".into(),
        };
        Body::Dir(DirNode::new(loc, 1, Vec::new()))
    }

    fn table() -> InodeTable {
        let root = InodeTable::root_node(dir_body());
        InodeTable::new(root, &[Key { dev: 7, ino: 2 }])
    }

    fn remember(t: &InodeTable, key: Key) -> Arc<Node> {
        t.remember(key, || (dir_body(), vec![key]))
    }

    #[test]
    fn numbers_are_derived_from_the_backing_key_and_listed_alike() {
        let t = table();
        let key = Key { dev: 7, ino: 1234 };
        let listed = t.listed_ino(&key);
        let node = remember(&t, key);
        assert_eq!(
            node.ino,
            1 << INO_BITS | 1234,
            "partition device is index 1"
        );
        assert_eq!(listed, node.ino, "d_ino before the lookup = st_ino after");
        assert_eq!(remember(&t, key).ino, node.ino, "one node per key");
        let other_dev = remember(&t, Key { dev: 9, ino: 1234 });
        assert_eq!(other_dev.ino, 2 << INO_BITS | 1234);
        assert_eq!(t.listed_ino(&Key { dev: 7, ino: 2 }), ROOT_INO);
    }

    #[test]
    fn forgetting_a_key_spares_the_node_of_a_new_object_that_took_it() {
        let t = table();
        let key = Key { dev: 7, ino: 77 };
        let old = remember(&t, key);
        let holder = t.holder(&key);
        assert_eq!(holder, Some(old.ino));
        // The old object is deleted, its inode number reused at once, and
        // a lookup of the new one retires the stale node first.
        t.forget_key(&key, Some(old.ino));
        let new = remember(&t, key);
        // The unlink that took `holder` before its call now forgets.
        t.forget_key(&key, holder);
        assert_eq!(t.holder(&key), Some(new.ino), "the new object kept its key");
        t.forget_key(&key, Some(new.ino));
        assert_eq!(t.holder(&key), None);
    }

    #[test]
    fn a_number_the_kernel_still_knows_is_never_given_to_another_object() {
        let t = table();
        let key = Key { dev: 7, ino: 55 };
        let old = remember(&t, key);
        // The file is deleted and its backing inode number reused at once,
        // before the kernel forgets the old one.
        t.forget_key(&key, Some(old.ino));
        let new = remember(&t, key);
        assert_ne!(new.ino, old.ino);
        assert!(new.ino > SPARE_BASE);
        // Once the kernel forgot the old node, the derived number is free.
        assert!(t.forget(old.ino, 1).is_some());
        t.forget_key(&key, Some(new.ino));
        assert!(t.forget(new.ino, 1).is_some());
        assert_eq!(remember(&t, key).ino, old.ino);
    }

    #[test]
    fn inode_numbers_too_big_to_derive_get_spare_numbers() {
        let t = table();
        let key = Key {
            dev: 7,
            ino: 1 << INO_BITS,
        };
        let node = remember(&t, key);
        assert!(node.ino > SPARE_BASE);
        assert_eq!(t.listed_ino(&key), node.ino, "known: its real number");
    }
}
