//! Prometheus metrics: `GET /metrics` on `[metrics] listen`, in the
//! Prometheus text format (0.0.4), encoded by `prometheus-client` and
//! served by `tiny_http` on a thread of its own.
//!
//! Two kinds of series:
//! - counted as requests happen, in [`global()`]: requests and their
//!   durations per operation (a fixed array of atomics indexed by [`Op`]:
//!   no lock and no allocation per request), quota refusals per tenant and
//!   operation, partition health, the start-up scan;
//! - computed at scrape time from the ledger's report (`Ledger::report`,
//!   what `spoolfs usage --json` prints) and from `fstatvfs` of the
//!   partition roots: usage and limits of tenants and mailboxes, free space.
//!
//! Counting always happens (it costs a few atomic additions); serving only
//! when `listen` is set.

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use log::{info, warn};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::config::MetricsConfig;
use crate::fs::SpoolFs;
use crate::quota::{Ledger, Report};
use crate::scan::ScanStats;

macro_rules! ops {
    ($($variant:ident => $name:literal),* $(,)?) => {
        /// A filesystem operation, as counted and as named in the `op` label.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Op { $($variant),* }

        impl Op {
            pub const ALL: &'static [Op] = &[$(Op::$variant),*];

            pub const fn name(self) -> &'static str {
                match self { $(Op::$variant => $name),* }
            }
        }
    };
}

ops! {
    Lookup => "lookup", Forget => "forget", Getattr => "getattr", Setattr => "setattr",
    Readlink => "readlink", Mknod => "mknod", Mkdir => "mkdir", Unlink => "unlink",
    Rmdir => "rmdir", Symlink => "symlink", Rename => "rename", Link => "link",
    Open => "open", Read => "read", Write => "write", Flush => "flush",
    Release => "release", Fsync => "fsync", Opendir => "opendir", Readdir => "readdir",
    Fsyncdir => "fsyncdir", Statfs => "statfs",
    Setxattr => "setxattr", Getxattr => "getxattr", Listxattr => "listxattr",
    Removexattr => "removexattr", Access => "access", Create => "create",
    Fallocate => "fallocate", Lseek => "lseek", CopyFileRange => "copy_file_range",
}

const N_OPS: usize = Op::ALL.len();

/// Upper bounds of the request duration buckets, in nanoseconds (10 µs to
/// 10 s); a last bucket counts everything slower.
const BUCKETS_NS: [u64; 14] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
];
const N_BUCKETS: usize = BUCKETS_NS.len() + 1;

/// One operation's requests: a count per duration bucket, and the sum.
struct OpStats {
    buckets: [AtomicU64; N_BUCKETS],
    sum_ns: AtomicU64,
}

impl OpStats {
    const fn new() -> OpStats {
        OpStats {
            buckets: [const { AtomicU64::new(0) }; N_BUCKETS],
            sum_ns: AtomicU64::new(0),
        }
    }

    fn record(&self, nanos: u64) {
        let bucket = BUCKETS_NS
            .iter()
            .position(|&upper| nanos <= upper)
            .unwrap_or(N_BUCKETS - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> ([u64; N_BUCKETS], u64) {
        let buckets = std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed));
        (buckets, self.sum_ns.load(Ordering::Relaxed))
    }
}

/// The counters the daemon keeps as it runs.
pub struct Metrics {
    ops: [OpStats; N_OPS],
    /// Refusals per tenant ("" for none) and operation. Refusals are rare
    /// and already log a line, so a lock here costs nothing that matters.
    refusals: Mutex<BTreeMap<String, [u64; N_OPS]>>,
    /// Partitions last seen in trouble, by index (health changes are rare).
    unhealthy: Mutex<Vec<bool>>,
    scan_files: AtomicU64,
    scan_seconds: AtomicU64,
    scanned: std::sync::atomic::AtomicBool,
    /// Of the requests counted in `ops`, those that came over the ring.
    over_io_uring: AtomicU64,
    /// Ring threads the guard freed from a hand-off (`fuse/uring/handoff.rs`).
    handoff_rescues: AtomicU64,
}

static GLOBAL: Metrics = Metrics::new();

/// The daemon's counters.
pub fn global() -> &'static Metrics {
    &GLOBAL
}

