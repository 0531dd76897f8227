//! One daemon per partition and per state directory.
//!
//! Two daemons over one partition keep two ledgers and double-count, so a
//! limit stops being one. Each daemon takes an exclusive `flock` on the
//! partition root directories and on its state directory themselves
//! (descriptors opened `O_RDONLY|O_DIRECTORY|O_CLOEXEC`): no lock file
//! exists, so nothing shows in the spool tree or is charged, and the kernel
//! drops the locks when the daemon dies, however it dies. spoolfs never
//! forwards a client's `flock`/`fcntl` lock to a backing file (it does not
//! negotiate `FUSE_FLOCK_LOCKS`/`FUSE_POSIX_LOCKS`; the kernel keeps client
//! locks on the FUSE inodes), so no client can take or break these locks.
//!
//! Partitions may also not *nest* across daemons (one daemon's partition
//! inside another's would be counted by both): a partition root is locked
//! exclusively and each of its ancestors on the same filesystem shared, so
//! an exclusive lock on a directory conflicts with a daemon serving it or
//! anything below it, and a shared one with a daemon serving an ancestor.
//!
//! A refused lock names the holder: `/proc/locks` lists every `FLOCK` with
//! its PID, its kind (`WRITE` exclusive, `READ` shared) and the locked inode
//! as `MAJOR:MINOR:INODE` (hex, hex, decimal).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// A lock on a directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, PartialEq)]
pub enum LockError {
    /// Another process holds it; its PID when `/proc/locks` names it, and
    /// whether its lock is shared (it serves something *below* the path).
    Held {
        pid: Option<u32>,
        shared: bool,
    },
    Io(String),
}

/// Locks a partition root exclusively and its ancestors on the same
/// filesystem shared, except `skip` (the daemon's own state directory,
/// which it locks exclusively itself). On refusal: the directory whose
/// lock was refused.
pub fn lock_tree(root: &Path, skip: &Path) -> Result<Vec<DirLock>, (PathBuf, LockError)> {
    let io = |p: &Path, e: std::io::Error| (p.to_path_buf(), LockError::Io(e.to_string()));
    let root = std::fs::canonicalize(root).map_err(|e| io(root, e))?;
    let dev = std::fs::metadata(&root).map_err(|e| io(&root, e))?.dev();
    let mut locks = vec![lock_dir(&root, libc::LOCK_EX).map_err(|e| (root.clone(), e))?];
    for ancestor in root.ancestors().skip(1) {
        if std::fs::metadata(ancestor).map(|m| m.dev()).ok() != Some(dev) {
            break;
        }
        if ancestor == skip {
            continue;
        }
        let lock = lock_dir(ancestor, libc::LOCK_SH).map_err(|e| (ancestor.to_path_buf(), e))?;
        locks.push(lock);
    }
    Ok(locks)
}

/// Takes a lock (`LOCK_EX` or `LOCK_SH`) on the directory `path` without waiting.
pub fn lock_dir(path: &Path, kind: libc::c_int) -> Result<DirLock, LockError> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| LockError::Io(e.to_string()))?;
    if unsafe { libc::flock(dir.as_raw_fd(), kind | libc::LOCK_NB) } == 0 {
        return Ok(DirLock {
            _dir: dir,
            path: path.to_path_buf(),
        });
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
        return Err(LockError::Io(e.to_string()));
    }
    let meta = dir.metadata().map_err(|e| LockError::Io(e.to_string()))?;
    Err(match holder_of(meta.dev(), meta.ino()) {
        Some((pid, shared)) => LockError::Held {
            pid: Some(pid),
            shared,
        },
        None => LockError::Held {
            pid: None,
            shared: false,
        },
    })
}

/// `flock_holder` on `/proc/locks`, read again if the holder is missing:
/// the kernel builds the file a page at a time, and locks taken or dropped
/// by other processes between two pages can make it skip lines (seen on a
/// busy machine: the holder missing from one read).
fn holder_of(dev: u64, ino: u64) -> Option<(u32, bool)> {
    for attempt in 0..5 {
        if attempt > 0 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
        if let Some(holder) = flock_holder(&locks, dev, ino) {
            return Some(holder);
        }
    }
    None
}

/// The PID of a process holding an `FLOCK` on inode `ino` of device `dev`,
/// and whether that lock is shared, from the text of `/proc/locks`. Lines
/// of waiters (`->`) and POSIX/OFD locks are skipped.
pub fn flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<(u32, bool)> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        match fields.as_slice() {
            [_, "FLOCK", _, kind, pid, id, ..] if *id == want => {
                Some((pid.parse().ok()?, *kind == "READ"))
            }
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_flock_holder_by_device_and_inode() {
        let dev = libc::makedev(0xfd, 0x1) as u64;
        let text = "\
1: POSIX  ADVISORY  WRITE 700 fd:01:42 0 EOF
2: FLOCK  ADVISORY  READ 800 fd:01:4242 0 EOF
2: -> FLOCK  ADVISORY  WRITE 900 fd:01:42 0 EOF
3: FLOCK  ADVISORY  WRITE 1234 fd:01:42 0 EOF
";
        assert_eq!(flock_holder(text, dev, 42), Some((1234, false)));
        assert_eq!(flock_holder(text, dev, 4242), Some((800, true)));
        assert_eq!(flock_holder(text, dev, 7), None);
        let other = libc::makedev(0x8, 0x1) as u64;
        assert_eq!(flock_holder(text, other, 42), None);
    }

    #[test]
    fn a_second_lock_is_refused_with_our_pid_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock_dir(tmp.path(), libc::LOCK_EX).expect("first lock");
        // A second open file description conflicts even in one process.
        let second = lock_dir(tmp.path(), libc::LOCK_EX).unwrap_err();
        assert_eq!(
            second,
            LockError::Held {
                pid: Some(std::process::id()),
                shared: false,
            }
        );
        drop(first);
        let again = lock_dir(tmp.path(), libc::LOCK_EX).expect("free after drop");
        // Nothing was created in the directory.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        drop(again);
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            lock_dir(&tmp.path().join("absent"), libc::LOCK_EX),
            Err(LockError::Io(_))
        ));
    }

    #[test]
    fn nested_partitions_conflict_and_siblings_do_not() {
        let tmp = tempfile::tempdir().unwrap();
        let (outer, inner, sibling) = (
            tmp.path().join("a"),
            tmp.path().join("a/b"),
            tmp.path().join("c"),
        );
        for d in [&inner, &sibling] {
            std::fs::create_dir_all(d).unwrap();
        }
        let none = Path::new("");
        let held = lock_tree(&inner, none).expect("first");
        let (at, e) = lock_tree(&outer, none).unwrap_err();
        assert_eq!(at, outer.canonicalize().unwrap());
        assert!(matches!(e, LockError::Held { shared: true, .. }), "{e:?}");
        let deeper = inner.join("d");
        std::fs::create_dir(&deeper).unwrap();
        let (at, e) = lock_tree(&deeper, none).unwrap_err();
        assert_eq!(at, inner.canonicalize().unwrap());
        assert!(matches!(e, LockError::Held { shared: false, .. }), "{e:?}");
        let _sibling = lock_tree(&sibling, none).expect("siblings share their parent");
        drop(held);
        let outer_held = lock_tree(&outer, none).expect("free once the inner one is let go");
        drop(outer_held);
        // A state directory above the partition is locked exclusively
        // by its daemon, not shared as an ancestor.
        let state = tmp.path().canonicalize().unwrap().join("a");
        let _tree = lock_tree(&inner, &state).unwrap();
        lock_dir(&state, libc::LOCK_EX).expect("not taken by the tree");
    }
}
