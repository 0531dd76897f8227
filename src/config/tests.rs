//! Configuration parsing, validation and description.

use super::*;

const FULL_EXAMPLE: &str = r#"
default_partition = "fast"

[partitions]
fast = "/srv/ssd/spool"
slow = "/srv/hdd/spool"

[[route]]
match = "archive/**"
partition = "slow"

[[route]]
match = "mail/domain/*/example.com/**"
partition = "fast"

[mount]
threads = 8
allow_other = false
ttl_secs = 30
passthrough = false
open_handles = false
xattrs = false
held_descriptors = 5000
io_uring = "off"
handoff = false

[layout]
kind = "cyrus"
partition_depth = 2
default_tenant = "example.net"

[quota]
mailbox_limit = "1G"
tenant_limit = "none"
warn_percent = 80
metadata_grace = 2097152
metadata_names = ["cyrus.myindex", "*.idx"]

[tenants."example.org"]
limit = "5G"
mailbox_limit = "2G"

[tenants."example.com"]
limit = "none"

[mailboxes."user/john@example.org"]
limit = "1G"

[control]
admin_uids = [1000, 1001]
state_dir = "/var/lib/spoolfs-test"

[metrics]
listen = "127.0.0.1:9587"
per_mailbox = true
mailbox_percent = 75
"#;

const GIB: u64 = 1024 * MIB;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("/etc/spoolfs.toml"))
}

/// `extra` followed by the minimal valid `[partitions]`.
fn parse_with(extra: &str) -> Result<Config, ConfigError> {
    parse(&format!(
        "{extra}\n[partitions]\nfast = \"/a\"\nslow = \"/b\"\n"
    ))
}

/// Asserts that parsing fails on `key` with a problem mentioning `words`.
fn assert_error(result: Result<Config, ConfigError>, key: &str, words: &str) {
    let error = result.expect_err("expected a configuration error");
    assert_eq!(error.key, key, "wrong key in: {error}");
    assert!(error.problem.contains(words), "{words:?} not in: {error}");
    assert_eq!(error.file, Path::new("/etc/spoolfs.toml"));
}

fn partition(name: &str, path: &str) -> PartitionConfig {
    PartitionConfig {
        name: name.to_string(),
        path: PathBuf::from(path),
    }
}

fn route(pattern: &str, partition: &str) -> RouteConfig {
    RouteConfig {
        pattern: pattern.to_string(),
        partition: partition.to_string(),
    }
}

#[test]
fn full_example_parses_to_the_expected_config() {
    let expected = Config {
        source: PathBuf::from("/etc/spoolfs.toml"),
        default_partition: "fast".to_string(),
        partitions: vec![
            partition("fast", "/srv/ssd/spool"),
            partition("slow", "/srv/hdd/spool"),
        ],
        routes: vec![
            route("archive/**", "slow"),
            route("mail/domain/*/example.com/**", "fast"),
        ],
        mount: MountConfig {
            threads: 8,
            allow_other: false,
            ttl_secs: 30,
            passthrough: false,
            open_handles: false,
            xattrs: false,
            held_descriptors: Some(5000),
            io_uring: IoUringMode::Off,
            handoff: false,
        },
        layout: LayoutConfig::Cyrus {
            partition_depth: 2,
            default_tenant: Some("example.net".to_string()),
            metadata_names: vec!["cyrus.myindex".to_string(), "*.idx".to_string()],
        },
        quota: QuotaConfig {
            mailbox_limit: Some(GIB),
            tenant_limit: None,
            warn_percent: 80,
            metadata_grace: 2 * MIB,
        },
        tenants: BTreeMap::from([
            (
                "example.org".to_string(),
                TenantConfig {
                    limit: Some(Some(5 * GIB)),
                    mailbox_limit: Some(Some(2 * GIB)),
                },
            ),
            (
                "example.com".to_string(),
                TenantConfig {
                    limit: Some(None),
                    mailbox_limit: None,
                },
            ),
        ]),
        mailboxes: BTreeMap::from([(
            "user/john@example.org".to_string(),
            MailboxConfig { limit: Some(GIB) },
        )]),
        control: ControlConfig {
            admin_uids: vec![1000, 1001],
            state_dir: PathBuf::from("/var/lib/spoolfs-test"),
        },
    };
    assert_eq!(parse(FULL_EXAMPLE).unwrap(), expected);
    let metrics = MetricsConfig::parse(FULL_EXAMPLE, Path::new("/etc/spoolfs.toml"));
    assert_eq!(
        metrics.unwrap(),
        MetricsConfig {
            listen: Some("127.0.0.1:9587".parse().unwrap()),
            per_mailbox: true,
            mailbox_percent: 75,
        }
    );
}

