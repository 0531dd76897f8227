//! Permissions and escapes on a real mount: unprivileged users,
//! supplementary groups, and symlinks planted in a backing directory.
//!
//! Split from the former `tests/foundation.rs`; helpers in
//! `tests/common/posix.rs`.

mod common;

use std::ffi::{CString, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::posix::*;
use common::*;
// ---------------------------------------------------------------------------
// permissions

#[test]
fn permissions_as_unprivileged_users() {
    let m = routed();
    open_to_all(&m);
    let p = |s: &str| m.path(s);
    fs::create_dir(p("pub")).unwrap();
    fs::set_permissions(p("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    fs::write(p("secret"), b"root only").unwrap();
    fs::set_permissions(p("secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(p("pub/rootfile"), b"r").unwrap();
    fs::set_permissions(p("pub/rootfile"), fs::Permissions::from_mode(0o644)).unwrap();

    let (pub_, secret, root) = (p("pub"), p("secret"), m.mnt.clone());
    as_user_ok(65534, 65534, &[], move || {
        unsafe { libc::umask(0o027) };
        let f = pub_.join("by-nobody");
        let mut h = ctx(
            "create",
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o666)
                .open(&f),
        )?;
        ctx("write", h.write_all(b"mine"))?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (65534, 65534, 0o640),
            || {
                format!(
                    "new file: uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        ctx("mkdir", fs::create_dir(pub_.join("dir-by-nobody")))?;
        let md = ctx("stat dir", fs::metadata(pub_.join("dir-by-nobody")))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (65534, 65534, 0o750),
            || {
                format!(
                    "new dir: uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        ctx(
            "symlink",
            std::os::unix::fs::symlink("by-nobody", pub_.join("link-by-nobody")),
        )?;
        let md = ctx(
            "lstat link",
            fs::symlink_metadata(pub_.join("link-by-nobody")),
        )?;
        check((md.uid(), md.gid()) == (65534, 65534), || {
            format!("symlink owned by {}:{}", md.uid(), md.gid())
        })?;
        ctx(
            "mkfifo",
            ret(unsafe { libc::mkfifo(cs(&pub_.join("fifo-by-nobody")).as_ptr(), 0o666) }),
        )?;
        let md = ctx(
            "lstat fifo",
            fs::symlink_metadata(pub_.join("fifo-by-nobody")),
        )?;
        check((md.uid(), md.mode() & 0o777) == (65534, 0o640), || {
            format!("fifo {} {:o}", md.uid(), md.mode())
        })?;
        // Root's files: EACCES where ext4 says so.
        want_errno("read 0600 root file", File::open(&secret), libc::EACCES)?;
        want_errno(
            "write 0600 root file",
            OpenOptions::new().write(true).open(&secret),
            libc::EACCES,
        )?;
        want_errno(
            "write 0644 root file",
            OpenOptions::new().write(true).open(pub_.join("rootfile")),
            libc::EACCES,
        )?;
        ctx("read 0644 root file", fs::read(pub_.join("rootfile")))?;
        want_errno(
            "access W_OK",
            ret(unsafe { libc::access(cs(&secret).as_ptr(), libc::W_OK) }),
            libc::EACCES,
        )?;
        want_errno(
            "create in root's 0755 dir",
            fs::write(root.join("nope"), b""),
            libc::EACCES,
        )?;
        want_errno(
            "mkdir in root's 0755 dir",
            fs::create_dir(root.join("nope")),
            libc::EACCES,
        )?;
        want_errno(
            "unlink root's file in root's dir",
            fs::remove_file(&secret),
            libc::EACCES,
        )?;
        want_errno(
            "chmod root's file",
            fs::set_permissions(pub_.join("rootfile"), fs::Permissions::from_mode(0o777)),
            libc::EPERM,
        )?;
        want_errno(
            "chown to root",
            std::os::unix::fs::chown(&f, Some(0), None),
            libc::EPERM,
        )?;
        want_errno(
            "chown to a group not mine",
            std::os::unix::fs::chown(&f, None, Some(0)),
            libc::EPERM,
        )?;
        let t = [libc::timespec {
            tv_sec: 5,
            tv_nsec: 0,
        }; 2];
        want_errno(
            "utimens on root's file",
            ret(unsafe {
                libc::utimensat(
                    libc::AT_FDCWD,
                    cs(&pub_.join("rootfile")).as_ptr(),
                    t.as_ptr(),
                    0,
                )
            }),
            libc::EPERM,
        )?;
        want_errno(
            "setxattr on root's file",
            setxattr(&pub_.join("rootfile"), "user.x", b"1", 0),
            libc::EACCES,
        )?;
        ctx("setxattr on own file", setxattr(&f, "user.x", b"1", 0))?;
        ctx(
            "chmod own file",
            fs::set_permissions(&f, fs::Permissions::from_mode(0o600)),
        )?;
        ctx(
            "utimens own file",
            ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&f).as_ptr(), t.as_ptr(), 0) }),
        )?;
        ctx("rename own file", fs::rename(&f, pub_.join("renamed")))?;
        ctx("unlink own file", fs::remove_file(pub_.join("renamed")))?;
        Ok(())
    });
    for (rel, want) in [
        ("pub/dir-by-nobody", (65534, 65534, 0o750)),
        ("pub/fifo-by-nobody", (65534, 65534, 0o640)),
    ] {
        let md = fs::symlink_metadata(m.backing("fast", rel)).unwrap();
        assert_eq!(
            (md.uid(), md.gid(), md.mode() & 0o7777),
            want,
            "backing {rel}"
        );
    }
    assert_eq!(fs::read(p("secret")).unwrap(), b"root only");

    // A made-up user and group with no passwd entry.
    let pub2 = p("pub");
    as_user_ok(4242, 4343, &[], move || {
        unsafe { libc::umask(0o002) };
        let f = pub2.join("by-4242");
        ctx("write", fs::write(&f, b"x"))?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(
            (md.uid(), md.gid(), md.mode() & 0o7777) == (4242, 4343, 0o664),
            || {
                format!(
                    "uid {} gid {} mode {:o}",
                    md.uid(),
                    md.gid(),
                    md.mode() & 0o7777
                )
            },
        )?;
        // Nobody's private directory is closed to us.
        want_errno(
            "list nobody's 0750 dir",
            fs::read_dir(pub2.join("dir-by-nobody")),
            libc::EACCES,
        )?;
        want_errno(
            "create in nobody's 0750 dir",
            fs::write(pub2.join("dir-by-nobody/x"), b""),
            libc::EACCES,
        )?;
        Ok(())
    });
    let md = fs::metadata(m.backing("fast", "pub/by-4242")).unwrap();
    assert_eq!((md.uid(), md.gid()), (4242, 4343));

    // A set-group-ID directory passes its group on, and its bit to subdirs.
    fs::create_dir(p("sgid")).unwrap();
    std::os::unix::fs::chown(p("sgid"), None, Some(5555)).unwrap();
    fs::set_permissions(p("sgid"), fs::Permissions::from_mode(0o2777)).unwrap();
    let sg = p("sgid");
    as_user_ok(4242, 4343, &[], move || {
        unsafe { libc::umask(0) };
        ctx("create", fs::write(sg.join("f"), b"x"))?;
        ctx("mkdir", fs::create_dir(sg.join("d")))?;
        let f = ctx("stat f", fs::metadata(sg.join("f")))?;
        let d = ctx("stat d", fs::metadata(sg.join("d")))?;
        check((f.uid(), f.gid()) == (4242, 5555), || {
            format!("file in sgid dir: {}:{}", f.uid(), f.gid())
        })?;
        check(
            (d.uid(), d.gid()) == (4242, 5555) && d.mode() & 0o2000 != 0,
            || {
                format!(
                    "dir in sgid dir: {}:{} mode {:o}",
                    d.uid(),
                    d.gid(),
                    d.mode()
                )
            },
        )
    });
    // Writing to a setuid/setgid file as another user clears the bits.
    fs::write(p("pub/suid"), b"0").unwrap();
    std::os::unix::fs::chown(p("pub/suid"), Some(4242), Some(4343)).unwrap();
    fs::set_permissions(p("pub/suid"), fs::Permissions::from_mode(0o6777)).unwrap();
    let su = p("pub/suid");
    as_user_ok(5000, 5000, &[], move || {
        ctx("write", fs::write(&su, b"changed"))
    });
    assert_eq!(fs::metadata(p("pub/suid")).unwrap().mode() & 0o7777, 0o777);
    assert_eq!(
        fs::metadata(m.backing("fast", "pub/suid")).unwrap().mode() & 0o7777,
        0o777
    );
    // So does a truncate alone; set-group-ID without group execute is
    // mandatory locking's mark, not a privilege, and stays.
    fs::set_permissions(p("pub/suid"), fs::Permissions::from_mode(0o6766)).unwrap();
    let su = p("pub/suid");
    as_user_ok(5000, 5000, &[], move || {
        let f = ctx("open", fs::OpenOptions::new().write(true).open(&su))?;
        ctx("ftruncate", f.set_len(2))
    });
    assert_eq!(
        fs::metadata(m.backing("fast", "pub/suid")).unwrap().mode() & 0o7777,
        0o2766
    );
}

#[test]
fn supplementary_group_chown() {
    let m = routed();
    open_to_all(&m);
    fs::create_dir(m.path("pub")).unwrap();
    fs::set_permissions(m.path("pub"), fs::Permissions::from_mode(0o777)).unwrap();
    let dir = m.path("pub");
    as_user_ok(4242, 4343, &[4343, 5555, 6000], move || {
        let f = dir.join("f");
        ctx("create", fs::write(&f, b"x"))?;
        ctx(
            "chgrp to a supplementary group",
            std::os::unix::fs::chown(&f, None, Some(5555)),
        )?;
        let md = ctx("stat", fs::metadata(&f))?;
        check(md.gid() == 5555, || format!("gid {} after chgrp", md.gid()))?;
        ctx(
            "chown to self, other supplementary group",
            std::os::unix::fs::chown(&f, Some(4242), Some(6000)),
        )?;
        want_errno(
            "chgrp to a group not mine",
            std::os::unix::fs::chown(&f, None, Some(7777)),
            libc::EPERM,
        )?;
        // The group bits work for a member of a supplementary group.
        ctx(
            "chmod 0060",
            fs::set_permissions(&f, fs::Permissions::from_mode(0o060)),
        )?;
        // The owner class wins over the group class, as on ext4.
        want_errno("owner read with 0060", fs::read(&f), libc::EACCES)?;
        Ok(())
    });
    // Another member of the file's group (a supplementary group) may read.
    let g = m.path("pub/f");
    as_user_ok(4245, 4245, &[6000], move || {
        ctx("read via supplementary group", fs::read(&g)).map(drop)
    });
    let md = fs::metadata(m.backing("fast", "pub/f")).unwrap();
    assert_eq!((md.uid(), md.gid(), md.mode() & 0o777), (4242, 6000, 0o060));
    // Someone outside those groups is refused by the group bits.
    let f = m.path("pub/f");
    as_user_ok(4244, 4244, &[5555], move || {
        want_errno("read as non-member", fs::read(&f), libc::EACCES)
    });
}

// ---------------------------------------------------------------------------
// escapes

#[test]
fn planted_symlinks_are_returned_not_followed() {
    let m = routed();
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    fs::write(outside.path().join("canary"), b"outside").unwrap();
    let b = |s: &str| m.backing("fast", s);
    fs::create_dir(b("box")).unwrap();
    std::os::unix::fs::symlink("/etc", b("box/etc")).unwrap();
    std::os::unix::fs::symlink("../../", b("box/up")).unwrap();
    std::os::unix::fs::symlink(outside.path(), b("box/out")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("canary"), b("box/canary")).unwrap();

    for (name, target) in [
        ("etc", PathBuf::from("/etc")),
        ("up", PathBuf::from("../../")),
        ("out", outside.path().into()),
    ] {
        let md = fs::symlink_metadata(m.path("box").join(name)).unwrap();
        assert!(
            md.file_type().is_symlink(),
            "{name} is not shown as a symlink"
        );
        assert_eq!(fs::read_link(m.path("box").join(name)).unwrap(), target);
    }
    // Listing shows them as symlinks.
    for e in fs::read_dir(m.path("box")).unwrap() {
        assert!(e.unwrap().file_type().unwrap().is_symlink());
    }
    // Following happens in the caller's namespace, like any symlink.
    assert_eq!(
        fs::read(m.path("box/etc/hostname")).unwrap(),
        fs::read("/etc/hostname").unwrap()
    );
    assert_eq!(fs::read(m.path("box/canary")).unwrap(), b"outside");
    // `../../` from box resolves in the mount: box/.. is the root, root/.. is
    // the mount point's parent (the test's temp dir) — not a partition path.
    let up = fs::canonicalize(m.path("box/up")).unwrap();
    assert_eq!(up, fs::canonicalize(m.tmp.path()).unwrap());

    // Operations on the symlink itself never reach its target.
    fs::set_permissions(
        outside.path().join("canary"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::os::unix::fs::lchown(m.path("box/canary"), Some(4242), Some(4242)).unwrap();
    let cmd = fs::metadata(outside.path().join("canary")).unwrap();
    assert_eq!(
        (cmd.uid(), cmd.gid()),
        (0, 0),
        "lchown through the mount changed the target"
    );
    fs::remove_file(m.path("box/canary")).unwrap();
    assert!(outside.path().join("canary").is_file());
    fs::rename(m.path("box/out"), m.path("box/out2")).unwrap();
    assert!(outside.path().is_dir());
    assert_eq!(names(outside.path()), sorted(&["canary"]));
    // truncate through the daemon of a symlink's node is refused, not followed:
    // the kernel follows `truncate(path)` itself, so use the inode directly.
    let lpath = m.path("box/etc");
    let fd = OpenOptions::new()
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .read(true)
        .open(&lpath)
        .unwrap();
    let n = CString::new("user.x").unwrap();
    let proc = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap();
    let r = unsafe { libc::lsetxattr(proc.as_ptr(), n.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(fs::metadata("/etc").unwrap().uid(), 0);
}

#[test]
fn metadata_changes_on_planted_symlinks_stay_on_the_link() {
    let m = routed();
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    let victim = outside.path().join("victim");
    fs::write(&victim, b"v").unwrap();
    let t0 = [libc::timespec {
        tv_sec: 1_000,
        tv_nsec: 0,
    }; 2];
    ret(unsafe { libc::utimensat(libc::AT_FDCWD, cs(&victim).as_ptr(), t0.as_ptr(), 0) }).unwrap();
    std::os::unix::fs::symlink(&victim, m.backing("fast", "planted")).unwrap();
    let link = m.path("planted");

    // lutimes: the link's times change, the target's do not.
    let t = [libc::timespec {
        tv_sec: 2_000_000,
        tv_nsec: 42,
    }; 2];
    ret(unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            cs(&link).as_ptr(),
            t.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
    .unwrap();
    let lmd = fs::symlink_metadata(&link).unwrap();
    assert_eq!((lmd.mtime(), lmd.mtime_nsec()), (2_000_000, 42));
    let vmd = fs::metadata(&victim).unwrap();
    assert_eq!(
        vmd.mtime(),
        1_000,
        "lutimes through the mount changed a file outside the partitions"
    );
    // lchown likewise.
    std::os::unix::fs::lchown(&link, Some(4242), Some(4242)).unwrap();
    let vmd = fs::metadata(&victim).unwrap();
    assert_eq!((vmd.uid(), vmd.gid()), (0, 0));
    // xattrs on the link: none listed, none settable (as on ext4), and the
    // target untouched.
    let mut buf = [0u8; 256];
    let n = unsafe { libc::llistxattr(cs(&link).as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(
        n >= 0,
        "llistxattr on a symlink: {}",
        io::Error::last_os_error()
    );
    assert!(!buf[..n as usize].windows(5).any(|w| w == b"user."));
    let name = CString::new("user.evil").unwrap();
    let r = unsafe {
        libc::lsetxattr(
            cs(&link).as_ptr(),
            name.as_ptr(),
            b"1".as_ptr().cast(),
            1,
            0,
        )
    };
    assert_eq!((r, last_errno()), (-1, libc::EPERM));
    assert_eq!(errno(getxattr(&victim, "user.evil", 8)), libc::ENODATA);
    // On a FIFO the daemon made: an empty list, as on ext4.
    ret(unsafe { libc::mkfifo(cs(&m.path("fifo")).as_ptr(), 0o644) }).unwrap();
    let n = unsafe {
        libc::llistxattr(
            cs(&m.path("fifo")).as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    assert!(
        n >= 0,
        "llistxattr on a fifo: {}",
        io::Error::last_os_error()
    );
    assert_eq!(fs::read(&victim).unwrap(), b"v");
}

#[test]
fn planted_symlink_parents_never_lead_outside() {
    let routes = format!("{ROUTES}[[route]]\nmatch = \"vault/**\"\npartition = \"slow\"\n");
    let m = Spec::new(&["fast", "slow"])
        .extra(&routes)
        .mount_with_top(TOP);
    let outside = tempfile::Builder::new()
        .prefix("spoolfs-outside")
        .tempdir()
        .unwrap();
    let out = outside.path();
    // `archive` is a real directory on fast, but on slow (where routing
    // sends its new entries) a symlink to a directory outside.
    fs::create_dir(m.backing("fast", "archive")).unwrap();
    fs::write(m.backing("fast", "archive/existing"), b"e").unwrap();
    std::os::unix::fs::symlink(out, m.backing("slow", "archive")).unwrap();
    // Deeper: `vault` is real on both, `vault/box` real on fast and a
    // planted symlink on slow.
    fs::create_dir_all(m.backing("fast", "vault/box")).unwrap();
    fs::write(m.backing("fast", "vault/box/existing"), b"e").unwrap();
    fs::create_dir_all(m.backing("slow", "vault")).unwrap();
    std::os::unix::fs::symlink(out, m.backing("slow", "vault/box")).unwrap();

    assert!(m.path("archive").is_dir());
    assert_eq!(names(&m.path("archive")), sorted(&["existing"]));
    assert!(m.path("vault/box").is_dir());
    assert_eq!(names(&m.path("vault/box")), sorted(&["existing"]));
    type Op = Box<dyn Fn(&Path) -> io::Result<()>>;
    let attempts: Vec<(&str, Op)> = vec![
        ("create", Box::new(|p: &Path| fs::write(p, b"escaped"))),
        ("mkdir", Box::new(|p: &Path| fs::create_dir(p))),
        (
            "symlink",
            Box::new(|p: &Path| std::os::unix::fs::symlink("x", p)),
        ),
        (
            "mkfifo",
            Box::new(|p: &Path| ret(unsafe { libc::mkfifo(cs(p).as_ptr(), 0o644) }).map(drop)),
        ),
        (
            "link",
            Box::new(|p: &Path| fs::hard_link(p.parent().unwrap().join("existing"), p)),
        ),
        (
            "rename",
            Box::new(|p: &Path| {
                // Succeeds natively on fast (where the file lives); put it back.
                let existing = p.parent().unwrap().join("existing");
                fs::rename(&existing, p)?;
                fs::rename(p, &existing)
            }),
        ),
        (
            "mkdir -p",
            Box::new(|p: &Path| fs::create_dir_all(p.join("a/b/c"))),
        ),
    ];
    for dir in ["archive", "vault/box"] {
        for (what, op) in &attempts {
            let target = m.path(dir).join(format!("via-{what}"));
            let _ = op(&target);
            let leaked: Vec<_> = fs::read_dir(out)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert!(
                leaked.is_empty(),
                "{what} in {dir} created {leaked:?} outside the partitions"
            );
        }
        assert_eq!(
            fs::read(m.path(dir).join("existing")).unwrap(),
            b"e",
            "{dir}"
        );
    }
    // The symlinks on slow are left alone.
    assert!(
        fs::symlink_metadata(m.backing("slow", "archive"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(
        fs::symlink_metadata(m.backing("slow", "vault/box"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A planted symlink in the place of a partition's copy of the *root*'s
    // child is not merged either: nothing under `out` is listed.
    fs::write(out.join("canary"), b"c").unwrap();
    for dir in ["archive", "vault/box"] {
        let listed = names(&m.path(dir));
        assert!(
            !listed.contains(&OsString::from("canary")),
            "{dir}: {listed:?}"
        );
        assert_eq!(
            errno(fs::metadata(m.path(dir).join("canary"))),
            libc::ENOENT
        );
    }
    fs::remove_file(out.join("canary")).unwrap();
}
