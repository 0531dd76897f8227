//! Checks on the mount point before anything is locked, created or scanned.

use std::path::{Path, PathBuf};

/// Exists and is a directory (the daemon creates nothing there).
pub fn check_usable(mountpoint: &Path) -> Result<(), String> {
    let shown = mountpoint.display();
    match std::fs::metadata(mountpoint) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("mount point {shown} is not a directory")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(format!("mount point {shown} does not exist"))
        }
        // A dead daemon's connection answers ENOTCONN, or ECONNABORTED when
        // the kernel aborted it with requests still in flight.
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTCONN | libc::ECONNABORTED)) => {
            Err(format!(
                "mount point {shown} is a dead FUSE mount (its daemon is gone): \
             clear it with `fusermount3 -u {shown}` first"
            ))
        }
        Err(e) => Err(format!("mount point {shown}: {e}")),
    }
}

/// Refuses a mount point that already is one (of spoolfs or anything
/// else) unless `overmount`: a second mount on top hides the first one's
/// files from new opens while old ones keep writing below.
pub fn check_not_mounted(mountpoint: &Path, overmount: bool) -> Result<(), String> {
    let canonical = std::fs::canonicalize(mountpoint)
        .map_err(|e| format!("mount point {}: {e}", mountpoint.display()))?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("/proc/self/mountinfo: {e}"))?;
    let Some(found) = mounted_at(&mountinfo, &canonical) else {
        return Ok(());
    };
    if overmount {
        log::warn!(
            "mounting over {} ({found}) as asked by -o overmount",
            canonical.display()
        );
        return Ok(());
    }
    Err(format!(
        "mount point {} is already mounted ({found}); unmount it first, \
         or pass -o overmount to mount on top of it",
        canonical.display()
    ))
}

/// "fuse.spoolfs from spoolfs" for the topmost mount at `path`, from the
/// text of `/proc/self/mountinfo`.
pub fn mounted_at(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let dash = fields.iter().position(|f| *f == "-")?;
        let (fstype, source) = (fields.get(dash + 1)?, fields.get(dash + 2)?);
        (PathBuf::from(unescape(fields.get(4)?)) == path)
            .then(|| format!("{} from {}", unescape(fstype), unescape(source)))
    })
}

/// Whether the topmost mount at `path` is a spoolfs mount, from the text
/// of `/proc/self/mountinfo`; else what is mounted there, if anything.
pub fn spoolfs_at(mountinfo: &str, path: &Path) -> Result<(), Option<String>> {
    match mounted_at(mountinfo, path) {
        Some(found) if found.starts_with("fuse.spoolfs from ") => Ok(()),
        other => Err(other),
    }
}

/// The device number ("major:minor") of the topmost mount at `path`, from
/// the text of `/proc/self/mountinfo` (never a `stat` on the mount, which
/// would ask the very daemon that is starting).
pub fn device_at(mountinfo: &str, path: &Path) -> Option<String> {
    mountinfo.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        (PathBuf::from(unescape(fields.get(4)?)) == path).then(|| fields[2].to_string())
    })
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push((d[0] - b'0') << 6 | (d[1] - b'0') << 3 | (d[2] - b'0'));
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:40 / /tmp/my\\040spool rw,nodev - fuse.spoolfs spoolfs rw,user_id=0
41 40 0:41 / /tmp/my\\040spool rw - tmpfs tmpfs rw
";

    #[test]
    fn the_topmost_mount_names_its_device() {
        assert_eq!(
            device_at(INFO, Path::new("/tmp/my spool")).as_deref(),
            Some("0:41")
        );
        assert_eq!(device_at(INFO, Path::new("/")).as_deref(), Some("8:1"));
        assert_eq!(device_at(INFO, Path::new("/nowhere")), None);
    }

    #[test]
    fn only_a_spoolfs_mount_on_top_is_one() {
        let under = INFO.replace("41 40 0:41", "#");
        let under: String = under
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(spoolfs_at(&under, Path::new("/tmp/my spool")), Ok(()));
        assert_eq!(
            spoolfs_at(INFO, Path::new("/tmp/my spool")),
            Err(Some("tmpfs from tmpfs".into()))
        );
        assert_eq!(spoolfs_at(INFO, Path::new("/nowhere")), Err(None));
    }

    #[test]
    fn finds_the_topmost_mount_at_a_path() {
        assert_eq!(
            mounted_at(INFO, Path::new("/tmp/my spool")).as_deref(),
            Some("tmpfs from tmpfs")
        );
        assert_eq!(
            mounted_at(INFO, Path::new("/")).as_deref(),
            Some("ext4 from /dev/sda1")
        );
        assert_eq!(mounted_at(INFO, Path::new("/tmp")), None);
    }

    #[test]
    fn missing_and_plain_file_mount_points_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let e = check_usable(&tmp.path().join("absent")).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        let file = tmp.path().join("f");
        std::fs::write(&file, b"").unwrap();
        assert!(check_usable(&file).unwrap_err().contains("not a directory"));
        check_usable(tmp.path()).unwrap();
        check_not_mounted(tmp.path(), false).unwrap();
    }
}