#[test]
fn minimal_file_gets_the_defaults() {
    let config = parse("[partitions]\nonly = \"/srv/spool\"\n").unwrap();
    assert_eq!(config.default_partition, "only");
    assert_eq!(config.partitions, vec![partition("only", "/srv/spool")]);
    assert!(config.routes.is_empty());
    assert_eq!(config.mount, MountConfig::default());
    assert_eq!(config.mount.threads, 4);
    assert!(config.mount.allow_other && config.mount.passthrough);
    assert_eq!(config.mount.ttl_secs, 60);
    assert_eq!(config.layout, LayoutConfig::None);
    assert_eq!(config.quota.mailbox_limit, None);
    assert_eq!(config.quota.tenant_limit, None);
    assert_eq!(config.quota.warn_percent, 90);
    assert_eq!(config.quota.metadata_grace, MIB);
    assert!(config.tenants.is_empty() && config.mailboxes.is_empty());
    assert!(config.control.admin_uids.is_empty());
    assert_eq!(config.control.state_dir, Path::new("/var/lib/spoolfs"));
    let metrics = metrics_of("[partitions]\nonly = \"/srv/spool\"\n");
    assert_eq!(metrics, MetricsConfig::default());
    assert_eq!(metrics.listen, None);
    assert!(!metrics.per_mailbox);
    assert_eq!(metrics.mailbox_percent, 80);
}

fn metrics_of(text: &str) -> MetricsConfig {
    MetricsConfig::parse(text, Path::new("/etc/spoolfs.toml")).unwrap()
}

#[test]
fn metrics_listen_takes_ipv4_and_ipv6_addresses() {
    let v4 = metrics_of("[metrics]\nlisten = \"0.0.0.0:9587\"\n");
    assert_eq!(v4.listen, Some("0.0.0.0:9587".parse().unwrap()));
    let v6 = metrics_of("[metrics]\nlisten = \"[::1]:9000\"\n");
    assert_eq!(v6.listen, Some("[::1]:9000".parse().unwrap()));
    assert_eq!(
        v6.describe(),
        "metrics: http://[::1]:9000/metrics, series for mailboxes at 80% of their limit or more"
    );
    assert_eq!(metrics_of("").describe(), "metrics: off");
    // The whole file's parse checks the section too.
    assert!(parse_with("[metrics]\nlisten = \"[::1]:9000\"\n").is_ok());
}

#[test]
fn metrics_errors_name_the_key() {
    let no_port = parse_with("[metrics]\nlisten = \"127.0.0.1\"\n");
    assert_error(no_port, "metrics.listen", "not an IP address with a port");
    let host_name = parse_with("[metrics]\nlisten = \"localhost:9587\"\n");
    assert_error(
        host_name,
        "metrics.listen",
        "\"localhost:9587\" is not an IP address",
    );
    let number = parse_with("[metrics]\nlisten = 9587\n");
    assert_error(
        number,
        "metrics.listen",
        "expected a string, found integer 9587",
    );
    let percent = parse_with("[metrics]\nmailbox_percent = 101\n");
    assert_error(percent, "metrics.mailbox_percent", "from 0 to 100");
    let flag = parse_with("[metrics]\nper_mailbox = \"yes\"\n");
    assert_error(flag, "metrics.per_mailbox", "expected true or false");
    let unknown = parse_with("[metrics]\nport = 9587\n");
    assert_error(unknown, "metrics.port", "unknown key");
    let not_table = parse_with("metrics = \"on\"\n");
    assert_error(not_table, "metrics", "expected a table");
}

