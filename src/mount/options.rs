//! `-o` mount options, as `mount -o` and fstab lines give them.
//!
//! Generic options become `MS_*` flags of the kernel mount; spoolfs's own
//! change the daemon; fstab-only ones (for mount(8) and systemd) are
//! accepted and ignored. Anything else is refused by name: an option that
//! is silently ignored is an option the operator believes is in effect.

use libc::c_ulong;

use crate::config::IoUringMode;

/// What `-o` asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct MountOptions {
    /// `MS_*` flags for mount(2).
    pub flags: c_ulong,
    /// `allow_other` / `noallow_other`; `None` keeps the configured value.
    pub allow_other: Option<bool>,
    /// `passthrough` / `nopassthrough`; `None` keeps the configured value.
    pub passthrough: Option<bool>,
    /// `xattrs` / `noxattrs`; `None` keeps the configured value.
    pub xattrs: Option<bool>,
    /// `open_handles` / `noopen_handles`; `None` keeps the configured value.
    pub open_handles: Option<bool>,
    /// `io_uring=auto|on|off`; `None` keeps the configured value.
    pub io_uring: Option<IoUringMode>,
    /// `handoff` / `nohandoff`; `None` keeps the configured value.
    pub handoff: Option<bool>,
    /// Mount even if the mount point already is one.
    pub overmount: bool,
}

/// Without options: a mail spool holds no device nodes.
const DEFAULT_FLAGS: c_ulong = libc::MS_NODEV;

const ATIME_MODES: c_ulong = libc::MS_NOATIME | libc::MS_RELATIME | libc::MS_STRICTATIME;

/// Generic options: (name, flag, sets it). The positive form clears it.
const KERNEL: &[(&str, c_ulong, bool)] = &[
    ("ro", libc::MS_RDONLY, true),
    ("rw", libc::MS_RDONLY, false),
    ("nosuid", libc::MS_NOSUID, true),
    ("suid", libc::MS_NOSUID, false),
    ("nodev", libc::MS_NODEV, true),
    ("dev", libc::MS_NODEV, false),
    ("noexec", libc::MS_NOEXEC, true),
    ("exec", libc::MS_NOEXEC, false),
    ("noatime", libc::MS_NOATIME, true),
    ("atime", libc::MS_NOATIME, false),
    ("nodiratime", libc::MS_NODIRATIME, true),
    ("diratime", libc::MS_NODIRATIME, false),
    ("relatime", libc::MS_RELATIME, true),
    ("norelatime", libc::MS_RELATIME, false),
    ("strictatime", libc::MS_STRICTATIME, true),
    ("nostrictatime", libc::MS_STRICTATIME, false),
    ("sync", libc::MS_SYNCHRONOUS, true),
    ("async", libc::MS_SYNCHRONOUS, false),
    ("dirsync", libc::MS_DIRSYNC, true),
];

/// For mount(8), systemd and fstab only; nothing for spoolfs to do.
const FSTAB_ONLY: &[&str] = &[
    "defaults", "auto", "noauto", "nofail", "_netdev", "user", "nouser", "users", "owner", "group",
];

/// The `--help` text for `-o`.
pub const HELP: &str = "\
Mount options, comma-separated, as in fstab. Accepted:
  generic (passed to the kernel mount): ro, rw, nosuid, suid, nodev (default), dev,
    noexec, exec, noatime, atime, nodiratime, diratime, relatime, norelatime,
    strictatime, nostrictatime, sync, async, dirsync;
  spoolfs: allow_other, noallow_other, passthrough, nopassthrough, xattrs, noxattrs,
    open_handles, noopen_handles (a descriptor per open, as [mount] open_handles),
    io_uring=auto|on|off (the transport, as [mount] io_uring),
    handoff, nohandoff (ring threads commit replies as SCHED_IDLE, as [mount] handoff),
    default_permissions (always on), overmount (mount even if the mount point
    already is a mount point);
  fstab only (ignored): defaults, auto, noauto, nofail, _netdev, user, user=...,
    nouser, users, owner, group, comment=..., helper=..., uhelper=..., x-*.
Any other option is refused.";

