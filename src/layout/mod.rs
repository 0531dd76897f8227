//! Whose is a directory? Spool path / `cyrus.header` → (tenant, folder).
//!
//! Pure: no filesystem access. The filesystem core asks [`Layout::classify`]
//! for every directory it meets, and hands the bytes of a freshly renamed
//! `cyrus.header` to [`parse_cyrus_header`].
//!
//! # Cyrus 3.6 on-disk facts this module relies on
//!
//! Read from cyrus-imapd `imap/mboxname.c` (`mboxname_hash`,
//! `mboxname_id_hash`, `_append_intbuf`), `lib/util.c` (`dir_hash_c`),
//! `imap/mailbox.c` (`mailbox_read_header`, `mailbox_commit_header`,
//! `mailbox_header_data_cstring`) and `imap/dlist.c` (`dlist_print`,
//! `dlist_parsesax`).
//!
//! **Named ("legacy") layout** (`mboxname_hash`), below a partition root:
//!
//! ```text
//! [domain/[<d>/]<domain>/][<h>/]user/<localpart>[/<folder>...]    user mailboxes
//! [domain/[<d>/]<domain>/][<h>/]<shared>[/<folder>...]            shared mailboxes
//! [domain/[<d>/]<domain>/][<h>/]DELETED/user/<localpart>/.../<HEX> delayed-delete
//! ```
//!
//! * `<d>`/`<h>` exist only with `hashimapspool`. They are one byte:
//!   `dir_hash_c(name)` = the lower-cased first byte, or `q` if that is not
//!   `a`..`z`; with `fulldirhash` a hash of the name up to its first `.`,
//!   giving `A`..`W`. `<d>` hashes the domain; `<h>` hashes the *second*
//!   name component if there is one (the localpart for `user.john.X`, `foo`
//!   for `shared.foo`, `user` for `DELETED.user.john...`), else the first.
//!   The hash letter sits before *all* components, so `user/` itself is
//!   below it: `j/user/john/Archive`.
//! * A `.` inside a name component is stored as `^` (`john^doe`); the
//!   domain directory is the plain domain (`example.org`).
//! * Delayed delete renames `user.john.X` to `DELETED.user.john.X.<HEX>`
//!   (`deletedprefix`, default `DELETED`; `<HEX>` = `%X` of the time).
//!
//! **UUID layout** (`mboxname_id_hash`, the 3.6 default):
//! `<partition>/uuid/<id[0]>/<id[1]>/<uniqueid>` — `a` and `b` are the first
//! and second characters of the mailbox's uniqueid.
//!
//! **`cyrus.header`** is the magic [`CYRUS_HEADER_MAGIC`] followed by one
//! data line. Cyrus 3.6 writes a dlist key/value list (`mailbox_header_data_cstring`):
//!
//! ```text
//! %(T e N example.org!user.john.Archive I <uniqueid> Q example.org!user.john A %(john lrswipkxtecdan) U ($Forwarded))
//! ```
//!
//! `T` type, `N` the internal name, `I` uniqueid, `Q` quota root (omitted
//! when none), `A` ACL (a nested key/value list), `U` user flags (a list).
//! Values are IMAP astrings: a bare atom, a `"quoted"` string with `\`
//! escapes, or a `{n+}\r\n` literal. Older Cyrus wrote `quotaroot TAB
//! uniqueid`, a flags line and an ACL line instead, which carries no name.
//! Internal names: `[<domain>!]<box>.<box>...`, `.` separating components
//! and `^` standing for a `.` inside one, exactly as on disk.

use std::borrow::Cow;
use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

use crate::config::LayoutConfig;

mod cyrus;
mod header;
mod metadata;
mod pattern;
#[cfg(test)]
mod tests;

use cyrus::*;
pub use header::*;
pub use metadata::{CYRUS_METADATA, DOVECOT_METADATA, NameGlob};
use pattern::*;

pub const CYRUS_HEADER: &str = "cyrus.header";

/// What Cyrus writes before the data line of every `cyrus.header`
/// (`MAILBOX_HEADER_MAGIC` in `imap/mailbox.h`, without its trailing NUL).
pub const CYRUS_HEADER_MAGIC: &[u8] = b"\xa1\x02\x8b\x0dCyrus mailbox header\n\
\"The best thing about this system was that it had lots of goals.\"\n\
\t--Jim Morris on Andrew\n";

/// Cyrus's default `deletedprefix`.
const DELETED_PREFIX: &[u8] = b"DELETED";

/// A folder (Cyrus mailbox, or maildir mailbox) a directory belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FolderRef {
    /// `"example.org"`; `None` when the spool has no domain and no default tenant.
    pub tenant: Option<String>,
    /// External `/`-separated name: `"user/john/Archive"` (dots restored from `^`).
    pub folder: String,
}