#[test]
fn partitions_keep_file_order_not_alphabetical_order() {
    let config = parse("[partitions]\nzeta = \"/z\"\nalpha = \"/a\"\nmid = \"/m\"\n").unwrap();
    let names: Vec<&str> = config.partitions.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["zeta", "alpha", "mid"]);
    assert_eq!(config.default_partition, "zeta");
}

#[test]
fn partitions_as_dotted_keys_and_inline_table_work_too() {
    let dotted = parse("partitions.b = \"/b\"\npartitions.a = \"/a\"\n").unwrap();
    assert_eq!(dotted.partitions[0].name, "b");
    let inline = parse("partitions = { b = \"/b\", a = \"/a\" }\n").unwrap();
    assert_eq!(inline.partitions[0].name, "b");
}

#[test]
fn sizes_may_be_integers_with_underscores() {
    let config = parse_with("[quota]\nmailbox_limit = 1_048_576\n").unwrap();
    assert_eq!(config.quota.mailbox_limit, Some(MIB));
}

#[test]
fn pattern_layout_parses() {
    let config = parse_with("[layout]\nkind = \"pattern\"\npattern = \"{tenant}/{mailbox}/**\"\n");
    assert_eq!(
        config.unwrap().layout,
        LayoutConfig::Pattern {
            pattern: "{tenant}/{mailbox}/**".to_string(),
            metadata_names: Vec::new(),
        }
    );
}

#[test]
fn layout_patterns_that_layout_supports_are_accepted() {
    for pattern in [
        "{mailbox}",
        "{tenant}/{mailbox}",
        "vmail/*/{tenant}/{mailbox}/Maildir/**",
    ] {
        let text = format!("[layout]\nkind = \"pattern\"\npattern = \"{pattern}\"\n");
        assert!(parse_with(&text).is_ok(), "{pattern:?} rejected");
    }
}

#[test]
fn cyrus_layout_defaults() {
    let config = parse_with("[layout]\nkind = \"cyrus\"\n").unwrap();
    assert_eq!(
        config.layout,
        LayoutConfig::Cyrus {
            partition_depth: 1,
            default_tenant: None,
            metadata_names: Vec::new(),
        }
    );
}

#[test]
fn syntax_errors_give_line_and_column() {
    let error = parse("[partitions]\nfast = \"/a\"\nslow = \n").unwrap_err();
    assert_eq!(error.key, "(syntax)");
    assert!(error.problem.starts_with("line 3, column"), "{error}");
}

#[test]
fn duplicate_keys_are_syntax_errors() {
    assert_error(
        parse("[partitions]\na = \"/a\"\na = \"/b\"\n"),
        "(syntax)",
        "line 3",
    );
}

#[test]
fn partitions_are_required() {
    assert_error(parse(""), "partitions", "at least one partition");
    assert_error(
        parse("[partitions]\n"),
        "partitions",
        "at least one partition",
    );
    assert_error(
        parse("partitions = 3\n"),
        "partitions",
        "expected a table, found integer 3",
    );
}

#[test]
fn partition_paths_must_be_absolute_strings() {
    assert_error(
        parse("[partitions]\nfast = \"srv/ssd\"\n"),
        "partitions.fast",
        "\"srv/ssd\" is not an absolute path",
    );
    assert_error(
        parse("[partitions]\nfast = 1\n"),
        "partitions.fast",
        "expected a string, found integer 1",
    );
}

#[test]
fn default_partition_must_exist() {
    assert_error(
        parse_with("default_partition = \"ssd\"\n"),
        "default_partition",
        "\"ssd\" is not a partition (partitions: fast, slow)",
    );
}

