//! Which partition is in trouble, for the operator's log.
//!
//! A failed backing call reaches the client as `EIO`, `EROFS` or `ENOSPC`
//! without saying where it happened. When one of those comes back, the
//! partitions are probed (at most once a second) and every change of a
//! partition's state is logged once with its name and path: read-only,
//! failing I/O, full, and healthy again.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use log::{info, warn};

use super::{Partition, SpoolFs};
use crate::backing::{self, AsFdRef};
use crate::error::FsError;

const PROBE_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    Healthy,
    ReadOnly,
    Full,
    Failing(i32),
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Health::Healthy => write!(f, "healthy"),
            Health::ReadOnly => write!(f, "read-only (EROFS)"),
            Health::Full => write!(f, "full (ENOSPC)"),
            Health::Failing(e) => {
                write!(f, "failing: {}", std::io::Error::from_raw_os_error(*e))
            }
        }
    }
}

pub struct HealthLog {
    last_probe: Mutex<Option<Instant>>,
    states: Mutex<Vec<Health>>,
}

impl HealthLog {
    pub fn new(partitions: usize) -> HealthLog {
        HealthLog {
            last_probe: Mutex::new(None),
            states: Mutex::new(vec![Health::Healthy; partitions]),
        }
    }

    /// Records probe results; returns the partitions whose state changed.
    fn update(&self, now: Vec<Health>) -> Vec<(usize, Health)> {
        let mut states = self.states.lock().unwrap();
        let changed = now
            .iter()
            .enumerate()
            .filter(|(i, h)| states[*i] != **h)
            .map(|(i, h)| (i, *h))
            .collect();
        *states = now;
        changed
    }

    /// Whether a probe is due (and claims it).
    fn due(&self) -> bool {
        let mut last = self.last_probe.lock().unwrap();
        if last.is_some_and(|t| t.elapsed() < PROBE_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// The state of one partition: its filesystem's flags and free space, and
/// whether it still takes an `fsync` of its root directory (a failed or
/// shut-down device still answers from its caches, but not to that).
fn probe(p: &Partition) -> Health {
    let failing = |e: std::io::Error| Health::Failing(e.raw_os_error().unwrap_or(libc::EIO));
    let vfs = match backing::statvfs_fd(p.root.as_fd_ref()) {
        Ok(v) => v,
        Err(e) => return failing(e),
    };
    if vfs.f_flag & libc::ST_RDONLY != 0 {
        return Health::ReadOnly;
    }
    if let Err(e) = backing::sync_fd(p.handle_root.as_fd_ref(), false) {
        return failing(e);
    }
    if vfs.f_bavail == 0 {
        return Health::Full;
    }
    Health::Healthy
}

/// Errors that may mean a partition is in trouble.
pub fn is_partition_errno(errno: i32) -> bool {
    matches!(errno, libc::EIO | libc::EROFS | libc::ENOSPC)
}

impl SpoolFs {
    /// An error of a backing call on partition `part`: when its errno says
    /// the partition itself is in trouble, the error names the partition.
    pub(super) fn on_partition(&self, part: usize, e: FsError) -> FsError {
        match e {
            FsError::Io(source) if is_partition_errno(source.raw_os_error().unwrap_or(0)) => {
                let name = self.partitions[part].name.clone();
                FsError::Partition { name, source }
            }
            e => e,
        }
    }

    /// Called with every error a request ends in: names the partition in
    /// trouble in the log when the error suggests one.
    pub fn note_error(&self, op: &str, errno: i32) {
        if !is_partition_errno(errno) || !self.health.due() {
            return;
        }
        let now = self.partitions.iter().map(probe).collect();
        for (i, h) in self.health.update(now) {
            crate::metrics::global().partition_health(i, h == Health::Healthy);
            let p = &self.partitions[i];
            let path = self.config.partitions[i].path.display();
            if h == Health::Healthy {
                info!("partition {} ({path}) is healthy again", p.name);
            } else {
                warn!(
                    "partition {} ({path}) is {h} (seen after a failed {op})",
                    p.name
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Health, HealthLog};

    #[test]
    fn only_changes_are_reported() {
        let h = HealthLog::new(2);
        assert!(h.update(vec![Health::Healthy, Health::Healthy]).is_empty());
        assert_eq!(
            h.update(vec![Health::ReadOnly, Health::Healthy]),
            vec![(0, Health::ReadOnly)]
        );
        assert!(h.update(vec![Health::ReadOnly, Health::Healthy]).is_empty());
        assert_eq!(
            h.update(vec![Health::Healthy, Health::Failing(libc::EIO)]),
            vec![(0, Health::Healthy), (1, Health::Failing(libc::EIO))]
        );
    }

    #[test]
    fn probes_are_rate_limited() {
        let h = HealthLog::new(1);
        assert!(h.due());
        assert!(!h.due());
    }

    #[test]
    fn states_read_well_in_a_log_line() {
        assert_eq!(Health::ReadOnly.to_string(), "read-only (EROFS)");
        assert!(
            Health::Failing(libc::EIO)
                .to_string()
                .contains("Input/output error")
        );
    }
}
