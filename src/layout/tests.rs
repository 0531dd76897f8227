//! Layout classification, header parsing and name round trips.

use super::*;

fn cyrus(partition_depth: usize, default_tenant: Option<&str>) -> Layout {
    Layout::new(&LayoutConfig::Cyrus {
        partition_depth,
        default_tenant: default_tenant.map(str::to_string),
        metadata_names: Vec::new(),
    })
}

fn pattern(pattern: &str) -> Layout {
    Layout::new(&LayoutConfig::Pattern {
        pattern: pattern.to_string(),
        metadata_names: Vec::new(),
    })
}

fn folder(tenant: Option<&str>, name: &str) -> FolderRef {
    FolderRef {
        tenant: tenant.map(str::to_string),
        folder: name.to_string(),
    }
}

/// `"user/john@example.org"` → Folder, `"uuid"` → UuidMailbox, `"-"` → Unowned.
fn role(expected: &str) -> DirRole {
    match expected {
        "-" => DirRole::Unowned,
        "uuid" => DirRole::UuidMailbox,
        name => DirRole::Folder(FolderRef::parse_display(name).unwrap()),
    }
}

fn check_table(layout: &Layout, table: &[(&str, &str)]) {
    for (path, expected) in table {
        assert_eq!(
            layout.classify(Path::new(path)),
            role(expected),
            "classify({path:?})"
        );
    }
}

#[test]
fn cyrus_virtdomains_hashed() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/domain", "-"),
            ("mail/domain/e", "-"),
            ("mail/domain/e/example.org", "-"),
            ("mail/domain/e/example.org/j", "-"),
            ("mail/domain/e/example.org/j/user", "-"),
            (
                "mail/domain/e/example.org/j/user/john",
                "user/john@example.org",
            ),
            (
                "mail/domain/e/example.org/j/user/john/Archive",
                "user/john/Archive@example.org",
            ),
            (
                "mail/domain/e/example.org/j/user/john/Archive/2024/Q1",
                "user/john/Archive/2024/Q1@example.org",
            ),
        ],
    );
}

#[test]
fn cyrus_virtdomains_unhashed() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/domain/example.org", "-"),
            ("mail/domain/example.org/user", "-"),
            ("mail/domain/example.org/user/john", "user/john@example.org"),
            (
                "mail/domain/example.org/user/john/Sent",
                "user/john/Sent@example.org",
            ),
        ],
    );
}

#[test]
fn cyrus_fulldirhash_letters_are_accepted() {
    // fulldirhash yields 'A'..'W'; any single byte is taken as the hash.
    check_table(
        &cyrus(1, None),
        &[
            (
                "mail/domain/K/example.org/R/user/john",
                "user/john@example.org",
            ),
            (
                "mail/domain/K/example.org/R/user/john/Trash",
                "user/john/Trash@example.org",
            ),
            (
                "mail/domain/q/1example.org/q/user/1john",
                "user/1john@1example.org",
            ),
        ],
    );
}

#[test]
fn cyrus_caret_means_dot() {
    check_table(
        &cyrus(1, Some("example.org")),
        &[
            (
                "mail/domain/e/example.org/j/user/john^doe",
                "user/john.doe@example.org",
            ),
            (
                "mail/domain/e/example.org/j/user/john^doe/v1^2",
                "user/john.doe/v1.2@example.org",
            ),
            (
                "mail/j/user/john^doe/Archive",
                "user/john.doe/Archive@example.org",
            ),
            ("mail/user/john^doe", "user/john.doe@example.org"),
        ],
    );
}

#[test]
fn cyrus_without_virtdomains() {
    let with_default = cyrus(1, Some("example.org"));
    check_table(
        &with_default,
        &[
            ("mail/user", "-"),
            ("mail/user/john", "user/john@example.org"),
            ("mail/user/john/Archive", "user/john/Archive@example.org"),
            ("mail/j", "-"),
            ("mail/j/user", "-"),
            ("mail/j/user/john", "user/john@example.org"),
            ("mail/j/user/john/Archive", "user/john/Archive@example.org"),
        ],
    );
    check_table(
        &cyrus(1, None),
        &[
            ("mail/user/john", "user/john"),
            ("mail/j/user/john/Archive", "user/john/Archive"),
        ],
    );
}