/// Counts one request when dropped, with the time since it was made.
#[must_use = "the request is counted when the guard is dropped"]
pub struct RequestTimer<'a> {
    stats: &'a OpStats,
    start: Instant,
}

impl Drop for RequestTimer<'_> {
    fn drop(&mut self) {
        let nanos = self.start.elapsed().as_nanos().min(u64::MAX as u128) as u64;
        self.stats.record(nanos);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub const fn new() -> Metrics {
        Metrics {
            ops: [const { OpStats::new() }; N_OPS],
            refusals: Mutex::new(BTreeMap::new()),
            unhealthy: Mutex::new(Vec::new()),
            scan_files: AtomicU64::new(0),
            scan_seconds: AtomicU64::new(0),
            scanned: std::sync::atomic::AtomicBool::new(false),
            over_io_uring: AtomicU64::new(0),
            handoff_rescues: AtomicU64::new(0),
        }
    }

    /// Starts timing a request; it is counted, with its duration, when the
    /// returned guard is dropped.
    pub fn request(&self, op: Op) -> RequestTimer<'_> {
        RequestTimer {
            stats: &self.ops[op as usize],
            start: Instant::now(),
        }
    }

    /// Requests served so far, by operation name (operations never asked
    /// are left out): what `spoolfs usage --requests` shows.
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        Op::ALL
            .iter()
            .map(|&op| (op, self.ops[op as usize].snapshot().0.iter().sum::<u64>()))
            .filter(|&(_, n)| n > 0)
            .map(|(op, n)| (op.name().to_string(), n))
            .collect()
    }

    /// One more request came over FUSE over io_uring.
    pub fn served_over_io_uring(&self) {
        self.over_io_uring.fetch_add(1, Ordering::Relaxed);
    }

    pub fn over_io_uring(&self) -> u64 {
        self.over_io_uring.load(Ordering::Relaxed)
    }

    /// A ring thread waited too long for its CPU in a hand-off and was
    /// made an ordinary thread again.
    pub fn handoff_rescued(&self) {
        self.handoff_rescues.fetch_add(1, Ordering::Relaxed);
    }

    pub fn handoff_rescues(&self) -> u64 {
        self.handoff_rescues.load(Ordering::Relaxed)
    }

    /// Counts an `EDQUOT` refusal of `op` charged to `tenant`.
    pub fn refusal(&self, tenant: Option<&str>, op: Op) {
        let tenant = tenant.unwrap_or("");
        let mut refusals = self.refusals.lock().unwrap();
        match refusals.get_mut(tenant) {
            Some(counts) => counts[op as usize] += 1,
            None => {
                let mut counts = [0; N_OPS];
                counts[op as usize] = 1;
                refusals.insert(tenant.to_string(), counts);
            }
        }
    }

    /// Records partition `index` (in configuration order) as healthy or not.
    pub fn partition_health(&self, index: usize, healthy: bool) {
        let mut unhealthy = self.unhealthy.lock().unwrap();
        if unhealthy.len() <= index {
            unhealthy.resize(index + 1, false);
        }
        unhealthy[index] = !healthy;
    }

    /// Records the start-up scan's totals.
    pub fn scanned(&self, stats: &ScanStats) {
        self.scan_files.store(stats.files, Ordering::Relaxed);
        self.scan_seconds
            .store(stats.seconds.to_bits(), Ordering::Relaxed);
        self.scanned.store(true, Ordering::Relaxed);
    }

    fn requests(&self) -> Vec<RequestSample> {
        Op::ALL
            .iter()
            .map(|&op| {
                let (buckets, sum_ns) = self.ops[op as usize].snapshot();
                RequestSample {
                    op,
                    buckets,
                    sum_ns,
                }
            })
            .filter(|sample| sample.count() > 0)
            .collect()
    }

    fn refusal_samples(&self) -> Vec<(String, Op, u64)> {
        let refusals = self.refusals.lock().unwrap();
        refusals
            .iter()
            .flat_map(|(tenant, counts)| {
                Op::ALL
                    .iter()
                    .filter(|&&op| counts[op as usize] > 0)
                    .map(|&op| (tenant.clone(), op, counts[op as usize]))
            })
            .collect()
    }

    fn is_unhealthy(&self, index: usize) -> bool {
        self.unhealthy
            .lock()
            .unwrap()
            .get(index)
            .copied()
            .unwrap_or(false)
    }

    fn scan(&self) -> Option<(f64, u64)> {
        self.scanned.load(Ordering::Relaxed).then(|| {
            (
                f64::from_bits(self.scan_seconds.load(Ordering::Relaxed)),
                self.scan_files.load(Ordering::Relaxed),
            )
        })
    }
}

