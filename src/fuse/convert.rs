//! The core's types as fuser's: attributes, file types, and the times
//! `setattr` brings (with fuser 0.18's reading of times before 1970).

use std::time::{Duration, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo, TimeOrNow};

use crate::fs::{Attr, FileKind, SetTime};

pub(super) fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.blocks,
        atime: a.atime,
        mtime: a.mtime,
        ctime: a.ctime,
        crtime: UNIX_EPOCH,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

pub(super) fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Directory => FileType::Directory,
        FileKind::RegularFile => FileType::RegularFile,
        FileKind::Symlink => FileType::Symlink,
        FileKind::NamedPipe => FileType::NamedPipe,
        FileKind::Socket => FileType::Socket,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
    }
}

pub(super) fn set_time(t: TimeOrNow) -> SetTime {
    match t {
        TimeOrNow::SpecificTime(t) => {
            let (sec, nsec) = match t.duration_since(UNIX_EPOCH) {
                Ok(d) => (d.as_secs() as i64, d.subsec_nanos()),
                Err(e) => before_epoch(e.duration()),
            };
            SetTime::At { sec, nsec }
        }
        TimeOrNow::Now => SetTime::Now,
    }
}

/// The kernel's `(tv_sec, tv_nsec)` for a time before 1970, from how
/// fuser 0.18 turned it into a `SystemTime`: it computes
/// `UNIX_EPOCH - Duration::new(-tv_sec, tv_nsec)` (subtracting the
/// nanoseconds instead of adding them), so the inverse is the duration's
/// parts as they are — normalising them would move the time by twice the
/// nanoseconds (`-31536000 s + 5 ns` would become `-31536000 s - 5 ns`).
fn before_epoch(d: Duration) -> (i64, u32) {
    (-(d.as_secs() as i64), d.subsec_nanos())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::{SetTime, TimeOrNow, set_time};

    /// What fuser 0.18 hands us for the kernel's `(sec, nsec)`.
    fn from_kernel(sec: i64, nsec: u32) -> SystemTime {
        if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec as u64, nsec)
        } else {
            UNIX_EPOCH - Duration::new((-sec) as u64, nsec)
        }
    }

    #[test]
    fn kernel_times_round_trip_also_before_1970() {
        for (sec, nsec) in [
            (1_500_000_000, 987_654_321),
            (0, 0),
            (0, 7),
            (-1, 0),
            (-1, 5),
            (-31_536_000, 5),
            (-31_536_000, 999_999_999),
        ] {
            let t = set_time(TimeOrNow::SpecificTime(from_kernel(sec, nsec)));
            assert_eq!(t, SetTime::At { sec, nsec }, "{sec} {nsec}");
        }
    }
}