#[test]
fn unknown_keys_are_named() {
    assert_error(parse_with("colour = \"red\"\n"), "colour", "unknown key");
    assert_error(
        parse_with("[mount]\nthread = 4\n"),
        "mount.thread",
        "unknown key",
    );
    assert_error(
        parse_with("[[route]]\nmatch = \"a\"\npartition = \"fast\"\nprio = 1\n"),
        "route[1].prio",
        "unknown key",
    );
    assert_error(
        parse_with("[tenants.\"example.org\"]\nlimt = \"5G\"\n"),
        "tenants.example.org.limt",
        "unknown key",
    );
    assert_error(
        parse_with("[mailboxes.\"user/x\"]\nlimit = \"1G\"\nwarn = 1\n"),
        "mailboxes.user/x.warn",
        "unknown key",
    );
    assert_error(
        parse_with("[control]\nadmins = [1]\n"),
        "control.admins",
        "unknown key",
    );
    assert_error(
        parse_with("[quota]\nlimit = 1\n"),
        "quota.limit",
        "unknown key",
    );
    assert_error(
        parse_with("[layout]\nstyle = \"x\"\n"),
        "layout.style",
        "unknown key",
    );
}

#[test]
fn route_errors_name_the_route_counting_from_one() {
    let good = "[[route]]\nmatch = \"a/**\"\npartition = \"slow\"\n";
    assert_error(
        parse_with(&format!(
            "{good}[[route]]\nmatch = \"b/**\"\npartition = \"tape\"\n"
        )),
        "route[2].partition",
        "\"tape\" is not a partition",
    );
    assert_error(
        parse_with(&format!(
            "{good}[[route]]\nmatch = \"/b\"\npartition = \"slow\"\n"
        )),
        "route[2].match",
        "starts with '/'",
    );
    assert_error(
        parse_with("[[route]]\npartition = \"slow\"\n"),
        "route[1].match",
        "missing",
    );
    assert_error(
        parse_with("[[route]]\nmatch = \"a\"\n"),
        "route[1].partition",
        "missing",
    );
    assert_error(
        parse_with("route = \"a\"\n"),
        "route",
        "expected an array of tables",
    );
    assert_error(
        parse_with("route = [1]\n"),
        "route[1]",
        "expected a table, found integer 1",
    );
}

#[test]
fn mount_values_are_checked() {
    assert_error(
        parse_with("[mount]\nthreads = 0\n"),
        "mount.threads",
        "0 is out of range: expected an integer from 1 to 64",
    );
    assert_error(
        parse_with("[mount]\nthreads = 65\n"),
        "mount.threads",
        "65 is out of range",
    );
    assert_error(
        parse_with("[mount]\nthreads = \"4\"\n"),
        "mount.threads",
        "expected an integer, found string \"4\"",
    );
    assert_error(
        parse_with("[mount]\nallow_other = \"yes\"\n"),
        "mount.allow_other",
        "expected true or false",
    );
    assert_error(
        parse_with("[mount]\nttl_secs = -1\n"),
        "mount.ttl_secs",
        "-1 is out of range: expected an integer at least 0",
    );
    assert_error(
        parse_with("[mount]\npassthrough = 1\n"),
        "mount.passthrough",
        "found integer 1",
    );
    assert_error(
        parse_with("mount = []\n"),
        "mount",
        "expected a table, found an array",
    );
}

#[test]
fn layout_values_are_checked() {
    assert_error(
        parse_with("[layout]\nkind = \"dovecot\"\n"),
        "layout.kind",
        "unknown layout \"dovecot\"",
    );
    assert_error(
        parse_with("[layout]\nkind = \"pattern\"\n"),
        "layout.pattern",
        "missing",
    );
    assert_error(
        parse_with("[layout]\nkind = \"pattern\"\npattern = \"{tenant}/**\"\n"),
        "layout.pattern",
        "must contain {mailbox}",
    );
    for (pattern, problem) in [
        ("{user}/{mailbox}", "segment \"{user}\" is not supported"),
        (
            "{tenant}x/{mailbox}",
            "segment \"{tenant}x\" is not supported",
        ),
        ("**/{mailbox}", "segment \"**\" is not supported"),
        ("{tenant}/{mailbox}/?", "segment \"?\" is not supported"),
        ("{mailbox}/{mailbox}", "repeats"),
        ("{mailbox}/{tenant}", "{tenant} must come before {mailbox}"),
    ] {
        let text = format!("[layout]\nkind = \"pattern\"\npattern = \"{pattern}\"\n");
        assert_error(parse_with(&text), "layout.pattern", problem);
    }
    assert_error(
        parse_with("[layout]\nkind = \"pattern\"\npattern = \"/{mailbox}\"\n"),
        "layout.pattern",
        "starts with '/'",
    );
    assert_error(
        parse_with("[layout]\npartition_depth = 1\n"),
        "layout.partition_depth",
        "only used with kind = \"cyrus\", but kind is \"none\"",
    );
    assert_error(
        parse_with("[layout]\nkind = \"cyrus\"\npattern = \"{mailbox}\"\n"),
        "layout.pattern",
        "only used with kind = \"pattern\"",
    );
    assert_error(
        parse_with("[layout]\nkind = \"cyrus\"\npartition_depth = -1\n"),
        "layout.partition_depth",
        "out of range",
    );
    assert_error(
        parse_with("[layout]\nkind = \"cyrus\"\ndefault_tenant = \"\"\n"),
        "layout.default_tenant",
        "must not be empty",
    );
}

