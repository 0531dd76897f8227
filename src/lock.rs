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
//! A refused lock names the holder: `/proc/locks` lists every `FLOCK` with
//! its PID and the locked inode as `MAJOR:MINOR:INODE` (hex, hex, decimal).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// An exclusive lock on a directory, held until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    _dir: File,
    pub path: PathBuf,
}

/// Why a lock could not be taken.
#[derive(Debug, PartialEq)]
pub enum LockError {
    /// Another process holds it; its PID when `/proc/locks` names it.
    Held {
        pid: Option<u32>,
    },
    Io(String),
}

/// Takes an exclusive lock on the directory `path` without waiting.
pub fn lock_dir(path: &Path) -> Result<DirLock, LockError> {
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| LockError::Io(e.to_string()))?;
    if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
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
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let pid = flock_holder(&locks, meta.dev(), meta.ino());
    Err(LockError::Held { pid })
}

/// The PID of the process holding an `FLOCK` on inode `ino` of device
/// `dev`, from the text of `/proc/locks`. Lines of waiters (`->`) and
/// POSIX/OFD locks are skipped.
pub fn flock_holder(proc_locks: &str, dev: u64, ino: u64) -> Option<u32> {
    let want = format!(
        "{:02x}:{:02x}:{ino}",
        libc::major(dev as libc::dev_t),
        libc::minor(dev as libc::dev_t)
    );
    proc_locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF"
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == want => pid.parse().ok(),
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
2: FLOCK  ADVISORY  WRITE 800 fd:01:4242 0 EOF
2: -> FLOCK  ADVISORY  WRITE 900 fd:01:42 0 EOF
3: FLOCK  ADVISORY  WRITE 1234 fd:01:42 0 EOF
";
        assert_eq!(flock_holder(text, dev, 42), Some(1234));
        assert_eq!(flock_holder(text, dev, 4242), Some(800));
        assert_eq!(flock_holder(text, dev, 7), None);
        let other = libc::makedev(0x8, 0x1) as u64;
        assert_eq!(flock_holder(text, other, 42), None);
    }

    #[test]
    fn a_second_lock_is_refused_with_our_pid_and_released_on_drop() {
        let tmp = tempfile::tempdir().unwrap();
        let first = lock_dir(tmp.path()).expect("first lock");
        // A second open file description conflicts even in one process.
        let second = lock_dir(tmp.path()).unwrap_err();
        assert_eq!(
            second,
            LockError::Held {
                pid: Some(std::process::id())
            }
        );
        drop(first);
        let again = lock_dir(tmp.path()).expect("free after drop");
        // Nothing was created in the directory.
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
        drop(again);
    }

    #[test]
    fn a_missing_directory_is_an_io_error() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(
            lock_dir(&tmp.path().join("absent")),
            Err(LockError::Io(_))
        ));
    }
}