#[test]
fn cyrus_one_letter_user_is_not_a_hash_dir() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/user/a", "user/a"),
            ("mail/user/a/b", "user/a/b"),
            ("mail/a/user/a", "user/a"),
            ("mail/a/user/a/b", "user/a/b"),
            ("mail/domain/e/example.org/a/user/a", "user/a@example.org"),
            ("mail/domain/example.org/user/a", "user/a@example.org"),
        ],
    );
}

#[test]
fn cyrus_shared_mailboxes() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/shared", "shared"),
            ("mail/shared/sales", "shared/sales"),
            ("mail/s/shared", "shared"),
            ("mail/s/shared/sales", "shared/sales"),
            (
                "mail/domain/e/example.org/s/shared/sales",
                "shared/sales@example.org",
            ),
            (
                "mail/domain/example.org/shared/sales/2024",
                "shared/sales/2024@example.org",
            ),
        ],
    );
}

#[test]
fn cyrus_deleted_mailboxes_charge_their_origin() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/DELETED", "-"),
            ("mail/u/DELETED", "-"),
            ("mail/u/DELETED/user", "-"),
            ("mail/u/DELETED/user/john", "-"),
            ("mail/u/DELETED/user/john/5F3A2B1C", "user/john"),
            ("mail/u/DELETED/user/john/Archive", "-"),
            (
                "mail/u/DELETED/user/john/Archive/5F3A2B1C",
                "user/john/Archive",
            ),
            (
                "mail/domain/e/example.org/u/DELETED/user/john/Archive/65A0B1C2",
                "user/john/Archive@example.org",
            ),
            ("mail/DELETED/shared/sales/65A0B1C2", "shared/sales"),
            ("mail/DELETED/user/65A0B1C2", "-"),
            ("mail/DELETED/user/john/lowerhex", "-"),
        ],
    );
}

#[test]
fn cyrus_uuid_layout() {
    check_table(
        &cyrus(1, None),
        &[
            ("mail/uuid", "-"),
            ("mail/uuid/4", "-"),
            ("mail/uuid/4/b", "-"),
            ("mail/uuid/4/b/4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11", "uuid"),
            (
                "mail/uuid/4/b/4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11/sub",
                "-",
            ),
            ("mail/uuid/4/c/4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11", "-"),
            ("mail/uuid/4/b/4b", "-"),
            ("mail/uuid/4b/8d/4b8d8e1c", "-"),
            (
                "archive/uuid/f/0/f0000000-0000-4000-8000-000000000000",
                "uuid",
            ),
        ],
    );
}

#[test]
fn cyrus_unowned_areas() {
    check_table(
        &cyrus(1, Some("example.org")),
        &[
            ("", "-"),
            ("/", "-"),
            ("mail", "-"),
            ("archive", "-"),
            ("mail/stage.", "-"),
            ("mail/stage./x", "-"),
            ("mail/sync.", "-"),
            ("mail/sync./1234", "-"),
            ("mail/lost+found", "-"),
            ("mail/.snapshot/user/john", "-"),
            ("mail/user/john/.hidden", "-"),
            ("mail/user/../user/john", "-"),
            ("mail/user/john/^^", "-"),
            ("mail/user/john/^", "-"),
        ],
    );
}

#[test]
fn cyrus_partition_depth() {
    check_table(
        &cyrus(0, None),
        &[
            ("", "-"),
            ("user", "-"),
            ("user/john", "user/john"),
            ("uuid/4/b/4b8d", "uuid"),
            ("stage.", "-"),
        ],
    );
    check_table(
        &cyrus(2, None),
        &[
            ("tier", "-"),
            ("tier/fast", "-"),
            ("tier/fast/user/john", "user/john"),
            (
                "tier/fast/domain/e/example.org/j/user/john",
                "user/john@example.org",
            ),
        ],
    );
}

