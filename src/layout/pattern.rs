//! Pattern layouts (`{tenant}/{mailbox}/**`) for maildir-style stores.

use super::*;

/// `"{tenant}/{mailbox}/**"`, `"vmail/{tenant}/{mailbox}/Maildir/**"`:
/// literal segments match exactly, `*` matches any one segment, `{tenant}`
/// and `{mailbox}` capture one segment each, `**` may end the pattern.
///
/// Directories above the `{mailbox}` depth are Unowned; the directory at
/// that depth is the folder. With a trailing `**` *everything* below it is
/// the folder too, whether or not it follows the segments written after
/// `{mailbox}` (a user's whole directory is charged, leaving no uncharged
/// corner). Without `**`, only directories along those segments are.
#[derive(Clone, Debug)]
pub(super) struct PatternLayout {
    pub(super) segments: Vec<PatternSegment>,
    pub(super) mailbox_index: usize,
    pub(super) whole_subtree: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum PatternSegment {
    Literal(Box<[u8]>),
    AnyOne,
    Tenant,
    Mailbox,
}

impl PatternLayout {
    pub(super) fn parse(pattern: &str) -> Result<PatternLayout, String> {
        let mut texts: Vec<&str> = pattern.trim_matches('/').split('/').collect();
        let whole_subtree = texts.last() == Some(&"**");
        if whole_subtree {
            texts.pop();
        }
        let segments = texts
            .iter()
            .map(|text| parse_pattern_segment(text))
            .collect::<Result<Vec<_>, _>>()?;
        let position = |wanted: &PatternSegment| segments.iter().position(|s| s == wanted);
        let count = |wanted: &PatternSegment| segments.iter().filter(|s| *s == wanted).count();
        let mailbox_index = position(&PatternSegment::Mailbox)
            .ok_or_else(|| format!("pattern {pattern:?} has no {{mailbox}}"))?;
        if count(&PatternSegment::Mailbox) > 1 || count(&PatternSegment::Tenant) > 1 {
            return Err(format!(
                "pattern {pattern:?} repeats {{tenant}} or {{mailbox}}"
            ));
        }
        if position(&PatternSegment::Tenant).is_some_and(|t| t > mailbox_index) {
            return Err(format!(
                "pattern {pattern:?}: {{tenant}} must come before {{mailbox}}"
            ));
        }
        Ok(PatternLayout {
            segments,
            mailbox_index,
            whole_subtree,
        })
    }

    pub(super) fn classify(&self, parts: &[&[u8]]) -> DirRole {
        if parts.len() <= self.mailbox_index || !self.below_mailbox_fits(parts) {
            return DirRole::Unowned;
        }
        let mut tenant = None;
        let mut mailbox = None;
        for (segment, part) in self.segments.iter().zip(parts).take(self.mailbox_index + 1) {
            match segment {
                PatternSegment::Literal(literal) if **literal != **part => return DirRole::Unowned,
                PatternSegment::Literal(_) | PatternSegment::AnyOne => {}
                PatternSegment::Tenant => tenant = Some(*part),
                PatternSegment::Mailbox => mailbox = Some(*part),
            }
        }
        let captured = [tenant, mailbox];
        // A hidden directory at a captured depth is a tool's, not a customer's.
        if captured.iter().flatten().any(|part| part.starts_with(b".")) {
            return DirRole::Unowned;
        }
        DirRole::Folder(FolderRef {
            tenant: tenant.map(|t| String::from_utf8_lossy(t).into_owned()),
            folder: String::from_utf8_lossy(mailbox.unwrap_or_default()).into_owned(),
        })
    }

    /// The captured tenant of a directory at or below `{tenant}`, if the
    /// literal segments up to it match.
    pub(super) fn tenant_of<'a>(&self, parts: &[&'a [u8]]) -> Option<&'a [u8]> {
        let index = self
            .segments
            .iter()
            .position(|s| *s == PatternSegment::Tenant)?;
        let matches = self
            .segments
            .iter()
            .zip(parts)
            .all(|(segment, part)| match segment {
                PatternSegment::Literal(literal) => **literal == **part,
                _ => true,
            });
        (matches && parts.len() > index).then(|| parts[index])
    }

    pub(super) fn below_mailbox_fits(&self, parts: &[&[u8]]) -> bool {
        if self.whole_subtree {
            return true;
        }
        let below = &parts[self.mailbox_index + 1..];
        let expected = &self.segments[self.mailbox_index + 1..];
        below.len() <= expected.len()
            && below
                .iter()
                .zip(expected)
                .all(|(part, segment)| match segment {
                    PatternSegment::Literal(literal) => **literal == **part,
                    _ => true,
                })
    }
}

pub(super) fn parse_pattern_segment(text: &str) -> Result<PatternSegment, String> {
    match text {
        "{tenant}" => Ok(PatternSegment::Tenant),
        "{mailbox}" => Ok(PatternSegment::Mailbox),
        "*" => Ok(PatternSegment::AnyOne),
        "" | "." | ".." => Err(format!("invalid pattern segment {text:?}")),
        _ if text.contains(['{', '}', '*', '?', '\0']) => {
            Err(format!("unsupported pattern segment {text:?}"))
        }
        _ => Ok(PatternSegment::Literal(text.as_bytes().into())),
    }
}