#[test]
fn quota_values_are_checked() {
    assert_error(
        parse_with("[quota]\nmailbox_limit = \"10X\"\n"),
        "quota.mailbox_limit",
        "unknown unit \"X\"",
    );
    assert_error(
        parse_with("[quota]\ntenant_limit = -5\n"),
        "quota.tenant_limit",
        "-5 is out of range",
    );
    assert_error(
        parse_with("[quota]\ntenant_limit = 1.5\n"),
        "quota.tenant_limit",
        "found float 1.5",
    );
    assert_error(
        parse_with("[quota]\nwarn_percent = 0\n"),
        "quota.warn_percent",
        "from 1 to 100",
    );
    assert_error(
        parse_with("[quota]\nwarn_percent = 101\n"),
        "quota.warn_percent",
        "101 is out of range",
    );
    assert_error(
        parse_with("[quota]\nmetadata_grace = \"none\"\n"),
        "quota.metadata_grace",
        "\"none\" is not allowed here",
    );
}

#[test]
fn tenant_and_mailbox_values_are_checked() {
    assert_error(
        parse_with("[tenants.\"example.org\"]\nlimit = \"5Q\"\n"),
        "tenants.example.org.limit",
        "\"5Q\" has unknown unit \"Q\"",
    );
    assert_error(
        parse_with("[tenants]\n\"example.org\" = \"5G\"\n"),
        "tenants.example.org",
        "expected a table, found string \"5G\"",
    );
    assert_error(
        parse_with("[mailboxes.\"user/x\"]\n"),
        "mailboxes.user/x.limit",
        "missing",
    );
    assert_error(
        parse_with("[mailboxes.\"user/x\"]\nlimit = true\n"),
        "mailboxes.user/x.limit",
        "found boolean true",
    );
    assert_error(
        parse_with("[tenants.\"\"]\nlimit = 1\n"),
        "tenants.",
        "empty name",
    );
}

#[test]
fn control_values_are_checked() {
    assert_error(
        parse_with("[control]\nadmin_uids = [1000, -1]\n"),
        "control.admin_uids",
        "item 2: -1 is out of range",
    );
    assert_error(
        parse_with("[control]\nadmin_uids = [4294967296]\n"),
        "control.admin_uids",
        "out of range",
    );
    assert_error(
        parse_with("[control]\nadmin_uids = 1000\n"),
        "control.admin_uids",
        "expected an array of uids",
    );
    assert_error(
        parse_with("[control]\nstate_dir = \"state\"\n"),
        "control.state_dir",
        "not an absolute path",
    );
}

#[test]
fn dates_are_wrong_types_not_crashes() {
    assert_error(
        parse_with("[quota]\nmailbox_limit = 1979-05-27\n"),
        "quota.mailbox_limit",
        "found date-time 1979-05-27",
    );
}

#[test]
fn load_reports_an_unreadable_file() {
    let error = Config::load(Path::new("/nonexistent/spoolfs.toml")).unwrap_err();
    assert_eq!(error.key, "(file)");
    assert_eq!(error.file, Path::new("/nonexistent/spoolfs.toml"));
    assert!(error.problem.contains("cannot read"), "{error}");
}

#[test]
fn load_reads_and_parses_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spoolfs.toml");
    fs::write(&path, FULL_EXAMPLE).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.source, path);
    assert_eq!(config.routes.len(), 2);
}

