//! `cyrus.header`: the mailbox name a UUID directory belongs to.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderError {
    /// Shorter than the magic, or no complete data line after it.
    TooShort,
    BadMagic,
    /// Well-formed, but no mailbox name (pre-3.6 format, or no `N`).
    NoName,
    /// The data line or the name in it is malformed.
    BadName(String),
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::TooShort => f.write_str("cyrus.header is truncated"),
            HeaderError::BadMagic => f.write_str("not a cyrus.header (bad magic)"),
            HeaderError::NoName => f.write_str("cyrus.header carries no mailbox name"),
            HeaderError::BadName(why) => write!(f, "cyrus.header has a bad mailbox name: {why}"),
        }
    }
}

impl std::error::Error for HeaderError {}

/// Everything spoolfs may want from a `cyrus.header`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CyrusHeader {
    /// The mailbox (`N`).
    pub folder: FolderRef,
    /// `I`: should equal the uuid directory's name.
    pub uniqueid: Option<String>,
    /// `Q`: Cyrus's own quota root, when set and valid.
    pub quotaroot: Option<FolderRef>,
}

/// Parses a `cyrus.header` into the mailbox it belongs to. `default_tenant`
/// applies to internal names without `domain!`. Linear in the input, never
/// panics, never recurses on nesting.
pub fn parse_cyrus_header(
    bytes: &[u8],
    default_tenant: Option<&str>,
) -> Result<FolderRef, HeaderError> {
    parse_cyrus_header_full(bytes, default_tenant).map(|header| header.folder)
}

/// Like [`parse_cyrus_header`], also returning the uniqueid and quota root.
pub fn parse_cyrus_header_full(
    bytes: &[u8],
    default_tenant: Option<&str>,
) -> Result<CyrusHeader, HeaderError> {
    let data = header_data(bytes)?;
    if !data.starts_with(b"%") {
        // Pre-3.6 "quotaroot TAB uniqueid" line: the name is not recorded.
        return Err(HeaderError::NoName);
    }
    let fields = DlistFields::parse(data).map_err(|why| HeaderError::BadName(why.to_string()))?;
    let name = fields.name.ok_or(HeaderError::NoName)?;
    let folder = folder_from_internal_name(&name, default_tenant)?;
    let uniqueid = fields
        .uniqueid
        .and_then(|id| String::from_utf8(id.into_owned()).ok());
    let quotaroot = fields
        .quotaroot
        .and_then(|q| folder_from_internal_name(&q, default_tenant).ok());
    Ok(CyrusHeader {
        folder,
        uniqueid,
        quotaroot,
    })
}

/// The bytes after the magic; Cyrus requires the data line to end in `\n`.
pub(super) fn header_data(bytes: &[u8]) -> Result<&[u8], HeaderError> {
    if bytes.len() < CYRUS_HEADER_MAGIC.len() {
        return Err(HeaderError::TooShort);
    }
    let (magic, data) = bytes.split_at(CYRUS_HEADER_MAGIC.len());
    if magic != CYRUS_HEADER_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    if !data.contains(&b'\n') {
        return Err(HeaderError::TooShort);
    }
    Ok(data)
}

/// `[domain!]box.box...` → folder. Strict: must be UTF-8.
pub(super) fn folder_from_internal_name(
    name: &[u8],
    default_tenant: Option<&str>,
) -> Result<FolderRef, HeaderError> {
    let bad = |why: &str| HeaderError::BadName(format!("{}: {why}", quoted_excerpt(name)));
    let name_str = std::str::from_utf8(name).map_err(|_| bad("not UTF-8"))?;
    let (tenant, local) = match name_str.split_once('!') {
        Some((domain, local)) => (Some(validate_domain(domain).map_err(bad)?), local),
        None => (default_tenant.map(str::to_string), name_str),
    };
    let boxes: Vec<&[u8]> = local.as_bytes().split(|&b| b == b'.').collect();
    let folder = folder_from_boxes(&boxes).map_err(bad)?;
    Ok(FolderRef { tenant, folder })
}

pub(super) fn validate_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() || domain == "." || domain == ".." {
        return Err("empty or dot domain");
    }
    if domain.contains(['/', '\0']) {
        return Err("'/' or NUL in domain");
    }
    Ok(domain.to_string())
}

/// For error messages: escaped, and short even for a megabyte of garbage.
pub(super) fn quoted_excerpt(name: &[u8]) -> String {
    const MAX: usize = 120;
    let shown = String::from_utf8_lossy(&name[..name.len().min(MAX)]);
    let ellipsis = if name.len() > MAX { "..." } else { "" };
    format!("{shown:?}{ellipsis}")
}

/// The top-level fields of a cyrus.header dlist `%(K V K V ...)`.
#[derive(Default)]
pub(super) struct DlistFields<'a> {
    pub(super) name: Option<Cow<'a, [u8]>>,
    pub(super) uniqueid: Option<Cow<'a, [u8]>>,
    pub(super) quotaroot: Option<Cow<'a, [u8]>>,
}