/// Escapes what would make a displayed name ambiguous: `%`, `@`, and
/// whitespace at the ends (`parse_display` trims).
fn escape_part(part: &str) -> String {
    let (start, end) = (part.len() - part.trim_start().len(), part.trim_end().len());
    let mut out = String::with_capacity(part.len());
    for (i, c) in part.char_indices() {
        let edge_space = c.is_whitespace() && (i < start || i >= end);
        if c == '%' || c == '@' || edge_space {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits is kept.
fn unescape_part(part: &str, whole: &str) -> Result<String, String> {
    let bytes = part.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) if hex.is_some_and(|h| h.bytes().all(|c| c.is_ascii_hexdigit())) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("{whole:?}: an escape decodes to invalid UTF-8"))
}

impl FolderRef {
    /// `"user/john/Archive@example.org"`, or `"user/john/Archive"` without
    /// tenant. What would make the name ambiguous — `%` and `@` inside
    /// either part, whitespace at either part's ends — is percent-escaped
    /// (`"user/a%40b@example.org"`), so [`parse_display`](Self::parse_display)
    /// always gives the same mailbox back (run-time limits are persisted
    /// this way). Ordinary names are unchanged.
    pub fn display(&self) -> String {
        let folder = escape_part(&self.folder);
        match &self.tenant {
            Some(tenant) => format!("{folder}@{}", escape_part(tenant)),
            None => folder,
        }
    }

    /// Inverse of [`display`](Self::display), for names typed by operators
    /// (`"user/john@example.org"`). The tenant follows the last `@`, unless
    /// that part contains a `/` (then the `@` belongs to the folder name);
    /// `%XX` escapes are decoded in both parts.
    pub fn parse_display(s: &str) -> Result<FolderRef, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty mailbox name".to_string());
        }
        let (folder, tenant) = match s.rsplit_once('@') {
            Some((folder, tenant)) if !tenant.contains('/') => (folder, Some(tenant)),
            _ => (s, None),
        };
        if tenant == Some("") {
            return Err(format!("{s:?}: empty tenant after '@'"));
        }
        let tenant = tenant.map(|t| unescape_part(t, s)).transpose()?;
        if tenant.as_deref() == Some("") {
            return Err(format!("{s:?}: empty tenant after '@'"));
        }
        let folder = unescape_part(folder.trim_matches('/'), s)?;
        let folder = folder.as_str();
        if folder.is_empty() {
            return Err(format!("{s:?}: empty folder name"));
        }
        if let Some(bad) = folder
            .split('/')
            .find(|seg| matches!(*seg, "" | "." | ".."))
        {
            return Err(format!("{s:?}: invalid folder segment {bad:?}"));
        }
        Ok(FolderRef {
            tenant,
            folder: folder.to_string(),
        })
    }

    /// The default quota root: `user/<name>` for `user/<name>/...`, else
    /// the first segment (shared mailboxes; pattern folders are one segment,
    /// so they are their own top).
    pub fn top(&self) -> FolderRef {
        let len = top_len(&self.folder);
        self.truncated(len)
    }

    /// Candidate quota roots, nearest first, ending with [`top`](Self::top):
    /// `user/john/Archive/2024` → `[user/john/Archive/2024, user/john/Archive, user/john]`.
    pub fn quota_root_candidates(&self) -> Vec<FolderRef> {
        let top_len = top_len(&self.folder);
        let mut candidates = vec![self.clone()];
        let mut len = self.folder.len();
        while len > top_len {
            len = self.folder[..len].rfind('/').unwrap_or(0).max(top_len);
            candidates.push(self.truncated(len));
        }
        candidates
    }

    fn truncated(&self, len: usize) -> FolderRef {
        FolderRef {
            tenant: self.tenant.clone(),
            folder: self.folder[..len].to_string(),
        }
    }
}

impl fmt::Display for FolderRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display())
    }
}

/// Byte length of the quota-root prefix of a folder name.
fn top_len(folder: &str) -> usize {
    let mut segment_ends = folder
        .match_indices('/')
        .map(|(i, _)| i)
        .chain([folder.len()]);
    let first_end = segment_ends.next().unwrap_or(folder.len());
    if &folder[..first_end] == "user" {
        segment_ends.next().unwrap_or(first_end)
    } else {
        first_end
    }
}

/// What a directory is, judged from its spool path (relative to the mount root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirRole {
    /// Files directly in this directory are charged to this folder.
    Folder(FolderRef),
    /// A Cyrus 3.6 UUID mailbox directory: its owner is read from its cyrus.header.
    UuidMailbox,
    /// Charged to nobody: the spool root, Cyrus partition roots, `stage./`,
    /// `sync./`, hash-letter and `domain/` intermediates, `uuid/a/b`
    /// intermediates, anything unrecognised.
    Unowned,
}

/// The configured spool layout, prepared for fast classification.
#[derive(Clone, Debug)]
pub struct Layout {
    kind: Kind,
    /// The layout's own metadata names, then the configured ones.
    metadata: Vec<NameGlob>,
}

#[derive(Clone, Debug)]
enum Kind {
    None,
    Cyrus(CyrusLayout),
    /// `None`: the pattern was unusable, so nothing is attributed.
    Pattern(Option<PatternLayout>),
}

