//! Value conversions: each returns the problem in plain words, bad value included.

use super::*;

pub(super) fn expected(what: &str, found: &DeValue) -> String {
    format!("expected {what}, found {}", describe_value(found))
}

pub(super) fn describe_value(value: &DeValue) -> String {
    match value {
        DeValue::String(s) => format!("string {s:?}"),
        DeValue::Integer(i) => format!("integer {i}"),
        DeValue::Float(f) => format!("float {f}"),
        DeValue::Boolean(b) => format!("boolean {b}"),
        DeValue::Datetime(d) => format!("date-time {d}"),
        DeValue::Array(_) => "an array".to_string(),
        DeValue::Table(_) => "a table".to_string(),
    }
}

pub(super) fn string(value: &DeValue) -> Result<String, String> {
    match value {
        DeValue::String(s) => Ok(s.to_string()),
        other => Err(expected("a string", other)),
    }
}

pub(super) fn non_empty_string(value: &DeValue) -> Result<String, String> {
    match string(value)? {
        s if s.is_empty() => Err("must not be empty".to_string()),
        s => Ok(s),
    }
}

pub(super) fn io_uring_mode(value: &DeValue) -> Result<IoUringMode, String> {
    let s = string(value).map_err(|_| expected("\"auto\", \"on\" or \"off\"", value))?;
    IoUringMode::parse(&s)
        .ok_or_else(|| format!("expected \"auto\", \"on\" or \"off\", found \"{s}\""))
}

pub(super) fn boolean(value: &DeValue) -> Result<bool, String> {
    match value {
        DeValue::Boolean(b) => Ok(*b),
        other => Err(expected("true or false", other)),
    }
}

pub(super) fn integer(value: &DeValue) -> Result<i64, String> {
    match value {
        DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix())
            .map_err(|_| format!("integer {i} is out of range")),
        other => Err(expected("an integer", other)),
    }
}

/// An integer in `min..=max`, converted to the field's type.
pub(super) fn integer_in<T: TryFrom<i64>>(
    min: i64,
    max: i64,
) -> impl Fn(&DeValue) -> Result<T, String> {
    move |value| {
        let n = integer(value)?;
        if !(min..=max).contains(&n) {
            let range = if max == i64::MAX {
                format!("at least {min}")
            } else {
                format!("from {min} to {max}")
            };
            return Err(format!("{n} is out of range: expected an integer {range}"));
        }
        T::try_from(n).map_err(|_| format!("{n} is out of range"))
    }
}

/// A byte size: a string for [`parse_size`] or a plain integer of bytes.
pub(super) fn size(value: &DeValue) -> Result<Limit, String> {
    match value {
        DeValue::String(s) => parse_size(s),
        DeValue::Integer(_) => integer_in(0, i64::MAX)(value).map(Some),
        other => Err(expected("a size such as \"5G\" or \"none\"", other)),
    }
}

/// A size where unlimited makes no sense.
pub(super) fn finite_size(value: &DeValue) -> Result<u64, String> {
    size(value)?.ok_or_else(|| "\"none\" is not allowed here; use 0 for no allowance".to_string())
}

pub(super) fn absolute_path(value: &DeValue) -> Result<PathBuf, String> {
    let path = PathBuf::from(string(value)?);
    if !path.is_absolute() {
        return Err(format!(
            "{:?} is not an absolute path (a relative path would depend on the daemon's working directory)",
            path.display().to_string()
        ));
    }
    Ok(path)
}

pub(super) fn uid_list(value: &DeValue) -> Result<Vec<u32>, String> {
    let DeValue::Array(items) = value else {
        return Err(expected("an array of uids, e.g. [1000]", value));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            integer_in(0, u32::MAX.into())(item.get_ref())
                .map_err(|problem| format!("item {}: {problem}", index + 1))
        })
        .collect()
}

/// `[quota] metadata_names`: an array of file-name globs (see
/// [`crate::layout::NameGlob::parse`]); duplicates are refused as a likely
/// typo.
pub(super) fn metadata_globs(value: &DeValue) -> Result<Vec<String>, String> {
    let DeValue::Array(items) = value else {
        return Err(expected(
            "an array of file-name globs, e.g. [\"myindex.*\"]",
            value,
        ));
    };
    let mut globs: Vec<String> = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_problem = |problem: String| format!("item {}: {problem}", index + 1);
        let glob = string(item.get_ref()).map_err(item_problem)?;
        crate::layout::NameGlob::parse(&glob).map_err(item_problem)?;
        if globs.contains(&glob) {
            return Err(item_problem(format!("{glob:?} is listed twice")));
        }
        globs.push(glob);
    }
    Ok(globs)
}

/// An IP address and port, e.g. "127.0.0.1:9587" or "[::1]:9587" (no host
/// names: the daemon must not depend on name resolution to start).
pub(super) fn socket_address(value: &DeValue) -> Result<std::net::SocketAddr, String> {
    let text = string(value)?;
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not an IP address with a port, e.g. \"127.0.0.1:9587\" or \"[::1]:9587\""
        )
    })
}