#[test]
fn builtin_config_matches_the_documented_default() {
    let config = Config::builtin(Path::new("/data"));
    assert_eq!(config.source, Path::new("<built-in>"));
    assert_eq!(
        config.partitions,
        vec![
            partition("fast", "/data/fast"),
            partition("slow", "/data/slow")
        ]
    );
    assert_eq!(config.default_partition, "fast");
    assert_eq!(config.routes, vec![route("archive/**", "slow")]);
    assert_eq!(
        config.layout,
        LayoutConfig::Cyrus {
            partition_depth: 1,
            default_tenant: None,
            metadata_names: Vec::new(),
        }
    );
    assert_eq!(config.quota, QuotaConfig::default());
    assert_eq!(config.control.state_dir, Path::new("/data/state"));
    assert!(config.control.admin_uids.is_empty());
}

#[test]
fn parse_size_accepts_numbers_units_and_none() {
    assert_eq!(parse_size("none"), Ok(None));
    assert_eq!(parse_size("NONE"), Ok(None));
    assert_eq!(parse_size("0"), Ok(Some(0)));
    assert_eq!(parse_size("123"), Ok(Some(123)));
    assert_eq!(parse_size("123B"), Ok(Some(123)));
    assert_eq!(parse_size("1K"), Ok(Some(1024)));
    assert_eq!(parse_size("5M"), Ok(Some(5 * MIB)));
    assert_eq!(parse_size("2G"), Ok(Some(2 * GIB)));
    assert_eq!(parse_size("1T"), Ok(Some(1024 * GIB)));
    assert_eq!(parse_size("2g"), Ok(Some(2 * GIB)));
    assert_eq!(parse_size("2GB"), Ok(Some(2 * GIB)));
    assert_eq!(parse_size("2GiB"), Ok(Some(2 * GIB)));
    assert_eq!(parse_size("2gib"), Ok(Some(2 * GIB)));
    assert_eq!(parse_size(" 2 G "), Ok(Some(2 * GIB)));
    assert_eq!(parse_size("16777215T"), Ok(Some(16_777_215 * 1024 * GIB)));
}

#[test]
fn parse_size_explains_bad_input() {
    let problem = |s: &str| parse_size(s).unwrap_err();
    assert!(problem("").contains("empty size"));
    assert!(problem("  ").contains("empty size"));
    assert!(problem("-1").contains("cannot be negative"));
    assert!(problem("10X").contains("unknown unit \"X\""));
    assert!(problem("10iB").contains("unknown unit"));
    assert!(problem("1.5G").contains("whole numbers"));
    assert!(problem("G").contains("expected a number"));
    assert!(problem("unlimited").contains("expected a number"));
    assert!(problem("16777216T").contains("too large"));
    assert!(problem("99999999999999999999").contains("too large"));
    assert_eq!(parse_size(&u64::MAX.to_string()), Ok(Some(u64::MAX)));
}

#[test]
fn format_size_is_short_and_human() {
    assert_eq!(format_size(0), "0B");
    assert_eq!(format_size(1023), "1023B");
    assert_eq!(format_size(1024), "1.0K");
    assert_eq!(format_size(1536), "1.5K");
    assert_eq!(format_size(GIB), "1.0G");
    assert_eq!(format_size(5 * GIB), "5.0G");
    assert_eq!(format_size(MIB - 1), "1.0M");
    assert_eq!(format_size(u64::MAX), "16.0E");
}

