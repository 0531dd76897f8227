//! Where the CLI finds a mount's control socket without asking the mount:
//! `/run/spoolfs/<major>:<minor>`, a symlink to the socket, named after the
//! mount's device number (what `stat` on any path inside it reports).
//!
//! The virtual xattr on the mount root says the same, but a mount with
//! `[mount] xattrs = false` answers no xattr at all, and a lookup here costs
//! the daemon no request.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

const DIR: &str = "/run/spoolfs";

/// The entry for a mount with device number `device` ("0:57", as in
/// `/proc/self/mountinfo`).
fn entry(device: &str) -> PathBuf {
    Path::new(DIR).join(device)
}

/// Records `socket` for the mount with device number `device`, replacing
/// an entry a crashed daemon left for a device number now reused. Returns
/// the entry, for [`unregister`].
pub fn register(device: &str, socket: &Path) -> io::Result<PathBuf> {
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o755)
        .create(DIR)?;
    let path = entry(device);
    let fresh = path.with_extension("new");
    let _ = std::fs::remove_file(&fresh);
    std::os::unix::fs::symlink(socket, &fresh)?;
    std::fs::rename(&fresh, &path)?;
    Ok(path)
}

/// Removes the entry if it still names `socket` (a newer daemon may have
/// replaced it).
pub fn unregister(path: &Path, socket: &Path) {
    if std::fs::read_link(path).is_ok_and(|target| target == socket) {
        let _ = std::fs::remove_file(path);
    }
}

/// The socket recorded for the mount whose root is `root`, if any.
pub fn lookup(root: &Path) -> Option<PathBuf> {
    let dev = std::fs::metadata(root).ok()?.dev();
    let device = format!("{}:{}", libc::major(dev), libc::minor(dev));
    std::fs::read_link(entry(&device)).ok()
}
