//! Spool path → partition: the ordered routes of the configuration.
//!
//! Pure and allocation-free per lookup: `partition_for` runs on every
//! `mkdir`/`create`, so patterns are split into segments once, at parse time.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::config::Config;

/// A glob over spool paths (relative to the mount root, `/`-separated,
/// `""` = the root itself; bytes need not be UTF-8).
///
/// Segment rules: `**` as a whole segment matches zero or more segments;
/// `*` matches any run of bytes within one segment; `?` matches one byte
/// within a segment; everything else is literal (there are no escapes or
/// character classes). So `archive/**` matches `archive`, `archive/x` and
/// `archive/x/y`, but not `archived`.
#[derive(Clone, Debug)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
}

#[derive(Clone, Debug, PartialEq)]
enum Segment {
    /// `**`: zero or more whole path segments.
    AnyDepth,
    /// No wildcard: compared byte for byte (the common, fast case).
    Literal(Box<[u8]>),
    /// Contains `*` or `?`, matched within one path segment.
    Glob(Box<[u8]>),
}

impl Pattern {
    /// Parses and validates a pattern. Rejects the empty pattern, a leading
    /// `/`, empty segments (`a//b`, trailing `/`) and `.` / `..` segments,
    /// none of which can match a normalized spool path.
    pub fn parse(text: &str) -> Result<Pattern, String> {
        if text.is_empty() {
            return Err("empty pattern".to_string());
        }
        if text.starts_with('/') {
            return Err(format!(
                "pattern {text:?} starts with '/'; patterns are relative to the spool root"
            ));
        }
        let segments = text
            .split('/')
            .map(|segment| parse_segment(text, segment))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Pattern {
            text: text.to_string(),
            segments,
        })
    }

    /// Whether `spool_path` (relative to the spool root) matches. Empty
    /// components are ignored, so `""` is the root and `a/` equals `a`.
    pub fn matches(&self, spool_path: &Path) -> bool {
        let path_segments = spool_path
            .as_os_str()
            .as_bytes()
            .split(|&b| b == b'/')
            .filter(|segment| !segment.is_empty());
        match_segments(&self.segments, path_segments)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn parse_segment(pattern: &str, segment: &str) -> Result<Segment, String> {
    match segment {
        "" => Err(format!("pattern {pattern:?} has an empty segment")),
        "." | ".." => Err(format!(
            "pattern {pattern:?} has a {segment:?} segment, which never matches a spool path"
        )),
        _ if segment.contains('\0') => Err(format!("pattern {pattern:?} contains a NUL byte")),
        "**" => Ok(Segment::AnyDepth),
        _ if segment.contains(['*', '?']) => Ok(Segment::Glob(segment.as_bytes().into())),
        _ => Ok(Segment::Literal(segment.as_bytes().into())),
    }
}

/// Matches pattern segments against path segments. `**` is the only
/// variable-length token, so the classic wildcard algorithm applies: on a
/// mismatch, let the most recent `**` absorb one more path segment and retry
/// from just after it. Remembering only the latest `**` is enough because
/// every other token matches exactly one segment. The path iterator is
/// cloned to backtrack, which copies two slice pointers and never allocates.
fn match_segments<'p, I>(pattern: &[Segment], mut path: I) -> bool
where
    I: Iterator<Item = &'p [u8]> + Clone,
{
    let mut next = 0;
    let mut resume: Option<(usize, I)> = None;
    loop {
        if pattern.get(next) == Some(&Segment::AnyDepth) {
            next += 1;
            resume = Some((next, path.clone()));
            continue;
        }
        let Some(path_segment) = path.next() else {
            return pattern[next..].iter().all(|s| *s == Segment::AnyDepth);
        };
        if pattern.get(next).is_some_and(|s| s.matches(path_segment)) {
            next += 1;
            continue;
        }
        let Some((after_star, star_path)) = resume.as_mut() else {
            return false;
        };
        // The `**` swallows one more segment; retry right after it.
        star_path.next();
        next = *after_star;
        path = star_path.clone();
    }
}

impl Segment {
    /// Whether this single-segment token matches one path segment.
    fn matches(&self, path_segment: &[u8]) -> bool {
        match self {
            Segment::AnyDepth => true,
            Segment::Literal(literal) => **literal == *path_segment,
            Segment::Glob(glob) => glob_matches(glob, path_segment),
        }
    }
}

/// `*` / `?` matching within one segment, by the same single-backtrack
/// algorithm as [`match_segments`] but over bytes.
fn glob_matches(glob: &[u8], text: &[u8]) -> bool {
    let (mut g, mut t) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while t < text.len() {
        match glob.get(g) {
            Some(b'*') => {
                g += 1;
                resume = Some((g, t));
            }
            Some(&b) if b == b'?' || b == text[t] => {
                g += 1;
                t += 1;
            }
            _ => {
                let Some((after_star, star_t)) = resume else {
                    return false;
                };
                // The `*` swallows one more byte; retry right after it.
                g = after_star;
                t = star_t + 1;
                resume = Some((after_star, t));
            }
        }
    }
    glob[g..].iter().all(|&b| b == b'*')
}

/// The configured routes, ready for lookups.
#[derive(Clone, Debug)]
pub struct Router {
    /// `(pattern, index into config.partitions)` in file order.
    routes: Vec<(Pattern, usize)>,
    default_partition: usize,
    partition_count: usize,
}

impl Router {
    /// Builds the router from a parsed, validated `Config`.
    ///
    /// # Panics
    /// If a route pattern does not parse or names an unknown partition, or the
    /// default partition is unknown: `Config::parse` rejects all of these, so
    /// reaching them means the `Config` was built by hand, incorrectly.
    pub fn new(config: &Config) -> Router {
        let routes = config
            .routes
            .iter()
            .map(|route| {
                let pattern = Pattern::parse(&route.pattern)
                    .unwrap_or_else(|e| panic!("unvalidated config: route {e}"));
                (pattern, known_partition(config, &route.partition))
            })
            .collect();
        Router {
            routes,
            default_partition: known_partition(config, &config.default_partition),
            partition_count: config.partitions.len(),
        }
    }

    /// Index into `config.partitions` for a spool path: the first matching
    /// route's partition, else the default partition.
    pub fn partition_for(&self, spool_path: &Path) -> usize {
        self.routes
            .iter()
            .find(|(pattern, _)| pattern.matches(spool_path))
            .map_or(self.default_partition, |&(_, partition)| partition)
    }

    pub fn partition_count(&self) -> usize {
        self.partition_count
    }
}

fn known_partition(config: &Config, name: &str) -> usize {
    config
        .partition_index(name)
        .unwrap_or_else(|| panic!("unvalidated config: unknown partition {name:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    fn matches(pattern: &str, path: &str) -> bool {
        Pattern::parse(pattern).unwrap().matches(Path::new(path))
    }

    #[test]
    fn double_star_at_end_matches_the_directory_and_everything_below() {
        assert!(matches("archive/**", "archive"));
        assert!(matches("archive/**", "archive/x"));
        assert!(matches("archive/**", "archive/x/y"));
        assert!(!matches("archive/**", "archived"));
        assert!(!matches("archive/**", "archived/x"));
        assert!(!matches("archive/**", ""));
        assert!(!matches("archive/**", "mail/archive"));
    }

    #[test]
    fn single_star_matches_exactly_one_segment() {
        let p = "mail/domain/*/example.com/**";
        assert!(matches(p, "mail/domain/e/example.com"));
        assert!(matches(p, "mail/domain/e/example.com/u/user/john"));
        assert!(!matches(p, "mail/domain/example.com"));
        assert!(!matches(p, "mail/domain/e/f/example.com"));
        assert!(!matches(p, "mail/domain/e/example.org"));
    }

    #[test]
    fn double_star_in_the_middle() {
        assert!(matches("a/**/z", "a/z"));
        assert!(matches("a/**/z", "a/b/z"));
        assert!(matches("a/**/z", "a/b/c/z"));
        assert!(matches("a/**/z", "a/z/z"));
        assert!(!matches("a/**/z", "a/b/z/c"));
        assert!(!matches("a/**/z", "a"));
        assert!(!matches("a/**/z", "b/z"));
    }

    #[test]
    fn double_star_needs_backtracking_past_a_partial_match() {
        assert!(matches("**/x/y", "x/x/y"));
        assert!(matches("a/**/b/c", "a/b/b/c"));
        assert!(matches("**/a/**/b", "q/a/r/b"));
        assert!(!matches("**/x/y", "x/y/x"));
    }

    #[test]
    fn double_star_alone_matches_everything_including_the_root() {
        assert!(matches("**", ""));
        assert!(matches("**", "a"));
        assert!(matches("**", "a/b/c"));
        assert!(matches("**/**", ""));
    }

    #[test]
    fn root_path_matches_only_patterns_that_can_be_empty() {
        assert!(!matches("a", ""));
        assert!(!matches("*", ""));
        assert!(matches("**", ""));
    }

    #[test]
    fn star_and_question_mark_stay_within_a_segment() {
        assert!(matches("user/j*", "user/john"));
        assert!(matches("user/j*", "user/j"));
        assert!(!matches("user/j*", "user/john/Archive"));
        assert!(matches("user/*n", "user/john"));
        assert!(matches("user/*o*n", "user/john"));
        assert!(!matches("user/*x*", "user/john"));
        assert!(matches("user/j?hn", "user/john"));
        assert!(!matches("user/j?hn", "user/jhn"));
        assert!(matches("*.example.org", "mx.example.org"));
        assert!(!matches("a*b", "a/b"));
    }

    #[test]
    fn glob_backtracks_within_a_segment() {
        assert!(matches("*ab", "aab"));
        assert!(matches("a*a*a", "aaaa"));
        assert!(!matches("a*a*a", "aa"));
        assert!(matches("*?", "x"));
        assert!(!matches("*?", ""));
    }

    #[test]
    fn literal_brackets_and_dots_are_not_special() {
        assert!(matches("a[1]", "a[1]"));
        assert!(!matches("a[1]", "a1"));
        assert!(matches("user/john^doe", "user/john^doe"));
    }

    #[test]
    fn empty_and_trailing_path_components_are_ignored() {
        assert!(matches("a/b", "a//b"));
        assert!(matches("a/b", "a/b/"));
        assert!(matches("a/b", "/a/b"));
    }

    #[test]
    fn non_utf8_path_bytes_match_wildcards_and_fail_literals() {
        let raw = Path::new(OsStr::from_bytes(b"user/j\xffhn/x"));
        assert!(Pattern::parse("user/j?hn/**").unwrap().matches(raw));
        assert!(Pattern::parse("user/*/x").unwrap().matches(raw));
        assert!(!Pattern::parse("user/john/**").unwrap().matches(raw));
    }

    #[test]
    fn question_mark_matches_one_byte_not_one_character() {
        assert!(matches("caf??", "café"));
        assert!(!matches("caf?", "café"));
    }

    #[test]
    fn parse_rejects_malformed_patterns() {
        for bad in [
            "",
            "/archive/**",
            "a//b",
            "a/",
            "./a",
            "a/../b",
            "a/.",
            "a\0b",
        ] {
            assert!(Pattern::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let e = Pattern::parse("a/../b").unwrap_err();
        assert!(e.contains("\"..\""), "{e}");
    }

    #[test]
    fn parse_keeps_the_text() {
        assert_eq!(Pattern::parse("archive/**").unwrap().as_str(), "archive/**");
    }

    fn two_partition_config(routes: &[(&str, &str)]) -> Config {
        let mut config = Config::builtin(Path::new("/data"));
        config.routes = routes
            .iter()
            .map(|&(pattern, partition)| crate::config::RouteConfig {
                pattern: pattern.to_string(),
                partition: partition.to_string(),
            })
            .collect();
        config
    }

    #[test]
    fn router_uses_the_first_matching_route() {
        let config = two_partition_config(&[("archive/old/**", "fast"), ("archive/**", "slow")]);
        let router = Router::new(&config);
        assert_eq!(router.partition_for(Path::new("archive/old/x")), 0);
        assert_eq!(router.partition_for(Path::new("archive/new")), 1);
        assert_eq!(router.partition_count(), 2);
    }

    #[test]
    fn router_falls_back_to_the_default_partition() {
        let mut config = two_partition_config(&[("archive/**", "fast")]);
        config.default_partition = "slow".to_string();
        let router = Router::new(&config);
        assert_eq!(router.partition_for(Path::new("user/john")), 1);
        assert_eq!(router.partition_for(Path::new("")), 1);
        assert_eq!(router.partition_for(Path::new("archive")), 0);
    }

    #[test]
    fn builtin_config_routes_archive_to_slow() {
        let router = Router::new(&Config::builtin(Path::new("/data")));
        assert_eq!(router.partition_for(Path::new("archive/2024")), 1);
        assert_eq!(router.partition_for(Path::new("archived")), 0);
    }

    #[test]
    #[should_panic(expected = "unknown partition")]
    fn router_panics_on_an_unvalidated_config() {
        Router::new(&two_partition_config(&[("a/**", "nowhere")]));
    }
}