#[derive(Debug)]
struct RequestSample {
    op: Op,
    buckets: [u64; N_BUCKETS],
    sum_ns: u64,
}

impl RequestSample {
    fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// A partition at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSample {
    pub name: String,
    /// Bytes available to the daemon; `None` if `fstatvfs` failed.
    pub free: Option<u64>,
    pub healthy: bool,
}

/// Everything one scrape shows, taken at once and then encoded.
#[derive(Debug)]
pub struct Snapshot {
    pub report: Report,
    pub partitions: Vec<PartitionSample>,
    config: MetricsConfig,
    requests: Vec<RequestSample>,
    refusals: Vec<(String, Op, u64)>,
    scan: Option<(f64, u64)>,
    over_io_uring: u64,
    handoff_rescues: u64,
}

impl Snapshot {
    pub fn new(
        report: Report,
        partitions: Vec<PartitionSample>,
        config: &MetricsConfig,
        metrics: &Metrics,
    ) -> Snapshot {
        Snapshot {
            report,
            partitions,
            config: config.clone(),
            requests: metrics.requests(),
            refusals: metrics.refusal_samples(),
            scan: metrics.scan(),
            over_io_uring: metrics.over_io_uring(),
            handoff_rescues: metrics.handoff_rescues(),
        }
    }

    /// The Prometheus text exposition of this snapshot.
    pub fn render(self) -> Result<String, fmt::Error> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?;
        Ok(out)
    }

    /// Whether a mailbox gets series: all with `per_mailbox`, else those
    /// with a limit and at least `mailbox_percent` of it used.
    fn shows_mailbox(&self, used: u64, limit: Option<u64>) -> bool {
        self.config.per_mailbox
            || limit.is_some_and(|limit| {
                used as u128 * 100 >= limit as u128 * self.config.mailbox_percent as u128
            })
    }
}

const BYTES: &Unit = &Unit::Bytes;
const SECONDS: &Unit = &Unit::Seconds;

impl Collector for Snapshot {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> fmt::Result {
        let tenants = &self.report.tenants;
        let mut family = enc.encode_descriptor(
            "spoolfs_tenant_used",
            "Bytes charged to the tenant",
            Some(BYTES),
            MetricType::Gauge,
        )?;
        for t in tenants {
            family
                .encode_family(&[("tenant", t.name.as_str())])?
                .encode_gauge(&t.used)?;
        }
        let mut family = enc.encode_descriptor(
            "spoolfs_tenant_limit",
            "The tenant's byte limit (absent when unlimited)",
            Some(BYTES),
            MetricType::Gauge,
        )?;
        for t in tenants {
            if let Some(limit) = t.limit {
                family
                    .encode_family(&[("tenant", t.name.as_str())])?
                    .encode_gauge(&limit)?;
            }
        }

        let shown: Vec<_> = self
            .report
            .mailboxes
            .iter()
            .filter(|m| self.shows_mailbox(m.used, m.limit))
            .collect();
        let labels = |m: &&crate::quota::MailboxUsage| {
            [
                ("tenant", m.tenant.clone().unwrap_or_default()),
                ("mailbox", m.name.clone()),
            ]
        };
        let mut family = enc.encode_descriptor(
            "spoolfs_mailbox_used",
            "Bytes charged to the mailbox (mailboxes near their limit, or all with per_mailbox)",
            Some(BYTES),
            MetricType::Gauge,
        )?;
        for m in &shown {
            family.encode_family(&labels(m))?.encode_gauge(&m.used)?;
        }
        let mut family = enc.encode_descriptor(
            "spoolfs_mailbox_limit",
            "The mailbox's byte limit (absent when unlimited)",
            Some(BYTES),
            MetricType::Gauge,
        )?;
        for m in &shown {
            if let Some(limit) = m.limit {
                family.encode_family(&labels(m))?.encode_gauge(&limit)?;
            }
        }