#[test]
fn cyrus_accepts_absolute_and_dotted_paths() {
    check_table(
        &cyrus(1, None),
        &[
            ("/mail/user/john", "user/john"),
            ("./mail/user/john", "user/john"),
        ],
    );
}

#[test]
fn cyrus_non_utf8_directory_is_still_charged() {
    let layout = cyrus(1, None);
    let path = Path::new(OsStr::from_bytes(b"mail/user/john/caf\xe9"));
    let DirRole::Folder(found) = layout.classify(path) else {
        panic!("not a folder")
    };
    assert_eq!(found.top(), folder(None, "user/john"));
}

#[test]
fn none_layout_owns_nothing() {
    let layout = Layout::new(&LayoutConfig::None);
    assert_eq!(
        layout.classify(Path::new("mail/user/john")),
        DirRole::Unowned
    );
    assert_eq!(layout.default_tenant(), None);
}

#[test]
fn pattern_maildir_layouts() {
    check_table(
        &pattern("{tenant}/{mailbox}/**"),
        &[
            ("", "-"),
            ("example.org", "-"),
            ("example.org/john", "john@example.org"),
            ("example.org/john/cur", "john@example.org"),
            ("example.org/john/.Sent/new", "john@example.org"),
            ("example.org/.tmp", "-"),
        ],
    );
    check_table(
        &pattern("vmail/{tenant}/{mailbox}/Maildir/**"),
        &[
            ("vmail", "-"),
            ("vmail/example.org", "-"),
            ("vmail/example.org/john", "john@example.org"),
            ("vmail/example.org/john/Maildir", "john@example.org"),
            (
                "vmail/example.org/john/Maildir/.Sent/cur",
                "john@example.org",
            ),
            ("vmail/example.org/john/sieve", "john@example.org"),
            ("other/example.org/john", "-"),
        ],
    );
}

#[test]
fn pattern_without_tenant_or_subtree() {
    check_table(
        &pattern("home/{mailbox}/**"),
        &[
            ("home", "-"),
            ("home/john", "john"),
            ("home/john/Maildir/cur", "john"),
        ],
    );
    check_table(
        &pattern("{tenant}/*/{mailbox}/Maildir"),
        &[
            ("example.org/x/john", "john@example.org"),
            ("example.org/x/john/Maildir", "john@example.org"),
            ("example.org/x/john/Maildir/cur", "-"),
            ("example.org/x/john/other", "-"),
        ],
    );
}

#[test]
fn unusable_patterns_own_nothing() {
    for bad in [
        "",
        "**",
        "{tenant}/**",
        "{mailbox}/{tenant}/**",
        "{mailbox}/{mailbox}",
        "a//{mailbox}",
        "a/../{mailbox}",
        "x{mailbox}",
        "a*/{mailbox}",
        "**/{mailbox}",
    ] {
        let layout = pattern(bad);
        assert_eq!(
            layout.classify(Path::new("a/b/c")),
            DirRole::Unowned,
            "{bad:?}"
        );
        assert_eq!(layout.classify(Path::new("a")), DirRole::Unowned, "{bad:?}");
    }
}