impl Layout {
    /// An unusable pattern (config validation should have caught it)
    /// classifies everything as [`DirRole::Unowned`] rather than failing.
    pub fn new(cfg: &LayoutConfig) -> Layout {
        let kind = match cfg {
            LayoutConfig::None => Kind::None,
            LayoutConfig::Cyrus {
                partition_depth,
                default_tenant,
                ..
            } => Kind::Cyrus(CyrusLayout {
                partition_depth: *partition_depth,
                default_tenant: default_tenant.clone(),
            }),
            LayoutConfig::Pattern { pattern, .. } => {
                Kind::Pattern(PatternLayout::parse(pattern).ok())
            }
        };
        // A configured glob that does not parse was refused by config
        // validation; here it is skipped rather than failing.
        let metadata = Layout::builtin_metadata_names(cfg)
            .iter()
            .map(|glob| NameGlob::builtin(glob))
            .chain(
                cfg.metadata_names()
                    .iter()
                    .filter_map(|glob| NameGlob::parse(glob).ok()),
            )
            .collect();
        Layout { kind, metadata }
    }

    /// The metadata names a layout kind knows by itself: Cyrus's
    /// [`CYRUS_METADATA`], Dovecot's [`DOVECOT_METADATA`] for pattern
    /// layouts, none without a layout (nothing is charged then).
    pub fn builtin_metadata_names(cfg: &LayoutConfig) -> &'static [&'static str] {
        match cfg {
            LayoutConfig::None => &[],
            LayoutConfig::Cyrus { .. } => CYRUS_METADATA,
            LayoutConfig::Pattern { .. } => DOVECOT_METADATA,
        }
    }

    /// Whether a directory named `name` may be made (or renamed to) inside
    /// a directory of role `parent`. Cyrus makes no dot-directory inside a
    /// mailbox and no directory at all inside a UUID mailbox directory; the
    /// layout charges such a directory to nobody, so letting one be made
    /// would let a mailbox's owner store data outside every limit.
    pub fn allows_dir(&self, parent: &DirRole, name: &OsStr) -> bool {
        match (&self.kind, parent) {
            (Kind::Cyrus(_), DirRole::UuidMailbox) => false,
            (Kind::Cyrus(_), DirRole::Folder(_)) => !name.as_bytes().starts_with(b"."),
            _ => true,
        }
    }

    /// Classifies a directory by its spool path. One small allocation for
    /// the component list, plus the result's strings.
    pub fn classify(&self, spool_dir: &Path) -> DirRole {
        let Some(parts) = path_parts(spool_dir) else {
            return DirRole::Unowned;
        };
        match &self.kind {
            Kind::None | Kind::Pattern(None) => DirRole::Unowned,
            Kind::Cyrus(cyrus) => cyrus.classify(&parts),
            Kind::Pattern(Some(pattern)) => pattern.classify(&parts),
        }
    }

    /// Files that get the metadata grace: the layout's own metadata names
    /// ([`CYRUS_METADATA`]: `cyrus.*`, `*.NEW`; [`DOVECOT_METADATA`] for
    /// pattern layouts: Dovecot's index, control, subscription and lock
    /// files) and the configured `[quota] metadata_names`. Message files
    /// (`123.`, maildir `tmp/`, `cur/`, `new/` names, mdbox `m.N`) never.
    pub fn is_metadata_name(&self, name: &OsStr) -> bool {
        let name = name.as_bytes();
        self.metadata.iter().any(|glob| glob.matches(name))
    }

    /// The tenant a directory that is not itself a folder belongs to:
    /// Cyrus `domain/[<d>/]<domain>` and the intermediates below it
    /// (hash letter, `user`), or a pattern's directories between
    /// `{tenant}` and `{mailbox}`. For `df` on a tenant directory.
    pub fn tenant_of_dir(&self, spool_dir: &Path) -> Option<String> {
        let parts = path_parts(spool_dir)?;
        if parts.iter().any(|part| part.starts_with(b".")) {
            return None;
        }
        let tenant: &[u8] = match &self.kind {
            Kind::Cyrus(cyrus) => match parts.get(cyrus.partition_depth..)? {
                [domain, hash, name, ..] if *domain == b"domain" && hash.len() == 1 => name,
                [domain, name, ..] if *domain == b"domain" && name.len() > 1 => name,
                _ => return None,
            },
            Kind::Pattern(Some(pattern)) => pattern.tenant_of(&parts)?,
            _ => return None,
        };
        Some(String::from_utf8_lossy(tenant).into_owned())
    }

    /// Tenant for Cyrus names without a domain (`user.john`).
    pub fn default_tenant(&self) -> Option<&str> {
        match &self.kind {
            Kind::Cyrus(cyrus) => cyrus.default_tenant.as_deref(),
            _ => None,
        }
    }
}

/// The path's components as bytes; `None` for `..` (never a normalized
/// spool path, so never trusted).
fn path_parts(path: &Path) -> Option<Vec<&[u8]>> {
    let mut parts = Vec::with_capacity(8);
    for component in path.components() {
        match component {
            Component::Normal(name) => parts.push(name.as_bytes()),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts)
}
