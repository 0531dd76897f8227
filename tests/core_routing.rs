//! Routing through the filesystem core, without a kernel: where new
//! directories and files land, union directories, cross-partition renames
//! and links refused with `EXDEV`.

mod common;

use common::corefs::{Core, ROOT, errno, os};

const ROUTES: &str = r#"
[[route]]
match = "archive/**"
partition = "slow"
"#;

fn core() -> Core {
    Core::new(&["fast", "slow"], ROUTES)
}

#[test]
fn directories_and_files_go_where_their_route_says() {
    let c = core();
    c.mkdirs("mail/a");
    c.mkdirs("archive/b");
    c.put("mail/a/1.", 10).unwrap();
    c.put("archive/b/1.", 10).unwrap();
    assert_eq!(c.partitions_of("mail/a/1."), vec![0]);
    assert_eq!(c.partitions_of("archive/b/1."), vec![1]);
    // Missing parents are made on the new directory's partition.
    assert_eq!(c.partitions_of("archive"), vec![1]);
}

#[test]
fn rename_and_link_across_partitions_are_exdev() {
    let c = core();
    c.mkdirs("mail/a");
    c.mkdirs("archive/b");
    c.put("mail/a/1.", 10).unwrap();
    assert_eq!(errno(c.rename("mail/a/1.", "archive/b/1.", 0)), libc::EXDEV);
    assert_eq!(errno(c.link("mail/a/1.", "archive/b/1.")), libc::EXDEV);
    assert_eq!(errno(c.rename("mail/a", "archive/a", 0)), libc::EXDEV);
    assert_eq!(c.partitions_of("mail/a/1."), vec![0]);
}

#[test]
fn a_directory_on_two_partitions_is_listed_once_with_both_contents() {
    let c = core();
    std::fs::create_dir_all(c.parts[0].join("shared")).unwrap();
    std::fs::create_dir_all(c.parts[1].join("shared")).unwrap();
    std::fs::write(c.parts[0].join("shared/a"), b"1").unwrap();
    std::fs::write(c.parts[1].join("shared/b"), b"2").unwrap();
    let ino = c.ino("shared").unwrap();
    let page = c.fs.readdir(ino, 0).unwrap();
    let mut names: Vec<String> = page.entries[page.start..]
        .iter()
        .map(|e| e.name.to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b"]);
    let root = c.fs.readdir(ROOT, 0).unwrap();
    let shared = root.entries.iter().filter(|e| e.name == os("shared"));
    assert_eq!(shared.count(), 1, "one directory in the tree");
}

#[test]
fn names_that_would_leave_the_partition_are_refused() {
    let c = core();
    assert_eq!(errno(c.fs.lookup(ROOT, os(".."))), libc::EINVAL);
    assert_eq!(errno(c.fs.lookup(ROOT, os("a/b"))), libc::EINVAL);
}

/// Errors carry their reason as a variant, not only an errno.
#[test]
fn errors_name_their_reason() {
    use spoolfs::error::FsError;
    let c = core();
    c.mkdirs("mail/a/sub");
    c.mkdirs("archive/b");
    c.put("mail/a/1.", 10).unwrap();
    let a = c.ino("mail/a").unwrap();
    assert!(matches!(c.fs.lookup(a, os("none")), Err(FsError::NotFound)));
    let who = spoolfs::fs::Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
    assert!(matches!(
        c.fs.mkdir(who, a, os("sub"), 0o755, 0),
        Err(FsError::Exists)
    ));
    let mail = c.ino("mail").unwrap();
    assert!(matches!(c.fs.rmdir(mail, os("a")), Err(FsError::NotEmpty)));
    assert!(matches!(
        c.rename("mail/a/1.", "archive/b/1.", 0),
        Err(FsError::CrossPartition)
    ));
    assert!(matches!(c.unlink("mail/a/sub"), Err(FsError::IsDir)));
    assert!(matches!(
        c.fs.link(a, mail, os("x")),
        Err(FsError::Permission)
    ));
    assert!(matches!(c.fs.readlink(a), Err(FsError::WrongKind)));
    assert!(matches!(c.fs.getattr(1 << 60, None), Err(FsError::Stale)));
    assert!(matches!(
        c.fs.write(ROOT, 999, 0, b"x", 0),
        Err(FsError::BadHandle)
    ));
    let long = "n".repeat(300);
    assert!(matches!(
        c.fs.lookup(a, os(&long)),
        Err(FsError::NameTooLong)
    ));
}