pub fn parse(options: Option<&str>) -> Result<MountOptions, String> {
    let mut parsed = MountOptions {
        flags: DEFAULT_FLAGS,
        allow_other: None,
        passthrough: None,
        xattrs: None,
        open_handles: None,
        io_uring: None,
        handoff: None,
        overmount: false,
    };
    for opt in options.unwrap_or("").split(',').map(str::trim) {
        if let Some(&(_, flag, set)) = KERNEL.iter().find(|(name, _, _)| *name == opt) {
            if set && flag & ATIME_MODES != 0 {
                parsed.flags &= !ATIME_MODES;
            }
            if set {
                parsed.flags |= flag;
            } else {
                parsed.flags &= !flag;
            }
            continue;
        }
        match opt {
            "allow_other" => parsed.allow_other = Some(true),
            "noallow_other" => parsed.allow_other = Some(false),
            "passthrough" => parsed.passthrough = Some(true),
            "nopassthrough" => parsed.passthrough = Some(false),
            "xattrs" => parsed.xattrs = Some(true),
            "noxattrs" => parsed.xattrs = Some(false),
            "open_handles" => parsed.open_handles = Some(true),
            "noopen_handles" => parsed.open_handles = Some(false),
            "handoff" => parsed.handoff = Some(true),
            "nohandoff" => parsed.handoff = Some(false),
            "overmount" => parsed.overmount = true,
            _ if opt.starts_with("io_uring=") => {
                let value = &opt["io_uring=".len()..];
                let mode = IoUringMode::parse(value).ok_or_else(|| {
                    format!(
                        "mount option {opt}: expected io_uring=auto, io_uring=on or io_uring=off"
                    )
                })?;
                parsed.io_uring = Some(mode);
            }
            "default_permissions" | "" => {}
            _ if FSTAB_ONLY.contains(&opt) => {}
            _ if ["x-", "comment=", "user=", "helper=", "uhelper="]
                .iter()
                .any(|prefix| opt.starts_with(prefix)) => {}
            _ => return Err(unknown(opt)),
        }
    }
    Ok(parsed)
}

fn unknown(opt: &str) -> String {
    let name = opt.split('=').next().unwrap_or(opt);
    format!("unknown mount option {name:?} (see `spoolfs mount --help` for the accepted ones)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_given_is_nodev_only() {
        let o = parse(None).unwrap();
        assert_eq!(o.flags, libc::MS_NODEV);
        assert_eq!(
            (o.allow_other, o.passthrough, o.overmount),
            (None, None, false)
        );
    }

    #[test]
    fn generic_options_become_flags_and_positive_forms_clear_them() {
        let o = parse(Some("ro,nosuid,noexec,noatime,nodiratime,sync,dirsync")).unwrap();
        for flag in [
            libc::MS_RDONLY,
            libc::MS_NOSUID,
            libc::MS_NOEXEC,
            libc::MS_NODEV,
            libc::MS_NOATIME,
            libc::MS_NODIRATIME,
            libc::MS_SYNCHRONOUS,
            libc::MS_DIRSYNC,
        ] {
            assert_ne!(o.flags & flag, 0, "flag {flag:#x}");
        }
        let o = parse(Some("ro,rw,dev,noatime,strictatime")).unwrap();
        assert_eq!(o.flags, libc::MS_STRICTATIME);
    }

    #[test]
    fn spoolfs_and_fstab_options_are_kept_or_ignored() {
        let o = parse(Some(
            "defaults,allow_other,nopassthrough,noxattrs,nofail,_netdev,x-systemd.requires=a.mount,comment=x,user=mail,overmount,,",
        ))
        .unwrap();
        assert_eq!(o.allow_other, Some(true));
        assert_eq!(o.passthrough, Some(false));
        assert_eq!(o.xattrs, Some(false));
        assert!(o.overmount);
        assert_eq!(o.flags, libc::MS_NODEV);
        assert_eq!(o.io_uring, None);
        assert_eq!(o.open_handles, None);
        let o = parse(Some("io_uring=off,open_handles")).unwrap();
        assert_eq!(o.io_uring, Some(IoUringMode::Off));
        assert_eq!(o.open_handles, Some(true));
        assert_eq!(
            parse(Some("noopen_handles")).unwrap().open_handles,
            Some(false)
        );
        let e = parse(Some("io_uring=yes")).unwrap_err();
        assert!(
            e.contains("io_uring=yes") && e.contains("io_uring=auto"),
            "{e}"
        );
        assert_eq!(
            parse(Some("noallow_other")).unwrap().allow_other,
            Some(false)
        );
    }

    #[test]
    fn unknown_options_are_refused_by_name() {
        let e = parse(Some("allow_other,bogus")).unwrap_err();
        assert!(e.contains("\"bogus\""), "{e}");
        let e = parse(Some("uid=1000")).unwrap_err();
        assert!(e.contains("\"uid\""), "{e}");
    }
}
