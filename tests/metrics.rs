//! `[metrics] listen`: GET /metrics on a real mount, compared with
//! `spoolfs usage --json` (the same ledger report) after writes.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use common::{Mount, Spec, mkdirs, used};

const JOHN: &str = "mail/domain/e/example.org/j/user/john";
const JANE: &str = "mail/domain/e/example.org/j/user/jane";
const BOB: &str = "mail/domain/e/example.net/b/user/bob";

/// A port free a moment ago, for the daemon to listen on.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// example.org: 1 MiB tenant limit, 100 KiB per mailbox; example.net: no
/// limits. John is filled to 90 % of his limit, Jane to 10 %; Bob has no limit.
fn mount_with_mail(metrics: &str) -> (Mount, u16) {
    let port = free_port();
    let m = Spec::new(&["fast", "slow"])
        .extra(
            "[layout]\nkind = \"cyrus\"\n\
             [tenants.\"example.org\"]\nlimit = \"1M\"\nmailbox_limit = \"100K\"\n",
        )
        .extra(&format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n{metrics}"
        ))
        .mount();
    for (dir, bytes) in [(JOHN, 90 * 1024), (JANE, 10 * 1024), (BOB, 5000)] {
        mkdirs(&m, dir);
        fs::write(m.path(&format!("{dir}/1.")), vec![b'x'; bytes]).unwrap();
    }
    (m, port)
}

/// `GET path` over plain HTTP/1.0: (status line, body).
fn get(port: u16, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
    (
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    )
}

/// Samples of a scrape: `name{labels}` → value.
fn scrape(port: u16) -> BTreeMap<String, f64> {
    let (status, body) = get(port, "/metrics");
    assert!(status.contains(" 200"), "{status}\n{body}");
    body.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            (series.to_string(), value.parse().expect("a number"))
        })
        .collect()
}

fn sample(samples: &BTreeMap<String, f64>, series: &str) -> Option<u64> {
    samples.get(series).map(|v| *v as u64)
}

fn limit_of(u: &serde_json::Value, list: &str, name: &str) -> Option<u64> {
    u[list]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .and_then(|e| e["limit"].as_u64())
}

#[test]
fn usage_series_agree_with_usage_json() {
    let (m, port) = mount_with_mail("");
    let usage = m.usage();
    let samples = scrape(port);

    for tenant in ["example.org", "example.net"] {
        let series = format!("spoolfs_tenant_used_bytes{{tenant=\"{tenant}\"}}");
        assert_eq!(
            sample(&samples, &series),
            Some(used(&usage, "tenants", tenant)),
            "{series}"
        );
    }
    assert_eq!(
        sample(
            &samples,
            "spoolfs_tenant_limit_bytes{tenant=\"example.org\"}"
        ),
        limit_of(&usage, "tenants", "example.org")
    );
    assert_eq!(limit_of(&usage, "tenants", "example.org"), Some(1 << 20));
    assert!(
        !samples.contains_key("spoolfs_tenant_limit_bytes{tenant=\"example.net\"}"),
        "an unlimited tenant has no limit series"
    );

    // John is above 80 % of his limit: his series are there and agree.
    let john = "tenant=\"example.org\",mailbox=\"user/john@example.org\"";
    let john_used = used(&usage, "mailboxes", "user/john@example.org");
    assert!(john_used >= 90 * 1024);
    assert_eq!(
        sample(&samples, &format!("spoolfs_mailbox_used_bytes{{{john}}}")),
        Some(john_used)
    );
    assert_eq!(
        sample(&samples, &format!("spoolfs_mailbox_limit_bytes{{{john}}}")),
        Some(100 * 1024)
    );
    // Jane (10 %) and Bob (no limit) are not.
    assert!(!samples.keys().any(|k| k.contains("user/jane@example.org")));
    assert!(!samples.keys().any(|k| k.contains("user/bob@example.net")));

    for partition in ["fast", "slow"] {
        let healthy = format!("spoolfs_partition_healthy{{partition=\"{partition}\"}}");
        assert_eq!(sample(&samples, &healthy), Some(1), "{healthy}");
        let free = format!("spoolfs_partition_free_bytes{{partition=\"{partition}\"}}");
        assert!(sample(&samples, &free).is_some_and(|b| b > 0), "{free}");
    }
    assert!(samples.contains_key("spoolfs_scan_seconds"));
    assert_eq!(sample(&samples, "spoolfs_scan_files"), Some(0));

    let (status, _) = get(port, "/other");
    assert!(status.contains(" 404"), "{status}");
}