#[test]
fn metadata_names() {
    let cyrus = cyrus(1, None);
    let maildir = pattern("{tenant}/{mailbox}/Maildir/**");
    let none = Layout::new(&LayoutConfig::None);
    let both = |name: &str| {
        (
            cyrus.is_metadata_name(OsStr::new(name)),
            maildir.is_metadata_name(OsStr::new(name)),
        )
    };
    // Cyrus's own: index files and their write-then-rename copies
    for name in [
        "cyrus.index",
        "cyrus.cache",
        "cyrus.header",
        "cyrus.squat",
        "cyrus.annotations",
        "cyrus.index.NEW",
        "cyrus.header.NEW",
        "x.NEW",
    ] {
        assert_eq!(both(name), (true, false), "{name}");
    }
    // Dovecot's, as a real 2.3 writes them in maildir and mdbox stores
    for name in [
        "dovecot.index",
        "dovecot.index.log",
        "dovecot.index.log.2",
        "dovecot.index.cache",
        "dovecot.index.tmp",
        "dovecot.list.index.log",
        "dovecot.mailbox.log",
        "dovecot.map.index",
        "dovecot-uidlist",
        "dovecot-uidlist.lock",
        "dovecot-keywords",
        "dovecot-uidvalidity",
        "dovecot-uidvalidity.6b0e777f",
        "subscriptions",
        "subscriptions.lock",
        "maildirfolder",
        "maildirsize",
        ".dovecot.lda-dupes",
        ".dovecot.lda-dupes.lock",
    ] {
        assert_eq!(both(name), (false, true), "{name}");
    }
    // message data never
    for name in [
        "123.",
        "1.",
        "cyrus",
        "NEW",
        "1700000000.M1P2.host,S=12:2,S",
        "1796110234.M338809P26558.vm",
        "m.1",
        "u.5f3a",
        "xcyrus.index",
        "xdovecot.index",
        "subscriptions2",
        "dovecot",
    ] {
        assert_eq!(both(name), (false, false), "{name}");
        assert!(!none.is_metadata_name(OsStr::new(name)), "{name}");
    }
    assert!(!none.is_metadata_name(OsStr::new("cyrus.index")));
}

#[test]
fn configured_metadata_names_extend_the_layouts() {
    let layout = Layout::new(&LayoutConfig::Pattern {
        pattern: "{tenant}/{mailbox}/**".to_string(),
        metadata_names: vec![
            "courierimapuiddb".to_string(),
            "*.idx".to_string(),
            "/bad".to_string(),
        ],
    });
    for name in [
        "courierimapuiddb",
        "a.idx",
        ".idx",
        "dovecot.index",
        "subscriptions",
    ] {
        assert!(layout.is_metadata_name(OsStr::new(name)), "{name}");
    }
    for name in [
        "courierimapuiddb2",
        "a.idx2",
        "/bad",
        "bad",
        "1.",
        "cyrus.index",
    ] {
        assert!(!layout.is_metadata_name(OsStr::new(name)), "{name}");
    }
}