#[test]
fn describe_lists_everything_an_operator_checks() {
    let text = parse(FULL_EXAMPLE).unwrap().describe();
    for expected in [
        "configuration: /etc/spoolfs.toml",
        "  fast  /srv/ssd/spool  (default)",
        "  slow  /srv/hdd/spool",
        "  archive/** -> slow",
        "  mail/domain/*/example.com/** -> fast",
        "  (anything else) -> fast",
        "default partition: fast",
        "layout: cyrus (partition depth 2, default tenant example.net); metadata files \
         (grace): cyrus.*, *.NEW, plus configured: cyrus.myindex, *.idx",
        "mailbox limit 1.0G, tenant limit none, warn at 80%, metadata grace 2.0M",
        "  example.org: limit 5.0G, mailbox limit 2.0G",
        "  example.com: limit none, mailbox limit (quota default)",
        "  user/john@example.org: limit 1.0G",
        "mount: 8 threads, allow_other no, ttl 30s, passthrough no, open handles no, xattrs no",
        "control: state dir /var/lib/spoolfs-test, admins: root and uids 1000, 1001",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    let archive = text.find("archive/**").unwrap();
    assert!(
        archive < text.find("mail/domain").unwrap(),
        "routes out of order"
    );
}

// --- check_filesystem --------------------------------------------------

/// A config whose partitions are the given directories.
fn config_with_partitions(paths: &[&Path]) -> Config {
    let mut config = Config::builtin(Path::new("/unused"));
    config.partitions = paths
        .iter()
        .enumerate()
        .map(|(i, path)| PartitionConfig {
            name: format!("p{i}"),
            path: path.to_path_buf(),
        })
        .collect();
    config.routes.clear();
    config.default_partition = "p0".to_string();
    config
}

fn make_dirs(root: &Path, names: &[&str]) -> Vec<PathBuf> {
    names
        .iter()
        .map(|name| {
            let dir = root.join(name);
            fs::create_dir_all(&dir).unwrap();
            dir
        })
        .collect()
}

fn assert_fs_error(result: Result<(), ConfigError>, key: &str, words: &str) {
    let error = result.expect_err("expected a filesystem check error");
    assert_eq!(error.key, key, "wrong key in: {error}");
    assert!(error.problem.contains(words), "{words:?} not in: {error}");
}

#[test]
fn check_filesystem_accepts_separate_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["fast", "slow", "mnt"]);
    let config = config_with_partitions(&[&dirs[0], &dirs[1]]);
    assert_eq!(config.check_filesystem(None), Ok(()));
    assert_eq!(config.check_filesystem(Some(&dirs[2])), Ok(()));
}

#[test]
fn check_filesystem_rejects_a_missing_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["fast"]);
    let config = config_with_partitions(&[&dirs[0], &tmp.path().join("gone")]);
    assert_fs_error(
        config.check_filesystem(None),
        "partitions.p1",
        "does not exist",
    );
}

#[test]
fn check_filesystem_rejects_a_file_as_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"x").unwrap();
    let config = config_with_partitions(&[&file]);
    assert_fs_error(
        config.check_filesystem(None),
        "partitions.p0",
        "is not a directory",
    );
}

#[test]
fn check_filesystem_rejects_the_same_directory_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["fast"]);
    let alias = tmp.path().join("alias");
    std::os::unix::fs::symlink(&dirs[0], &alias).unwrap();
    let config = config_with_partitions(&[&dirs[0], &alias]);
    assert_fs_error(
        config.check_filesystem(None),
        "partitions.p1",
        "is the same directory as partition \"p0\"",
    );
}

#[test]
fn check_filesystem_rejects_nested_partitions_either_way() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["outer", "outer/inner"]);
    let inner_second = config_with_partitions(&[&dirs[0], &dirs[1]]);
    assert_fs_error(
        inner_second.check_filesystem(None),
        "partitions.p1",
        "is inside partition \"p0\"",
    );
    let outer_second = config_with_partitions(&[&dirs[1], &dirs[0]]);
    assert_fs_error(
        outer_second.check_filesystem(None),
        "partitions.p1",
        "contains partition \"p0\"",
    );
}

#[test]
fn check_filesystem_treats_sibling_prefixes_as_separate() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["spool", "spool2"]);
    let config = config_with_partitions(&[&dirs[0], &dirs[1]]);
    assert_eq!(config.check_filesystem(None), Ok(()));
}

