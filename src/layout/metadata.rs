//! Which file names are metadata (may exceed a full limit by
//! `metadata_grace`), per layout, plus the operator's `[quota]
//! metadata_names` globs.
//!
//! Each daemon rewrites its metadata through a temporary or lock file and a
//! rename, also while deleting mail; a full mailbox must still be able to do
//! that. Message data never matches these names.
//!
//! * Cyrus (`imap/mailbox.c`): `cyrus.header`, `cyrus.index`, `cyrus.cache`,
//!   `cyrus.squat`, `cyrus.annotations`, … and their `*.NEW` copies.
//! * Dovecot (pattern layouts; read from Dovecot 2.3's documentation and the
//!   files a real 2.3.19 writes in maildir and mdbox stores): index files
//!   `dovecot.index`, `.index.log`, `.index.cache`, `.list.index*`,
//!   `.mailbox.log`, mdbox `storage/dovecot.map.index*`, their `.tmp` and
//!   `.newlock` files; control files `dovecot-uidlist`, `dovecot-keywords`,
//!   `dovecot-uidvalidity[.<hex>]` and their `.lock`; `subscriptions` with
//!   its dot-lock `subscriptions.lock` (written and renamed over it on every
//!   SUBSCRIBE/UNSUBSCRIBE); `maildirfolder` (empty marker of a Maildir++
//!   folder); `maildirsize` (Maildir++ quota, with its `.lock`); the LMTP
//!   duplicate database `.dovecot.lda-dupes` and its `.lock`.

/// Cyrus's metadata: `cyrus.*` and the `*.NEW` write-then-rename copies.
pub const CYRUS_METADATA: &[&str] = &["cyrus.*", "*.NEW"];

/// Dovecot's (and so the pattern layout's) metadata.
pub const DOVECOT_METADATA: &[&str] = &[
    "dovecot.*",
    "dovecot-*",
    "subscriptions",
    "subscriptions.lock",
    "maildirfolder",
    "maildirsize",
    "maildirsize.lock",
    ".dovecot.lda-dupes",
    ".dovecot.lda-dupes.lock",
];

/// A glob over one file name: `*` any run of bytes (also none), `?` any one
/// byte, everything else itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameGlob(Box<[u8]>);

impl NameGlob {
    /// Checks a configured glob; the problem in plain words.
    pub fn parse(glob: &str) -> Result<NameGlob, String> {
        if glob.is_empty() {
            return Err("empty glob".to_string());
        }
        if glob.contains('/') {
            return Err(format!(
                "{glob:?} contains '/': a metadata glob matches one file name, not a path"
            ));
        }
        if glob.contains('\0') {
            return Err(format!("{glob:?} contains a NUL byte"));
        }
        if glob == "." || glob == ".." {
            return Err(format!("{glob:?} is not a file name"));
        }
        if glob.len() > 255 {
            return Err(format!("{glob:?} is longer than a file name (255 bytes)"));
        }
        if glob.bytes().all(|b| b == b'*' || b == b'?') {
            return Err(format!(
                "{glob:?} matches (almost) every file name, so message data would get the \
                 metadata grace too; name the metadata files, e.g. \"myindex.*\""
            ));
        }
        Ok(NameGlob(glob.as_bytes().into()))
    }

    /// Built-in globs are known to be valid.
    pub(super) fn builtin(glob: &str) -> NameGlob {
        NameGlob(glob.as_bytes().into())
    }

    pub fn matches(&self, name: &[u8]) -> bool {
        let glob = &self.0;
        // Iterative wildcard match: on a mismatch, let the last `*` take
        // one more byte. O(glob × name) at worst, both ≤ 255 bytes.
        let (mut g, mut n) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while n < name.len() {
            match glob.get(g) {
                Some(b'*') => {
                    star = Some((g, n));
                    g += 1;
                }
                Some(&c) if c == b'?' || c == name[n] => {
                    g += 1;
                    n += 1;
                }
                _ => match star {
                    Some((star_g, star_n)) => {
                        g = star_g + 1;
                        n = star_n + 1;
                        star = Some((star_g, star_n + 1));
                    }
                    None => return false,
                },
            }
        }
        glob[g..].iter().all(|&c| c == b'*')
    }
}