        let mut family = enc.encode_descriptor(
            "spoolfs_quota_refusals",
            "Operations refused with EDQUOT, by tenant and operation",
            None,
            MetricType::Counter,
        )?;
        for (tenant, op, count) in &self.refusals {
            family
                .encode_family(&[("tenant", tenant.as_str()), ("op", op.name())])?
                .encode_counter::<NoLabelSet, _, u64>(count, None)?;
        }

        enc.encode_descriptor(
            "spoolfs_io_uring_requests",
            "Requests that came over FUSE over io_uring (the others over /dev/fuse)",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.over_io_uring, None)?;

        enc.encode_descriptor(
            "spoolfs_handoff_rescues",
            "Times a ring thread committing as SCHED_IDLE waited too long for its CPU and was made ordinary again ([mount] handoff)",
            None,
            MetricType::Counter,
        )?
        .encode_counter::<NoLabelSet, _, u64>(&self.handoff_rescues, None)?;

        let mut family = enc.encode_descriptor(
            "spoolfs_requests",
            "Filesystem requests served, by operation",
            None,
            MetricType::Counter,
        )?;
        for r in &self.requests {
            family
                .encode_family(&[("op", r.op.name())])?
                .encode_counter::<NoLabelSet, _, u64>(&r.count(), None)?;
        }
        let mut family = enc.encode_descriptor(
            "spoolfs_request_duration",
            "Time to serve a filesystem request, by operation",
            Some(SECONDS),
            MetricType::Histogram,
        )?;
        for r in &self.requests {
            let mut buckets: Vec<(f64, u64)> = BUCKETS_NS
                .iter()
                .zip(&r.buckets)
                .map(|(&upper, &n)| (upper as f64 / 1e9, n))
                .collect();
            buckets.push((f64::INFINITY, r.buckets[N_BUCKETS - 1]));
            family
                .encode_family(&[("op", r.op.name())])?
                .encode_histogram::<NoLabelSet>(r.sum_ns as f64 / 1e9, r.count(), &buckets, None)?;
        }

        let mut family = enc.encode_descriptor(
            "spoolfs_partition_free",
            "Bytes free on the partition's filesystem for the daemon",
            Some(BYTES),
            MetricType::Gauge,
        )?;
        for p in &self.partitions {
            if let Some(free) = p.free {
                family
                    .encode_family(&[("partition", p.name.as_str())])?
                    .encode_gauge(&free)?;
            }
        }
        let mut family = enc.encode_descriptor(
            "spoolfs_partition_healthy",
            "1 if the partition is writable and answering, 0 if it is read-only, failing or unreachable",
            None,
            MetricType::Gauge,
        )?;
        for p in &self.partitions {
            family
                .encode_family(&[("partition", p.name.as_str())])?
                .encode_gauge(&i64::from(p.healthy))?;
        }

        if let Some((seconds, files)) = self.scan {
            enc.encode_descriptor(
                "spoolfs_scan",
                "Duration of the start-up scan that rebuilt usage",
                Some(SECONDS),
                MetricType::Gauge,
            )?
            .encode_gauge(&seconds)?;
            enc.encode_descriptor(
                "spoolfs_scan_files",
                "Files counted by the start-up scan",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&files)?;
        }
        Ok(())
    }
}

/// What a scrape reads: the ledger and the partition roots.
struct Source {
    ledger: Arc<Ledger>,
    partitions: Vec<(String, Arc<OwnedFd>)>,
    config: MetricsConfig,
}

impl Source {
    fn snapshot(&self) -> Snapshot {
        let partitions = self
            .partitions
            .iter()
            .enumerate()
            .map(|(i, (name, root))| sample_partition(name, root, global().is_unhealthy(i)))
            .collect();
        Snapshot::new(self.ledger.report(), partitions, &self.config, global())
    }
}

/// Free space and state of a partition root, from `fstatvfs`: read-only or
/// unreachable counts as unhealthy, as does a recorded failure.
fn sample_partition(name: &str, root: &OwnedFd, recorded_unhealthy: bool) -> PartitionSample {
    let mut vfs: libc::statvfs = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::fstatvfs(root.as_raw_fd(), &mut vfs) } == 0;
    PartitionSample {
        name: name.to_string(),
        free: ok.then(|| vfs.f_bavail as u64 * vfs.f_frsize as u64),
        healthy: ok && vfs.f_flag & libc::ST_RDONLY == 0 && !recorded_unhealthy,
    }
}

