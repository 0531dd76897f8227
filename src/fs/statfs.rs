//! statfs (`df`): on a mailbox directory, its tightest quota (as XFS project
//! quotas report); elsewhere the partitions' real space, each filesystem
//! counted once. Cyrus picks partitions by `statvfs`, so this matters.

use std::collections::HashSet;

use super::SpoolFs;
use super::inode::Body;
use crate::backing::{self, AsFdRef};
use crate::error::FsResult;

/// What `statfs` reports, in `bsize` blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

impl SpoolFs {
    pub fn statfs(&self, ino: u64) -> FsResult<StatFs> {
        let real = self.partition_space()?;
        let node = self.node(ino)?;
        let quota = match &node.body {
            Body::Dir(_) => self.quota_of_dir(&node),
            Body::File(f) => f
                .state
                .lock()
                .unwrap()
                .some_folder()
                .and_then(|f| self.accounts.statfs_quota(f)),
            Body::Other(_) => None,
        };
        let Some((limit, used)) = quota else {
            return Ok(real);
        };
        Ok(quota_view(real, limit, used))
    }

    /// The sum over distinct backing filesystems of every partition.
    fn partition_space(&self) -> FsResult<StatFs> {
        let mut seen = HashSet::new();
        let mut out = StatFs {
            namelen: 255,
            ..Default::default()
        };
        for p in &self.partitions {
            let v = backing::statvfs_fd(p.root.as_fd_ref())?;
            if !seen.insert(v.f_fsid) {
                continue;
            }
            let frsize = v.f_frsize.max(1);
            out.bsize = out.bsize.max(v.f_bsize as u32);
            out.frsize = 4096;
            out.blocks += v.f_blocks * frsize / 4096;
            out.bfree += v.f_bfree * frsize / 4096;
            out.bavail += v.f_bavail * frsize / 4096;
            out.files += v.f_files;
            out.ffree += v.f_ffree;
        }
        out.bsize = 4096;
        Ok(out)
    }
}

/// A quota shown as a filesystem: size = limit, free = limit − used, never
/// more than the partitions really have free.
fn quota_view(real: StatFs, limit: u64, used: u64) -> StatFs {
    // 1 KiB blocks so small limits show as they are set (`df -h`).
    const BLOCK: u64 = 1024;
    let real_free = real.bavail * real.frsize.max(1) as u64 / BLOCK;
    let free = (limit.saturating_sub(used) / BLOCK).min(real_free);
    StatFs {
        blocks: limit / BLOCK,
        bfree: free,
        bavail: free,
        bsize: BLOCK as u32,
        frsize: BLOCK as u32,
        ..real
    }
}

#[cfg(test)]
mod tests {
    use super::{StatFs, quota_view};

    #[test]
    fn quota_view_is_bounded_by_real_space() {
        let real = StatFs {
            blocks: 1000,
            bfree: 10,
            bavail: 10,
            frsize: 4096,
            bsize: 4096,
            ..Default::default()
        };
        // In 1 KiB blocks: 400 total; free bounded by the real 10 × 4 KiB.
        let v = quota_view(real, 4096 * 100, 4096 * 20);
        assert_eq!((v.blocks, v.bavail, v.frsize), (400, 40, 1024));
        let v = quota_view(
            StatFs {
                bavail: 1000,
                ..real
            },
            4096 * 100,
            4096 * 20,
        );
        assert_eq!((v.blocks, v.bfree, v.bavail), (400, 320, 320));
        let v = quota_view(
            StatFs {
                bavail: 1000,
                ..real
            },
            4096,
            4096 * 20,
        );
        assert_eq!(v.bavail, 0);
    }
}
