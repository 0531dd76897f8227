//! `[cluster]`: one tenant limit across several hosts, escrowed in etcd
//! (see `src/cluster/`). Absent, the daemon is single-host exactly as
//! before.
//!
//! Like `[metrics]`, read with [`ClusterConfig::of`] rather than kept in
//! [`Config`], so that the many places that build a `Config` field by field
//! (tests above all) need not change; [`Config::parse`] validates the
//! section all the same, so `spoolfs check` reports its errors.

use std::time::Duration;

use super::*;

#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// etcd v3 endpoints, e.g. `http://10.0.0.5:2379`.
    pub etcd_endpoints: Vec<String>,
    /// This host's name in the cluster; unique per host.
    pub host_id: String,
    /// Every key lives under it; one cluster per prefix. No trailing `/`.
    pub prefix: String,
    /// Bytes of a tenant's limit a host takes from the shared pool at once.
    pub grant: u64,
    /// Lease on a host's spare headroom: a dead host's spare comes back
    /// within this many seconds.
    pub lease_ttl_secs: u64,
    /// How long a write that needs more than this host holds may wait for
    /// more before `EDQUOT`.
    pub wait: Duration,
    /// Spare headroom not drawn on for this long goes back to the pool.
    pub idle_return_secs: u64,
}

pub(super) const DEFAULT_GRANT: u64 = 64 * MIB;
pub(super) const DEFAULT_LEASE_TTL_SECS: u64 = 30;
pub(super) const DEFAULT_WAIT_MS: u64 = 2000;
pub(super) const DEFAULT_IDLE_RETURN_SECS: u64 = 60;

impl ClusterConfig {
    /// The `[cluster]` section of the file `config` was loaded from; `None`
    /// (single host) for the built-in configuration or without the section.
    pub fn of(config: &Config) -> Result<Option<ClusterConfig>, ConfigError> {
        if config.source == Path::new(BUILTIN_SOURCE) {
            return Ok(None);
        }
        ClusterConfig::parse(&read(&config.source)?, &config.source)
    }

    /// The `[cluster]` section of configuration text (the rest unchecked).
    pub fn parse(text: &str, source: &Path) -> Result<Option<ClusterConfig>, ConfigError> {
        let document = DeTable::parse(text).map_err(|e| syntax_error(text, source, &e))?;
        parse_cluster(&Section::top(document.get_ref(), source))
    }

    /// One line for `spoolfs check`.
    pub fn describe(cluster: &Option<ClusterConfig>) -> String {
        let Some(c) = cluster else {
            return "cluster: off (tenant limits are this host's alone)".to_string();
        };
        format!(
            "cluster: host {:?} under prefix {:?} on etcd {}; grant {}, lease {} s, wait {} ms, idle return {} s",
            c.host_id,
            c.prefix,
            c.etcd_endpoints.join(", "),
            format_size(c.grant),
            c.lease_ttl_secs,
            c.wait.as_millis(),
            c.idle_return_secs
        )
    }
}

pub(super) fn parse_cluster(top: &Section) -> Result<Option<ClusterConfig>, ConfigError> {
    if top.get("cluster").is_none() {
        return Ok(None);
    }
    let section = top.section("cluster")?;
    section.allow_only(&[
        "etcd_endpoints",
        "host_id",
        "prefix",
        "grant",
        "lease_ttl_secs",
        "wait_ms",
        "idle_return_secs",
    ])?;
    let grant = section
        .value("grant", finite_size)?
        .unwrap_or(DEFAULT_GRANT);
    if grant == 0 {
        return Err(section.error("grant", "must be more than 0 bytes"));
    }
    let wait_ms: u64 = section
        .value("wait_ms", integer_in(0, 600_000))?
        .unwrap_or(DEFAULT_WAIT_MS);
    Ok(Some(ClusterConfig {
        etcd_endpoints: section.required("etcd_endpoints", endpoint_list)?,
        host_id: section.required("host_id", host_id)?,
        prefix: section.required("prefix", key_prefix)?,
        grant,
        // etcd's own minimum lease is a few seconds; below 2 the keep-alive
        // (every third of it) could not keep up.
        lease_ttl_secs: section
            .value("lease_ttl_secs", integer_in(2, 86_400))?
            .unwrap_or(DEFAULT_LEASE_TTL_SECS),
        wait: Duration::from_millis(wait_ms),
        idle_return_secs: section
            .value("idle_return_secs", integer_in(1, 86_400))?
            .unwrap_or(DEFAULT_IDLE_RETURN_SECS),
    }))
}

/// A non-empty array of `http://HOST:PORT` (or https) URLs.
pub(super) fn endpoint_list(value: &DeValue) -> Result<Vec<String>, String> {
    let DeValue::Array(items) = value else {
        return Err(expected(
            "an array of etcd URLs, e.g. [\"http://10.0.0.5:2379\"]",
            value,
        ));
    };
    if items.is_empty() {
        return Err("must list at least one etcd endpoint".to_string());
    }
    items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            let url = string(item.get_ref()).map_err(|p| format!("item {}: {p}", index + 1))?;
            let rest = url
                .strip_prefix("http://")
                .or_else(|| url.strip_prefix("https://"));
            match rest {
                Some(hostport)
                    if hostport
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
                {
                    Ok(url)
                }
                _ => Err(format!(
                    "item {}: {url:?} is not an etcd URL such as \"http://10.0.0.5:2379\"",
                    index + 1
                )),
            }
        })
        .collect()
}

/// A host id becomes one etcd key segment: no `/`, printable, not empty.
pub(super) fn host_id(value: &DeValue) -> Result<String, String> {
    let id = non_empty_string(value)?;
    if id.contains('/') || id.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{id:?}: a host id is one key segment: no '/', spaces or control characters"
        ));
    }
    Ok(id)
}