/// Records the scan and, when `[metrics] listen` is set, starts serving
/// `GET /metrics` on a thread of its own. Fails (before anything is
/// mounted) if the address cannot be bound.
pub fn start(fs: &SpoolFs, scan: &ScanStats) -> Result<(), String> {
    global().scanned(scan);
    let config = MetricsConfig::of(&fs.config).map_err(|e| e.to_string())?;
    let Some(listen) = config.listen else {
        return Ok(());
    };
    let server =
        tiny_http::Server::http(listen).map_err(|e| format!("metrics.listen {listen}: {e}"))?;
    let source = Source {
        ledger: fs.ledger.clone(),
        partitions: fs
            .partitions
            .iter()
            .map(|p| (p.name.clone(), p.root.clone()))
            .collect(),
        config,
    };
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || serve(server, source))
        .map_err(|e| format!("metrics thread: {e}"))?;
    info!("metrics on http://{listen}/metrics");
    Ok(())
}

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn serve(server: tiny_http::Server, source: Source) {
    for request in server.incoming_requests() {
        let path = request.url().split('?').next().unwrap_or("");
        let response = match (request.method(), path) {
            (tiny_http::Method::Get, "/metrics") => match source.snapshot().render() {
                Ok(body) => tiny_http::Response::from_string(body).with_header(
                    tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE)
                        .expect("a valid header"),
                ),
                Err(_) => {
                    tiny_http::Response::from_string("encoding failed\n").with_status_code(500)
                }
            },
            (tiny_http::Method::Get, _) => {
                tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
            }
            _ => tiny_http::Response::from_string("GET only\n").with_status_code(405),
        };
        if let Err(e) = request.respond(response) {
            warn!("metrics: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quota::{MailboxUsage, TenantUsage};

    fn report() -> Report {
        Report {
            tenants: vec![
                TenantUsage {
                    name: "example.org".into(),
                    used: 900,
                    limit: Some(1000),
                    percent: Some(90.0),
                },
                TenantUsage {
                    name: "example.net".into(),
                    used: 5,
                    limit: None,
                    percent: None,
                },
            ],
            mailboxes: vec![
                MailboxUsage {
                    name: "user/full@example.org".into(),
                    tenant: Some("example.org".into()),
                    used: 800,
                    limit: Some(1000),
                    partition: Some("fast".into()),
                    percent: Some(80.0),
                    partitions: Vec::new(),
                },
                MailboxUsage {
                    name: "user/low@example.org".into(),
                    tenant: Some("example.org".into()),
                    used: 100,
                    limit: Some(1000),
                    partition: Some("fast".into()),
                    percent: Some(10.0),
                    partitions: Vec::new(),
                },
                MailboxUsage {
                    name: "user/free@example.net".into(),
                    tenant: Some("example.net".into()),
                    used: 5,
                    limit: None,
                    partition: Some("slow".into()),
                    percent: None,
                    partitions: Vec::new(),
                },
            ],
        }
    }

    fn partitions() -> Vec<PartitionSample> {
        vec![
            PartitionSample {
                name: "fast".into(),
                free: Some(4096),
                healthy: true,
            },
            PartitionSample {
                name: "slow".into(),
                free: None,
                healthy: false,
            },
        ]
    }

    fn render(config: &MetricsConfig, metrics: &Metrics) -> String {
        Snapshot::new(report(), partitions(), config, metrics)
            .render()
            .unwrap()
    }

    #[test]
    fn durations_land_in_their_bucket() {
        let stats = OpStats::new();
        stats.record(10_000);
        stats.record(10_001);
        stats.record(u64::MAX / 2);
        let (buckets, sum) = stats.snapshot();
        assert_eq!(buckets[0], 1);
        assert_eq!(buckets[1], 1);
        assert_eq!(buckets[N_BUCKETS - 1], 1);
        assert_eq!(sum, 20_001 + u64::MAX / 2);
    }

    #[test]
    fn tenants_and_mailboxes_near_their_limit_are_shown() {
        let text = render(&MetricsConfig::default(), &Metrics::new());
        assert!(text.contains("spoolfs_tenant_used_bytes{tenant=\"example.org\"} 900\n"));
        assert!(text.contains("spoolfs_tenant_used_bytes{tenant=\"example.net\"} 5\n"));
        assert!(text.contains("spoolfs_tenant_limit_bytes{tenant=\"example.org\"} 1000\n"));
        assert!(!text.contains("spoolfs_tenant_limit_bytes{tenant=\"example.net\"}"));
        assert!(text.contains(
            "spoolfs_mailbox_used_bytes{tenant=\"example.org\",mailbox=\"user/full@example.org\"} 800\n"
        ));
        assert!(text.contains(
            "spoolfs_mailbox_limit_bytes{tenant=\"example.org\",mailbox=\"user/full@example.org\"} 1000\n"
        ));
        assert!(!text.contains("user/low@example.org"));
        assert!(!text.contains("user/free@example.net"));
        assert!(text.contains("spoolfs_partition_free_bytes{partition=\"fast\"} 4096\n"));
        assert!(!text.contains("spoolfs_partition_free_bytes{partition=\"slow\"}"));
        assert!(text.contains("spoolfs_partition_healthy{partition=\"fast\"} 1\n"));
        assert!(text.contains("spoolfs_partition_healthy{partition=\"slow\"} 0\n"));
        // Not scanned yet: no scan series.
        assert!(!text.contains("spoolfs_scan_seconds "));
    }

    #[test]
    fn per_mailbox_shows_every_mailbox_and_a_lower_percent_more() {
        let all = MetricsConfig {
            per_mailbox: true,
            ..MetricsConfig::default()
        };
        let text = render(&all, &Metrics::new());
        assert!(text.contains("mailbox=\"user/low@example.org\"} 100\n"));
        assert!(text.contains(
            "spoolfs_mailbox_used_bytes{tenant=\"example.net\",mailbox=\"user/free@example.net\"} 5\n"
        ));
        assert!(!text.contains("spoolfs_mailbox_limit_bytes{tenant=\"example.net\""));
        let ten = MetricsConfig {
            mailbox_percent: 10,
            ..MetricsConfig::default()
        };
        let text = render(&ten, &Metrics::new());
        assert!(text.contains("mailbox=\"user/low@example.org\"} 100\n"));
        assert!(!text.contains("user/free@example.net"));
    }

    #[test]
    fn requests_refusals_and_scan_are_counted() {
        let metrics = Metrics::new();
        drop(metrics.request(Op::Write));
        drop(metrics.request(Op::Write));
        drop(metrics.request(Op::Lookup));
        metrics.refusal(Some("example.org"), Op::Write);
        metrics.refusal(Some("example.org"), Op::Write);
        metrics.refusal(None, Op::Link);
        metrics.partition_health(3, false);
        assert!(metrics.is_unhealthy(3) && !metrics.is_unhealthy(0));
        metrics.partition_health(3, true);
        assert!(!metrics.is_unhealthy(3));
        metrics.scanned(&ScanStats {
            files: 42,
            dirs: 3,
            bytes: 7,
            seconds: 0.5,
        });
        let text = render(&MetricsConfig::default(), &metrics);
        assert!(text.contains("spoolfs_requests_total{op=\"write\"} 2\n"));
        assert!(text.contains("spoolfs_requests_total{op=\"lookup\"} 1\n"));
        assert!(!text.contains("op=\"read\""));
        assert!(text.contains("spoolfs_request_duration_seconds_count{op=\"write\"} 2\n"));
        assert!(
            text.contains("spoolfs_request_duration_seconds_bucket{le=\"+Inf\",op=\"write\"} 2\n")
                || text.contains(
                    "spoolfs_request_duration_seconds_bucket{op=\"write\",le=\"+Inf\"} 2\n"
                )
        );
        assert!(
            text.contains("spoolfs_quota_refusals_total{tenant=\"example.org\",op=\"write\"} 2\n")
        );
        assert!(text.contains("spoolfs_quota_refusals_total{tenant=\"\",op=\"link\"} 1\n"));
        assert!(text.contains("spoolfs_scan_seconds 0.5\n"));
        assert!(text.contains("spoolfs_scan_files 42\n"));
    }
}