#[test]
fn name_globs() {
    let m = |glob: &str, name: &str| NameGlob::parse(glob).unwrap().matches(name.as_bytes());
    assert!(m("cyrus.*", "cyrus."));
    assert!(m("cyrus.*", "cyrus.index.NEW"));
    assert!(!m("cyrus.*", "cyrus"));
    assert!(m("*.NEW", ".NEW"));
    assert!(m("*.NEW", "a.NEW.NEW"));
    assert!(!m("*.NEW", "a.NEW.x"));
    assert!(m("a*b*c", "aXbYbZc"));
    assert!(!m("a*b*c", "aXbYbZ"));
    assert!(m("?.idx", "1.idx"));
    assert!(!m("?.idx", "12.idx"));
    assert!(m("**x", "x"));
    assert!(m("exact", "exact"));
    assert!(!m("exact", "exactly"));
    for bad in ["", "*", "**", "?", "*?", "a/b", ".", "..", "a\0b"] {
        assert!(NameGlob::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn tenant_directories() {
    let c = cyrus(1, None);
    let t = |l: &Layout, p: &str| l.tenant_of_dir(Path::new(p));
    assert_eq!(
        t(&c, "mail/domain/e/example.org"),
        Some("example.org".into())
    );
    assert_eq!(
        t(&c, "mail/domain/e/example.org/j/user"),
        Some("example.org".into())
    );
    assert_eq!(t(&c, "mail/domain/example.org"), Some("example.org".into()));
    assert_eq!(t(&c, "mail/domain/e"), None);
    assert_eq!(t(&c, "mail/domain"), None);
    assert_eq!(t(&c, "mail/user/john"), None);
    assert_eq!(t(&c, "mail/domain/e/.snap"), None);
    let p = pattern("vmail/{tenant}/{mailbox}/**");
    assert_eq!(t(&p, "vmail/example.org"), Some("example.org".into()));
    assert_eq!(t(&p, "vmail"), None);
    assert_eq!(t(&p, "other/example.org"), None);
    assert_eq!(t(&pattern("{mailbox}/**"), "john"), None);
}

#[test]
fn default_tenant_is_exposed() {
    assert_eq!(
        cyrus(1, Some("example.org")).default_tenant(),
        Some("example.org")
    );
    assert_eq!(cyrus(1, None).default_tenant(), None);
    assert_eq!(pattern("{tenant}/{mailbox}/**").default_tenant(), None);
}

#[test]
fn layout_is_send_sync_clone() {
    fn assert_traits<T: Send + Sync + Clone + fmt::Debug>() {}
    assert_traits::<Layout>();
}

// --- FolderRef ---------------------------------------------------------

#[test]
fn folder_display_and_parse_round_trip() {
    for (value, text) in [
        (
            folder(Some("example.org"), "user/john/Archive"),
            "user/john/Archive@example.org",
        ),
        (folder(None, "user/john"), "user/john"),
        (
            folder(Some("example.org"), "shared/sales"),
            "shared/sales@example.org",
        ),
        (folder(Some("example.org"), "john"), "john@example.org"),
        (folder(None, "shared/a@b/c"), "shared/a%40b/c"),
        (folder(Some("a@b"), "user/x"), "user/x@a%40b"),
        (folder(None, "a@b"), "a%40b"),
        (folder(None, "user/john/Sent "), "user/john/Sent%20"),
        (folder(Some("example.org"), "100%"), "100%25@example.org"),
    ] {
        assert_eq!(value.display(), text);
        assert_eq!(value.to_string(), text);
        assert_eq!(FolderRef::parse_display(text), Ok(value));
    }
}

#[test]
fn parse_display_tolerates_and_rejects() {
    assert_eq!(
        FolderRef::parse_display(" /user/john/@example.org "),
        Ok(folder(Some("example.org"), "user/john"))
    );
    // Typed by an operator: an unescaped `@` inside a path stays in it,
    // and a `%` that is no escape is kept.
    assert_eq!(
        FolderRef::parse_display("shared/a@b/c"),
        Ok(folder(None, "shared/a@b/c"))
    );
    assert_eq!(
        FolderRef::parse_display("user/50%off@example.org"),
        Ok(folder(Some("example.org"), "user/50%off"))
    );
    for bad in [
        "",
        "   ",
        "@example.org",
        "user/john@",
        "user//john",
        "user/../john",
        "/",
        "user/%2E%2E@example.org",
        "user/%FF@example.org",
    ] {
        assert!(FolderRef::parse_display(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn folder_top() {
    for (name, top) in [
        ("user/john", "user/john"),
        ("user/john/Archive/2024", "user/john"),
        ("user", "user"),
        ("shared", "shared"),
        ("shared/sales/2024", "shared"),
        ("john", "john"),
        ("username/x", "username"),
    ] {
        let tenant = Some("example.org");
        assert_eq!(folder(tenant, name).top(), folder(tenant, top), "{name}");
    }
}

#[test]
fn folder_quota_root_candidates() {
    let names = |f: FolderRef| -> Vec<String> {
        f.quota_root_candidates()
            .into_iter()
            .map(|c| c.display())
            .collect()
    };
    assert_eq!(
        names(folder(Some("x.org"), "user/john/Archive/2024")),
        [
            "user/john/Archive/2024@x.org",
            "user/john/Archive@x.org",
            "user/john@x.org"
        ]
    );
    assert_eq!(names(folder(None, "user/john")), ["user/john"]);
    assert_eq!(
        names(folder(None, "shared/a/b")),
        ["shared/a/b", "shared/a", "shared"]
    );
    assert_eq!(names(folder(None, "john")), ["john"]);
}

// --- cyrus.header ------------------------------------------------------

/// A header exactly as Cyrus 3.6 `mailbox_commit_header` writes it.
fn header(data_line: &str) -> Vec<u8> {
    let mut bytes = CYRUS_HEADER_MAGIC.to_vec();
    bytes.extend_from_slice(data_line.as_bytes());
    bytes.push(b'\n');
    bytes
}

const UUID: &str = "4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11";

#[test]
fn magic_is_cyrus_mailbox_header_magic() {
    let expected = [
        &[0xa1u8, 0x02, 0x8b, 0x0d][..],
        b"Cyrus mailbox header\n",
        b"\"The best thing about this system was that it had lots of goals.\"\n",
        b"\t--Jim Morris on Andrew\n",
    ]
    .concat();
    assert_eq!(CYRUS_HEADER_MAGIC, &expected[..]);
}

#[test]
fn header_realistic_3_6() {
    let bytes = header(&format!(
        "%(T e N example.org!user.john.Archive I {UUID} Q example.org!user.john \
         A %(john lrswipkxtecdan admin@example.org lrswipkxtecdan) U ($Forwarded $MDNSent))"
    ));
    assert_eq!(
        parse_cyrus_header(&bytes, None),
        Ok(folder(Some("example.org"), "user/john/Archive"))
    );
    let full = parse_cyrus_header_full(&bytes, None).unwrap();
    assert_eq!(full.uniqueid.as_deref(), Some(UUID));
    assert_eq!(
        full.quotaroot,
        Some(folder(Some("example.org"), "user/john"))
    );
}

#[test]
fn header_names() {
    let cases = [
        (
            "N user.john",
            Some("default.org"),
            Ok(folder(Some("default.org"), "user/john")),
        ),
        ("N user.john", None, Ok(folder(None, "user/john"))),
        (
            "N example.org!user.john^doe.v1^2",
            None,
            Ok(folder(Some("example.org"), "user/john.doe/v1.2")),
        ),
        (
            "N example.org!shared.sales",
            None,
            Ok(folder(Some("example.org"), "shared/sales")),
        ),
        (
            "N \"user.john.Sent Items\"",
            None,
            Ok(folder(None, "user/john/Sent Items")),
        ),
        ("N \"user.jo\\\"hn\"", None, Ok(folder(None, "user/jo\"hn"))),
        ("N {9+}\r\nuser.john", None, Ok(folder(None, "user/john"))),
        (
            "N example.org!DELETED.user.john.Archive.65A0B1C2",
            None,
            Ok(folder(Some("example.org"), "user/john/Archive")),
        ),
        (
            "N user.john.&AOQ-",
            None,
            Ok(folder(None, "user/john/&AOQ-")),
        ),
    ];
    for (fields, tenant, expected) in cases {
        let bytes = header(&format!("%(T e {fields} I {UUID})"));
        assert_eq!(parse_cyrus_header(&bytes, tenant), expected, "{fields:?}");
    }
}

#[test]
fn header_field_order_and_nil() {
    let bytes = header(&format!("%(A %(x %(y (z))) I {UUID} N user.john)"));
    assert_eq!(
        parse_cyrus_header(&bytes, None),
        Ok(folder(None, "user/john"))
    );
    let bytes = header("%(T e N NIL)");
    assert_eq!(parse_cyrus_header(&bytes, None), Err(HeaderError::NoName));
    let bytes = header(&format!("%(T e I {UUID})"));
    assert_eq!(parse_cyrus_header(&bytes, None), Err(HeaderError::NoName));
}

#[test]
fn header_pre_3_6_format_has_no_name() {
    let bytes = header(&format!(
        "example.org!user.john\t{UUID}\n$Forwarded\njohn\tlrs\t"
    ));
    assert_eq!(parse_cyrus_header(&bytes, None), Err(HeaderError::NoName));
}

#[test]
fn header_structural_errors() {
    let magic = CYRUS_HEADER_MAGIC;
    let only_magic = magic.to_vec();
    let no_newline = [magic, b"%(N user.john)"].concat();
    let mut garbage = vec![0u8; 1 << 20];
    for (i, byte) in garbage.iter_mut().enumerate() {
        *byte = (i * 131 % 251) as u8;
    }
    let garbage_after_magic = [magic, &garbage[..]].concat();
    assert_eq!(parse_cyrus_header(b"", None), Err(HeaderError::TooShort));
    assert_eq!(
        parse_cyrus_header(&magic[..20], None),
        Err(HeaderError::TooShort)
    );
    assert_eq!(
        parse_cyrus_header(&only_magic, None),
        Err(HeaderError::TooShort)
    );
    assert_eq!(
        parse_cyrus_header(&no_newline, None),
        Err(HeaderError::TooShort)
    );
    assert_eq!(
        parse_cyrus_header(&garbage, None),
        Err(HeaderError::BadMagic)
    );
    assert!(parse_cyrus_header(&garbage_after_magic, None).is_err());
    let nul_magic = [&[0u8; 200][..]].concat();
    assert_eq!(
        parse_cyrus_header(&nul_magic, None),
        Err(HeaderError::BadMagic)
    );
}

#[test]
fn header_rejects_bad_names() {
    for fields in [
        "N user..john",
        "N .user.john",
        "N user.john.",
        "N user.john.^^",
        "N user.^",
        "N example.org!",
        "N !user.john",
        "N ..!user.john",
        "N user.jo/hn",
        "N user",
        "N DELETED.user.john",
        "N {10+}\r\nuser.j\0ohn",
    ] {
        let bytes = header(&format!("%(T e {fields} I {UUID})"));
        let result = parse_cyrus_header(&bytes, None);
        assert!(
            matches!(result, Err(HeaderError::BadName(_))),
            "{fields:?}: {result:?}"
        );
    }
    let mut invalid_utf8 = CYRUS_HEADER_MAGIC.to_vec();
    invalid_utf8.extend_from_slice(b"%(N user.j\xffohn)\n");
    assert!(matches!(
        parse_cyrus_header(&invalid_utf8, None),
        Err(HeaderError::BadName(_))
    ));
}

#[test]
fn header_rejects_malformed_dlists() {
    for line in [
        "%",
        "%(",
        "%(N",
        "%(N ",
        "%(N \"user.john",
        "%(N {99+}\r\nuser.john)",
        "%(N {x}\r\nuser)",
        "%(N {5}user.j)",
        "%(A %(x (y) N user.john)",
        "%(N user.john A (",
        "%(N {99999999999999999999999}\r\nx)",
        "%(  )",
    ] {
        let result = parse_cyrus_header(&header(line), None);
        assert!(result.is_err(), "{line:?}: {result:?}");
    }
}

#[test]
fn header_survives_deep_nesting() {
    let depth = 200_000;
    let line = format!(
        "%(A {}{} N user.john)",
        "(".repeat(depth),
        ")".repeat(depth)
    );
    assert_eq!(
        parse_cyrus_header(&header(&line), None),
        Ok(folder(None, "user/john"))
    );
    let unterminated = format!("%(A {}", "%(".repeat(depth));
    assert!(parse_cyrus_header(&header(&unterminated), None).is_err());
}

#[test]
fn header_error_messages_are_short() {
    let long = format!("N user.{}..x", "a".repeat(1 << 20));
    let Err(error) = parse_cyrus_header(&header(&format!("%({long})")), None) else {
        panic!("accepted");
    };
    assert!(error.to_string().len() < 400, "{}", error.to_string().len());
}

#[test]
fn header_and_path_agree() {
    let layout = cyrus(1, Some("default.org"));
    for (path, name) in [
        (
            "mail/domain/e/example.org/j/user/john^doe/Archive",
            "example.org!user.john^doe.Archive",
        ),
        ("mail/user/john/Sent", "user.john.Sent"),
        ("mail/s/shared/sales", "shared.sales"),
        (
            "mail/u/DELETED/user/john/Archive/65A0B1C2",
            "DELETED.user.john.Archive.65A0B1C2",
        ),
    ] {
        let from_header =
            parse_cyrus_header(&header(&format!("%(N {name})")), layout.default_tenant());
        assert_eq!(
            DirRole::Folder(from_header.unwrap()),
            layout.classify(Path::new(path)),
            "{path}"
        );
    }
}