#[test]
fn per_mailbox_shows_every_mailbox_and_the_scan_counts_files_after_a_restart() {
    let (mut m, port) = mount_with_mail("per_mailbox = true\n");
    m.restart();
    let usage = m.usage();
    let samples = scrape(port);
    for (tenant, mailbox) in [
        ("example.org", "user/john@example.org"),
        ("example.org", "user/jane@example.org"),
        ("example.net", "user/bob@example.net"),
    ] {
        let labels = format!("tenant=\"{tenant}\",mailbox=\"{mailbox}\"");
        assert_eq!(
            sample(&samples, &format!("spoolfs_mailbox_used_bytes{{{labels}}}")),
            Some(used(&usage, "mailboxes", mailbox)),
            "{mailbox}"
        );
        assert_eq!(
            sample(
                &samples,
                &format!("spoolfs_mailbox_limit_bytes{{{labels}}}")
            ),
            limit_of(&usage, "mailboxes", mailbox),
            "{mailbox}"
        );
    }
    assert_eq!(limit_of(&usage, "mailboxes", "user/bob@example.net"), None);
    // Three messages on the partitions when the restarted daemon scanned.
    assert_eq!(sample(&samples, "spoolfs_scan_files"), Some(3));
}

#[test]
fn a_listen_address_in_use_fails_the_mount_with_the_key() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let (part, mnt) = (tmp.path().join("part"), tmp.path().join("mnt"));
    fs::create_dir(&part).unwrap();
    fs::create_dir(&mnt).unwrap();
    let config = tmp.path().join("spoolfs.toml");
    fs::write(
        &config,
        format!(
            "[partitions]\np = \"{}\"\n[control]\nstate_dir = \"{}\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            part.display(),
            tmp.path().join("state").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["mount", "--config"])
        .arg(&config)
        .arg(&mnt)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("spoolfs: metrics.listen 127.0.0.1:{port}: ")),
        "{stderr}"
    );
    assert!(!common::is_mounted(&mnt));
}

/// Every request the adapter serves is counted by operation, and every
/// EDQUOT by tenant and operation.
#[test]
fn requests_and_refusals_are_counted() {
    let (m, port) = mount_with_mail("");
    // John has 10 KiB left: 20 KiB more is refused.
    let refused = fs::write(m.path(&format!("{JOHN}/2.")), vec![b'x'; 20 * 1024]);
    assert_eq!(refused.unwrap_err().raw_os_error(), Some(libc::EDQUOT));
    let samples = scrape(port);
    for op in ["lookup", "mkdir", "create", "write"] {
        let series = format!("spoolfs_requests_total{{op=\"{op}\"}}");
        assert!(sample(&samples, &series).is_some_and(|n| n > 0), "{series}");
        let count = format!("spoolfs_request_duration_seconds_count{{op=\"{op}\"}}");
        assert_eq!(
            sample(&samples, &count),
            sample(&samples, &series),
            "{count}"
        );
    }
    assert!(
        sample(
            &samples,
            "spoolfs_quota_refusals_total{tenant=\"example.org\",op=\"write\"}"
        )
        .is_some_and(|n| n >= 1)
    );
}

/// `spoolfs usage --requests --json` reports the same counters over the
/// control socket, with no metrics endpoint configured: five writes of one
/// file are five more WRITE requests.
#[test]
fn usage_requests_counts_by_operation() {
    let m = Spec::new(&["fast"])
        .extra("[layout]\nkind = \"cyrus\"\n")
        .mount();
    mkdirs(&m, JOHN);
    let writes = |m: &Mount| -> u64 {
        let (ok, out, err) = m.cli(&["usage", "--requests", "--json"]);
        assert!(ok, "{err}");
        let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
        doc["requests"]["write"].as_u64().unwrap_or(0)
    };
    let before = writes(&m);
    let mut f = fs::File::create(m.path(&format!("{JOHN}/1."))).unwrap();
    for _ in 0..5 {
        f.write_all(&[b'x'; 4096]).unwrap();
    }
    drop(f);
    assert_eq!(writes(&m) - before, 5);
    let (ok, table, err) = m.cli(&["usage", "--requests"]);
    assert!(ok, "{err}");
    assert!(table.starts_with("OPERATION"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("write ")), "{table}");
}
