//! Directories a start-up creates, removed again if the start fails, so a
//! failed `spoolfs mount` leaves nothing behind.

use std::path::{Path, PathBuf};

#[derive(Default)]
pub struct Created(Vec<PathBuf>);

impl Created {
    /// `mkdir -p` with `mode`, remembering each directory it made.
    pub fn dir_all(&mut self, path: &Path, mode: u32) -> Result<(), String> {
        let missing: Vec<&Path> = path
            .ancestors()
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| !p.exists())
            .collect();
        for dir in missing.into_iter().rev() {
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), mode)
                .create(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            self.0.push(dir.to_path_buf());
        }
        Ok(())
    }

    /// The start succeeded: what was created stays.
    pub fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        // Newest first; `remove_dir` leaves anything that is not empty.
        for dir in self.0.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_it_made_unless_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let deep = tmp.path().join("a/b/c");
        let mut created = Created::default();
        created.dir_all(&deep, 0o755).unwrap();
        assert!(deep.is_dir());
        drop(created);
        assert!(!tmp.path().join("a").exists(), "a failed start left a/");
        let mut created = Created::default();
        created.dir_all(&deep, 0o755).unwrap();
        created.keep();
        assert!(deep.is_dir());
    }
}
