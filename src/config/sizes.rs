//! Sizes: bytes with K/M/G/T suffixes (powers of 1024), and "none".

use super::*;

/// Parses a byte size: `"none"` (unlimited), a whole number of bytes, or a
/// whole number with a unit `K`, `M`, `G` or `T` (powers of 1024; any case;
/// `B` / `iB` may follow, so `5G`, `5GB`, `5GiB` and `5gib` are equal).
pub fn parse_size(s: &str) -> Result<Limit, String> {
    let text = s.trim();
    if text.is_empty() {
        return Err("empty size; expected e.g. \"1024\", \"5G\" or \"none\"".to_string());
    }
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    if text.starts_with('-') {
        return Err(format!("{s:?}: sizes cannot be negative"));
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    if digits.is_empty() {
        return Err(format!(
            "{s:?} is not a size: expected a number with an optional unit (e.g. \"5G\") or \"none\""
        ));
    }
    if unit.starts_with(['.', ',']) {
        return Err(format!(
            "{s:?}: only whole numbers are allowed (e.g. \"1536M\", not \"1.5G\")"
        ));
    }
    let multiplier = unit_multiplier(unit.trim_start()).ok_or_else(|| {
        format!("{s:?} has unknown unit {unit:?}; use K, M, G or T (powers of 1024)")
    })?;
    let too_large = || format!("{s:?} is too large (the maximum is about 16 exbibytes)");
    let number: u64 = digits.parse().map_err(|_| too_large())?;
    number
        .checked_mul(multiplier)
        .map(Some)
        .ok_or_else(too_large)
}

pub(super) fn unit_multiplier(unit: &str) -> Option<u64> {
    let power = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 1,
        "M" | "MB" | "MIB" => 2,
        "G" | "GB" | "GIB" => 3,
        "T" | "TB" | "TIB" => 4,
        _ => return None,
    };
    Some(1024u64.pow(power))
}

/// Human form for reports: `"512B"`, `"1.5K"`, `"1.0G"` (powers of 1024).
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["K", "M", "G", "T", "P", "E"];
    if bytes < 1024 {
        return format!("{bytes}B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    // 1023.95 and above would print as "1024.0", so move up a unit instead.
    while value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1}{}", UNITS[unit])
}

pub(super) fn format_limit(limit: Limit) -> String {
    limit.map_or_else(|| "none".to_string(), format_size)
}