/// An absolute key prefix such as `/spoolfs/prod`; a trailing `/` is dropped.
pub(super) fn key_prefix(value: &DeValue) -> Result<String, String> {
    let prefix = non_empty_string(value)?;
    if !prefix.starts_with('/') || prefix.trim_end_matches('/').is_empty() {
        return Err(format!(
            "{prefix:?}: expected a key prefix starting with '/', e.g. \"/spoolfs/prod\""
        ));
    }
    Ok(prefix.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTITIONS: &str = "[partitions]\nfast = \"/a\"\n";
    const CLUSTER: &str = r#"[cluster]
etcd_endpoints = ["http://10.0.0.5:2379", "https://10.0.0.6:2379"]
host_id = "backend1"
prefix = "/spoolfs/prod/"
"#;

    fn cluster(extra: &str) -> Result<Option<ClusterConfig>, ConfigError> {
        let text = format!("{PARTITIONS}{CLUSTER}{extra}");
        // The whole file is validated too, as `spoolfs check` does.
        Config::parse(&text, Path::new("/etc/spoolfs.toml"))?;
        ClusterConfig::parse(&text, Path::new("/etc/spoolfs.toml"))
    }

    /// Fails on `key` with a problem mentioning `words`, naming the file.
    fn assert_refused(text: &str, key: &str, words: &str) {
        let full = format!("{text}\n{PARTITIONS}");
        let source = Path::new("/etc/spoolfs.toml");
        for error in [
            Config::parse(&full, source)
                .map(drop)
                .expect_err(&format!("refused: {text}")),
            ClusterConfig::parse(&full, source)
                .map(drop)
                .expect_err(&format!("refused: {text}")),
        ] {
            assert_eq!(error.key, key, "{error}");
            assert!(error.problem.contains(words), "{words:?} not in: {error}");
            assert_eq!(error.file, source);
        }
    }

    #[test]
    fn absent_means_single_host() {
        let source = Path::new("/etc/spoolfs.toml");
        assert_eq!(ClusterConfig::parse(PARTITIONS, source).unwrap(), None);
        assert_eq!(
            ClusterConfig::of(&Config::builtin(Path::new("/d"))).unwrap(),
            None
        );
    }

    #[test]
    fn defaults_fill_what_is_not_given() {
        let c = cluster("").unwrap().unwrap();
        assert_eq!(c.etcd_endpoints.len(), 2);
        assert_eq!(c.host_id, "backend1");
        assert_eq!(c.prefix, "/spoolfs/prod", "trailing / dropped");
        assert_eq!(c.grant, 64 * MIB);
        assert_eq!(c.lease_ttl_secs, 30);
        assert_eq!(c.wait, Duration::from_secs(2));
        assert_eq!(c.idle_return_secs, 60);
    }

    #[test]
    fn every_key_is_read() {
        let c =
            cluster("grant = \"8M\"\nlease_ttl_secs = 3\nwait_ms = 500\nidle_return_secs = 5\n")
                .unwrap()
                .unwrap();
        assert_eq!(c.grant, 8 * MIB);
        assert_eq!(c.lease_ttl_secs, 3);
        assert_eq!(c.wait, Duration::from_millis(500));
        assert_eq!(c.idle_return_secs, 5);
        assert!(ClusterConfig::describe(&Some(c)).contains("host \"backend1\""));
    }

    #[test]
    fn errors_name_the_key() {
        assert_refused(
            "[cluster]\nhost_id = \"a\"\nprefix = \"/p\"\n",
            "cluster.etcd_endpoints",
            "required",
        );
        let endpoints = |list: &str| {
            format!("[cluster]\netcd_endpoints = {list}\nhost_id = \"a\"\nprefix = \"/p\"\n")
        };
        assert_refused(&endpoints("[]"), "cluster.etcd_endpoints", "at least one");
        assert_refused(
            &endpoints("\"http://a:1\""),
            "cluster.etcd_endpoints",
            "an array of etcd URLs",
        );
        assert_refused(
            &endpoints("[\"10.0.0.5:2379\"]"),
            "cluster.etcd_endpoints",
            "item 1",
        );
        assert_refused(
            &endpoints("[\"http://a\"]"),
            "cluster.etcd_endpoints",
            "not an etcd URL",
        );
        let base = "[cluster]\netcd_endpoints = [\"http://a:1\"]\n";
        assert_refused(
            &format!("{base}prefix = \"/p\"\n"),
            "cluster.host_id",
            "required",
        );
        assert_refused(
            &format!("{base}host_id = \"a/b\"\nprefix = \"/p\"\n"),
            "cluster.host_id",
            "no '/'",
        );
        assert_refused(
            &format!("{base}host_id = \"a\"\nprefix = \"p\"\n"),
            "cluster.prefix",
            "starting with '/'",
        );
        assert_refused(
            &format!("{base}host_id = \"a\"\nprefix = \"/\"\n"),
            "cluster.prefix",
            "starting with '/'",
        );
        assert_refused(
            &format!("{CLUSTER}grant = 0\n"),
            "cluster.grant",
            "more than 0",
        );
        assert_refused(
            &format!("{CLUSTER}grant = \"none\"\n"),
            "cluster.grant",
            "not allowed",
        );
        assert_refused(
            &format!("{CLUSTER}lease_ttl_secs = 1\n"),
            "cluster.lease_ttl_secs",
            "from 2",
        );
        assert_refused(
            &format!("{CLUSTER}wait_ms = -1\n"),
            "cluster.wait_ms",
            "from 0",
        );
        assert_refused(
            &format!("{CLUSTER}endpoints = 1\n"),
            "cluster.endpoints",
            "unknown key",
        );
        assert_refused("cluster = 1\n", "cluster", "expected a table");
    }
}