#[test]
fn check_filesystem_rejects_partitions_overlapping_the_mount_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["data", "data/mnt", "mnt", "mnt/part"]);
    let contains = config_with_partitions(&[&dirs[0]]);
    assert_fs_error(
        contains.check_filesystem(Some(&dirs[1])),
        "partitions.p0",
        "contains the mount point",
    );
    let inside = config_with_partitions(&[&dirs[3]]);
    assert_fs_error(
        inside.check_filesystem(Some(&dirs[2])),
        "partitions.p0",
        "is inside the mount point",
    );
    let same = config_with_partitions(&[&dirs[2]]);
    assert_fs_error(
        same.check_filesystem(Some(&dirs[2])),
        "partitions.p0",
        "is the same directory as the mount point",
    );
}

#[test]
fn check_filesystem_rejects_a_state_dir_inside_the_mount_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dirs = make_dirs(tmp.path(), &["part", "mnt"]);
    let mut config = config_with_partitions(&[&dirs[0]]);
    config.control.state_dir = dirs[1].join("state");
    assert_fs_error(
        config.check_filesystem(Some(&dirs[1])),
        "control.state_dir",
        "is inside the mount point",
    );
    config.control.state_dir = tmp.path().to_path_buf();
    assert_eq!(config.check_filesystem(Some(&dirs[1])), Ok(()));
}

// --- [quota] metadata_names ---------------------------------------------

#[test]
fn metadata_names_extend_the_layouts_own() {
    let config = parse_with(
        "[layout]\nkind = \"pattern\"\npattern = \"{tenant}/{mailbox}/Maildir/**\"\n\
         [quota]\nmetadata_names = [\"courierimapuiddb\", \"*.idx\"]\n",
    )
    .unwrap();
    assert_eq!(
        config.layout.metadata_names(),
        ["courierimapuiddb".to_string(), "*.idx".to_string()]
    );
    let text = config.describe();
    assert!(
        text.contains(
            "layout: pattern {tenant}/{mailbox}/Maildir/**; metadata files (grace): dovecot.*, \
             dovecot-*, subscriptions, subscriptions.lock, maildirfolder"
        ),
        "{text}"
    );
    assert!(
        text.contains("plus configured: courierimapuiddb, *.idx"),
        "{text}"
    );
    let empty = parse_with("[layout]\nkind = \"cyrus\"\n[quota]\nmetadata_names = []\n").unwrap();
    assert!(empty.layout.metadata_names().is_empty());
}

#[test]
fn metadata_names_are_checked() {
    let cyrus = |names: &str| {
        parse_with(&format!(
            "[layout]\nkind = \"cyrus\"\n[quota]\nmetadata_names = {names}\n"
        ))
    };
    let key = "quota.metadata_names";
    assert_error(
        cyrus("\"cyrus.*\""),
        key,
        "expected an array of file-name globs",
    );
    assert_error(
        cyrus("[1]"),
        key,
        "item 1: expected a string, found integer 1",
    );
    assert_error(cyrus("[\"a\", \"\"]"), key, "item 2: empty glob");
    assert_error(cyrus("[\"sub/x\"]"), key, "item 1: \"sub/x\" contains '/'");
    assert_error(cyrus("[\"..\"]"), key, "is not a file name");
    assert_error(
        cyrus("[\"*\"]"),
        key,
        "message data would get the metadata grace",
    );
    assert_error(cyrus("[\"?*?\"]"), key, "matches (almost) every file name");
    assert_error(
        cyrus("[\"a.idx\", \"a.idx\"]"),
        key,
        "item 2: \"a.idx\" is listed twice",
    );
    assert_error(
        cyrus(&format!("[\"{}\"]", "x".repeat(256))),
        key,
        "longer than a file name",
    );
    assert_error(
        parse_with("[quota]\nmetadata_names = [\"x.idx\"]\n"),
        key,
        "has no effect with [layout] kind = \"none\"",
    );
    assert!(parse_with("[quota]\nmetadata_names = []\n").is_ok());
}

#[test]
fn the_packaged_example_configuration_parses() {
    let text = include_str!("../../packaging/spoolfs.toml");
    let path = Path::new("/etc/spoolfs/spoolfs.toml");
    let config = Config::parse(text, path).unwrap();
    assert_eq!(config.default_partition, "ssd");
    assert_eq!(config.control.state_dir, Path::new("/var/lib/spoolfs"));
    assert_eq!(
        MetricsConfig::parse(text, path).unwrap(),
        MetricsConfig::default()
    );
}
