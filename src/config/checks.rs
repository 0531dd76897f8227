//! Filesystem checks, the only part of the configuration that touches disks.

use super::*;

impl Config {
    /// The canonical path of an existing partition directory.
    pub(super) fn partition_root(
        &self,
        partition: &PartitionConfig,
    ) -> Result<PathBuf, ConfigError> {
        let path = &partition.path;
        let problem = match fs::metadata(path) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some(format!("{} is not a directory", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                Some(format!("{} does not exist", path.display()))
            }
            Err(e) => Some(format!("{} cannot be accessed: {e}", path.display())),
        };
        let canonical = match problem {
            None => fs::canonicalize(path)
                .map_err(|e| format!("{} cannot be resolved: {e}", path.display())),
            Some(problem) => Err(problem),
        };
        canonical.map_err(|problem| self.partition_error(partition, problem))
    }

    pub(super) fn partition_error(
        &self,
        partition: &PartitionConfig,
        problem: String,
    ) -> ConfigError {
        ConfigError {
            file: self.source.clone(),
            key: format!("partitions.{}", partition.name),
            problem,
        }
    }

    /// Overlapping partitions would see each other's files twice.
    pub(super) fn check_partitions_disjoint(&self, roots: &[PathBuf]) -> Result<(), ConfigError> {
        for (later, later_root) in roots.iter().enumerate() {
            for (earlier, earlier_root) in roots[..later].iter().enumerate() {
                if let Some(relation) = overlap(later_root, earlier_root) {
                    let problem = format!(
                        "{} {relation} partition {:?} ({})",
                        later_root.display(),
                        self.partitions[earlier].name,
                        earlier_root.display()
                    );
                    return Err(self.partition_error(&self.partitions[later], problem));
                }
            }
        }
        Ok(())
    }

    pub(super) fn check_partitions_clear_of(
        &self,
        roots: &[PathBuf],
        mountpoint: &Path,
    ) -> Result<(), ConfigError> {
        for (partition, root) in self.partitions.iter().zip(roots) {
            if let Some(relation) = overlap(root, mountpoint) {
                let problem = format!(
                    "{} {relation} the mount point {}",
                    root.display(),
                    mountpoint.display()
                );
                return Err(self.partition_error(partition, problem));
            }
        }
        Ok(())
    }

    /// Only inside is a problem: a state dir *containing* the mount point
    /// (e.g. `/var` for `/var/spool/cyrus`) is harmless.
    pub(super) fn check_state_dir_clear_of(&self, mountpoint: &Path) -> Result<(), ConfigError> {
        let state_dir = resolve(&self.control.state_dir);
        match overlap(&state_dir, mountpoint) {
            Some(relation) if relation != Overlap::Contains => Err(ConfigError {
                file: self.source.clone(),
                key: "control.state_dir".to_string(),
                problem: format!(
                    "{} {relation} the mount point {}",
                    state_dir.display(),
                    mountpoint.display()
                ),
            }),
            _ => Ok(()),
        }
    }
}

/// How one directory overlaps another.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Overlap {
    Same,
    Inside,
    Contains,
}

impl fmt::Display for Overlap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Overlap::Same => "is the same directory as",
            Overlap::Inside => "is inside",
            Overlap::Contains => "contains",
        })
    }
}

/// How `path` relates to `other` if they overlap. Both must be canonical
/// (or at least absolute); `starts_with` compares whole components.
pub(super) fn overlap(path: &Path, other: &Path) -> Option<Overlap> {
    if path == other {
        Some(Overlap::Same)
    } else if path.starts_with(other) {
        Some(Overlap::Inside)
    } else if other.starts_with(path) {
        Some(Overlap::Contains)
    } else {
        None
    }
}

/// Canonical form if the path exists, else at least absolute, so that
/// comparisons with canonical partition roots still mean something.
pub(super) fn resolve(path: &Path) -> PathBuf {
    fs::canonicalize(path)
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}
