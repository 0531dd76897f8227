//! Cyrus spool paths: which mailbox a directory under a partition is.

use super::*;

#[derive(Clone, Debug)]
pub(super) struct CyrusLayout {
    pub(super) partition_depth: usize,
    pub(super) default_tenant: Option<String>,
}

impl CyrusLayout {
    pub(super) fn classify(&self, parts: &[&[u8]]) -> DirRole {
        let Some(rest) = parts.get(self.partition_depth..) else {
            return DirRole::Unowned;
        };
        // Cyrus never creates dot-directories; whatever made one is not a mailbox.
        if rest.iter().any(|part| part.starts_with(b".")) {
            return DirRole::Unowned;
        }
        match rest.split_first() {
            None => DirRole::Unowned,
            Some((&b"uuid", below)) => classify_uuid(below),
            Some((&b"domain", below)) => classify_domain(below),
            Some((&(b"stage." | b"sync." | b"lost+found"), _)) => DirRole::Unowned,
            Some(_) => mailbox_role(self.default_tenant.as_deref(), rest),
        }
    }
}

/// `uuid/<a>/<b>/<uniqueid>` with `a`, `b` the id's first two bytes.
/// Cyrus creates nothing below a mailbox directory, so deeper is Unowned.
pub(super) fn classify_uuid(below: &[&[u8]]) -> DirRole {
    match below {
        [a, b, id] if a.len() == 1 && b.len() == 1 && is_uniqueid_of(id, a[0], b[0]) => {
            DirRole::UuidMailbox
        }
        _ => DirRole::Unowned,
    }
}

/// Shorter ids cannot be real: Cyrus needs two bytes for the hash alone.
pub(super) fn is_uniqueid_of(id: &[u8], a: u8, b: u8) -> bool {
    id.len() >= 3 && id[0] == a && id[1] == b
}

/// `domain/[<d>/]<domain>/<mailbox part>`. A single-byte component right
/// after `domain/` that has something below it is the hash letter: a
/// one-character mail domain does not exist in practice.
pub(super) fn classify_domain(below: &[&[u8]]) -> DirRole {
    let unhashed = match below {
        [hash, _, ..] if hash.len() == 1 => &below[1..],
        _ => below,
    };
    match unhashed.split_first() {
        Some((domain, mailbox)) => mailbox_role(Some(&*String::from_utf8_lossy(domain)), mailbox),
        None => DirRole::Unowned,
    }
}

/// The part below the partition root (or the domain directory):
/// `[<h>/]<box>/<box>...`.
pub(super) fn mailbox_role(tenant: Option<&str>, parts: &[&[u8]]) -> DirRole {
    let Some(boxes) = strip_hash_dir(parts) else {
        return DirRole::Unowned;
    };
    match folder_from_boxes(boxes) {
        Ok(folder) => DirRole::Folder(FolderRef {
            tenant: tenant.map(str::to_string),
            folder,
        }),
        Err(_) => DirRole::Unowned,
    }
}

/// Removes the `hashimapspool` letter. The rule is structural: a leading
/// single-byte component is a hash directory; alone it is an intermediate
/// (`None`). `user/a` is safe because its first component is `user`. The
/// one misreading is a one-letter top-level shared mailbox in a spool
/// without hashing (`a/b` reads as shared `b`).
pub(super) fn strip_hash_dir<'p, 'a>(parts: &'p [&'a [u8]]) -> Option<&'p [&'a [u8]]> {
    match parts {
        [] => None,
        [hash] if hash.len() == 1 => None,
        [hash, boxes @ ..] if hash.len() == 1 => Some(boxes),
        _ => Some(parts),
    }
}

/// Name components (on-disk directory names, or an internal name split at
/// `.`; both use `^` for a dot) → external folder name. Deleted mailboxes
/// are charged to the mailbox they were deleted from, so Cyrus's rename
/// into `DELETED` never moves usage and is never refused.
pub(super) fn folder_from_boxes(boxes: &[&[u8]]) -> Result<String, &'static str> {
    let boxes = strip_deleted(boxes)?;
    match boxes {
        [] => Err("empty name"),
        [b"user"] => Err("\"user\" without a user name"),
        _ => join_boxes(boxes),
    }
}

/// `DELETED.<name>.<HEX>` → `<name>`. Without the stamp it is an
/// intermediate directory of the `DELETED` tree.
pub(super) fn strip_deleted<'p, 'a>(boxes: &'p [&'a [u8]]) -> Result<&'p [&'a [u8]], &'static str> {
    match boxes {
        [prefix, inner @ .., stamp] if *prefix == DELETED_PREFIX => {
            if inner.is_empty() || !is_hex_stamp(stamp) {
                Err("DELETED name without its timestamp")
            } else {
                Ok(inner)
            }
        }
        [prefix] if *prefix == DELETED_PREFIX => Err("DELETED without a name"),
        _ => Ok(boxes),
    }
}

/// Cyrus's `%X` of a `time_t`: upper-case hex.
pub(super) fn is_hex_stamp(stamp: &[u8]) -> bool {
    (1..=16).contains(&stamp.len())
        && stamp
            .iter()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(b))
}

pub(super) fn join_boxes(boxes: &[&[u8]]) -> Result<String, &'static str> {
    let mut folder = String::with_capacity(boxes.iter().map(|b| b.len() + 1).sum());
    for (index, component) in boxes.iter().enumerate() {
        if index > 0 {
            folder.push('/');
        }
        push_component(&mut folder, component)?;
    }
    Ok(folder)
}

/// Appends one name component with `^` restored to `.`. Rejects what would
/// make the folder name ambiguous or path-like. Non-UTF-8 bytes (Cyrus names
/// are modified UTF-7, so never seen from Cyrus) are replaced rather than
/// refused, so such a directory is still charged.
pub(super) fn push_component(folder: &mut String, component: &[u8]) -> Result<(), &'static str> {
    if component.is_empty() {
        return Err("empty name component");
    }
    if component.iter().any(|&b| b == b'/' || b == 0) {
        return Err("'/' or NUL inside a name component");
    }
    let restored = String::from_utf8_lossy(component).replace('^', ".");
    if restored == "." || restored == ".." {
        return Err("'.' or '..' name component");
    }
    folder.push_str(&restored);
    Ok(())
}