impl<'a> DlistFields<'a> {
    pub(super) fn parse(data: &'a [u8]) -> Result<DlistFields<'a>, &'static str> {
        let mut scanner = Scanner {
            bytes: data,
            pos: 0,
        };
        scanner.expect(b"%(")?;
        let mut fields = DlistFields::default();
        while scanner.peek() != Some(b')') {
            let key = scanner.string()?.ok_or("NIL key")?;
            scanner.expect(b" ")?;
            let value = scanner.value()?;
            fields.store(&key, value);
            if scanner.peek() == Some(b' ') {
                scanner.pos += 1;
            }
        }
        Ok(fields)
    }

    /// Like Cyrus, the first `N` and `I` win and the last `Q` wins.
    pub(super) fn store(&mut self, key: &[u8], value: Option<Cow<'a, [u8]>>) {
        match key {
            b"N" if self.name.is_none() => self.name = value,
            b"I" if self.uniqueid.is_none() => self.uniqueid = value,
            b"Q" => self.quotaroot = value,
            _ => {}
        }
    }
}

/// A cursor over dlist text (Cyrus `dlist_parsesax` grammar). Every step
/// consumes at least one byte or fails, so scanning always terminates.
pub(super) struct Scanner<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    pub(super) fn expect(&mut self, wanted: &[u8]) -> Result<(), &'static str> {
        if self.bytes[self.pos..].starts_with(wanted) {
            self.pos += wanted.len();
            Ok(())
        } else {
            Err("malformed dlist")
        }
    }

    /// A value: a string (`None` for NIL), or a nested list, skipped.
    pub(super) fn value(&mut self) -> Result<Option<Cow<'a, [u8]>>, &'static str> {
        match self.peek() {
            Some(b'(' | b'%') => self.skip_list().map(|()| None),
            _ => self.string(),
        }
    }

    /// Skips a `(...)` or `%(...)` with a depth counter instead of recursion,
    /// so hostile nesting cannot exhaust the stack.
    pub(super) fn skip_list(&mut self) -> Result<(), &'static str> {
        let mut depth = 0usize;
        loop {
            match self.peek().ok_or("unterminated list")? {
                b'%' => self.expect(b"%(").map(|()| depth += 1)?,
                b'(' => {
                    self.pos += 1;
                    depth += 1;
                }
                b')' => {
                    self.pos += 1;
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                b' ' => self.pos += 1,
                _ => {
                    self.string()?;
                }
            }
        }
    }

    /// An atom, `"quoted"` string or `{n+}\r\n` literal; `None` for `NIL`.
    pub(super) fn string(&mut self) -> Result<Option<Cow<'a, [u8]>>, &'static str> {
        match self.peek().ok_or("missing value")? {
            b'"' => self.quoted().map(Some),
            b'{' => self.literal().map(|bytes| Some(Cow::Borrowed(bytes))),
            _ => self.atom(),
        }
    }

    pub(super) fn atom(&mut self) -> Result<Option<Cow<'a, [u8]>>, &'static str> {
        let start = self.pos;
        let rest = &self.bytes[start..];
        let len = rest
            .iter()
            .position(|&b| matches!(b, b' ' | b'(' | b')' | b'\n' | b'\r'))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err("empty atom");
        }
        self.pos += len;
        let atom = &rest[..len];
        Ok((atom != b"NIL").then_some(Cow::Borrowed(atom)))
    }

    /// A backslash quotes the next byte, whatever it is (as in Cyrus).
    pub(super) fn quoted(&mut self) -> Result<Cow<'a, [u8]>, &'static str> {
        self.pos += 1;
        let start = self.pos;
        let mut unescaped: Option<Vec<u8>> = None;
        while let Some(byte) = self.peek() {
            self.pos += 1;
            match byte {
                b'"' => {
                    let raw = &self.bytes[start..self.pos - 1];
                    return Ok(unescaped.map_or(Cow::Borrowed(raw), Cow::Owned));
                }
                b'\\' => {
                    let escaped = self.peek().ok_or("unterminated quoted string")?;
                    self.pos += 1;
                    let buf =
                        unescaped.get_or_insert_with(|| self.bytes[start..self.pos - 2].to_vec());
                    buf.push(escaped);
                }
                _ => {
                    if let Some(buf) = unescaped.as_mut() {
                        buf.push(byte);
                    }
                }
            }
        }
        Err("unterminated quoted string")
    }

    pub(super) fn literal(&mut self) -> Result<&'a [u8], &'static str> {
        self.pos += 1;
        let digits = self.bytes[self.pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let len: usize = std::str::from_utf8(&self.bytes[self.pos..self.pos + digits])
            .ok()
            .and_then(|d| d.parse().ok())
            .ok_or("bad literal length")?;
        self.pos += digits;
        if self.peek() == Some(b'+') {
            self.pos += 1;
        }
        self.expect(b"}\r\n")?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len());
        let end = end.ok_or("literal longer than the file")?;
        let literal = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(literal)
    }
}
