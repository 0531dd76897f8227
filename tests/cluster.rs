//! Cluster mode against a real etcd and real mounts: one tenant limit
//! held across three spoolfs hosts (three daemons on this machine, each
//! with its own partition, state directory and mount point, one cluster
//! prefix). etcd members and daemons are started by the tests on loopback
//! ports and killed / unmounted by their guards, also on panic. Skipped,
//! saying so, only when etcd is not installed.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::Mount;
use common::cluster::*;

const MIB: u64 = 1024 * 1024;
const FILE: usize = 64 * 1024;

/// Samples the tenant's bytes on every partition until stopped; returns
/// the largest total seen.
struct OvershootWatch {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl OvershootWatch {
    fn start(partitions: Vec<std::path::PathBuf>) -> OvershootWatch {
        let (stop, peak) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicU64::new(0)),
        );
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(tenant_bytes(&partitions), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(30));
            }
        });
        OvershootWatch {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn peak(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Two writers per mounted host, concurrently, until each gets EDQUOT
/// `refusals` times in a row; returns the files written.
fn fill_all(hosts: &[Mount], tag: &str, refusals: usize) -> usize {
    thread::scope(|scope| {
        let writers: Vec<_> = hosts
            .iter()
            .enumerate()
            .filter(|(_, m)| common::is_mounted(&m.mnt))
            .flat_map(|(i, m)| (0..2).map(move |w| (i, m, format!("{tag}{w}"))))
            .map(|(i, m, tag)| scope.spawn(move || fill(m, i, &tag, FILE, refusals, usize::MAX)))
            .collect();
        writers.into_iter().map(|w| w.join().unwrap()).sum()
    })
}

fn partitions(hosts: &[Mount]) -> Vec<std::path::PathBuf> {
    hosts.iter().map(partition).collect()
}

#[test]
fn three_hosts_fill_one_tenant_limit_without_overshoot() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::start(1);
    let spec = ClusterSpec::new(&etcd, "/spoolfs/fill", "24M");
    let hosts: Vec<Mount> = (0..3).map(|i| host(&spec, i)).collect();
    let watch = OvershootWatch::start(partitions(&hosts));
    let written = fill_all(&hosts, "w", 3);
    let peak = watch.peak();
    let total = tenant_bytes(&partitions(&hosts));
    let limit = 24 * MIB;
    assert!(peak <= limit, "overshoot: {peak} > {limit}");
    assert!(total <= limit, "overshoot: {total} > {limit}");
    assert!(
        total * 100 >= limit * 95,
        "only {total} of {limit} used ({written} files)"
    );
    // Every host wrote: the headroom moved to where it was wanted.
    for (i, m) in hosts.iter().enumerate() {
        assert!(disk_bytes(&partition(m)) > 0, "host {i} wrote nothing");
    }
    // The report agrees with the disks, per host and in total.
    eventually(
        "usage --cluster matches the disks",
        Duration::from_secs(10),
        || {
            let report = cluster_usage(&hosts[0]);
            let tenant = &report["tenants"][0];
            tenant["name"] == TENANT
                && tenant["limit"] == limit
                && tenant["used"] == total
                && tenant["hosts"].as_array().unwrap().len() == 3
        },
    );
    let report = cluster_usage(&hosts[1]);
    for entry in report["tenants"][0]["hosts"].as_array().unwrap() {
        let i: usize = entry["host"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(entry["used"], disk_bytes(&partition(&hosts[i])), "{entry}");
        assert!(entry["allocated"].as_u64().unwrap() >= entry["used"].as_u64().unwrap());
    }
}

#[test]
fn etcd_outage_keeps_serving_within_claims_and_growth_resumes() {
    if !etcd_installed() {
        return;
    }
    let mut etcd = Etcd::start(1);
    let spec = ClusterSpec {
        grant: "2M",
        ..ClusterSpec::new(&etcd, "/spoolfs/outage", "32M")
    };
    let hosts: Vec<Mount> = (0..3).map(|i| host(&spec, i)).collect();
    for (i, m) in hosts.iter().enumerate() {
        assert_eq!(fill(m, i, "before", FILE, 1, 16), 16, "host {i}");
    }
    etcd.stop_all();
    // Within its claim a host goes on writing; beyond it, EDQUOT.
    let during = fill(&hosts[0], 0, "during", FILE, 2, 1000);
    assert!(during >= 1, "no write within the claim while etcd was down");
    let total = tenant_bytes(&partitions(&hosts));
    assert!(total <= 32 * MIB);
    assert!(
        total < 32 * MIB / 2,
        "host 0 grew to {total} without etcd: beyond its claim"
    );
    etcd.start_all();
    eventually(
        "growth resumes once etcd is back",
        Duration::from_secs(20),
        || fill(&hosts[0], 0, "after", FILE, 1, 40) == 40,
    );
    let log = hosts[0].log_text();
    assert_eq!(log.matches("etcd unreachable").count(), 1, "{log}");
    assert_eq!(log.matches("etcd reachable again").count(), 1, "{log}");
    // And the limit still holds across all three.
    let watch = OvershootWatch::start(partitions(&hosts));
    fill_all(&hosts, "end", 3);
    let peak = watch.peak();
    assert!(peak <= 32 * MIB, "overshoot after the outage: {peak}");
}

#[test]
fn killed_host_returns_its_spare_keeps_its_data_counted_and_restarts() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::start(1);
    let limit = 16 * MIB;
    let spec = ClusterSpec::new(&etcd, "/spoolfs/kill", "16M");
    let mut hosts: Vec<Mount> = (0..3).map(|i| host(&spec, i)).collect();
    assert_eq!(fill(&hosts[0], 0, "a", FILE, 1, 32), 32);
    let dead_bytes = disk_bytes(&partition(&hosts[0]));
    let parts = partitions(&hosts);
    hosts[0].kill9();
    // Within the lease TTL its spare is the others' to use.
    thread::sleep(Duration::from_secs(4));
    let watch = OvershootWatch::start(parts.clone());
    fill_all(&hosts, "b", 3);
    let peak = watch.peak();
    let total = tenant_bytes(&parts);
    assert_eq!(disk_bytes(&parts[0]), dead_bytes);
    assert!(
        peak <= limit,
        "overshoot: {peak}: the dead host's data was not counted"
    );
    assert!(
        total * 100 >= limit * 95,
        "only {total} of {limit}: the dead host's spare did not come back"
    );
    // Restarted, it serves again with the usage it has on disk.
    hosts[0].spawn();
    let usage = hosts[0].usage();
    assert_eq!(common::used(&usage, "tenants", TENANT), dead_bytes);
    eventually(
        "the restarted host is reported with its usage",
        Duration::from_secs(10),
        || {
            let report = cluster_usage(&hosts[0]);
            report["tenants"][0]["hosts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|h| h["host"] == "h0" && h["used"] == dead_bytes)
        },
    );
    let dir = hosts[0].path(&mailbox_dir(0));
    for n in 0..8 {
        std::fs::remove_file(dir.join(format!("a-{n}."))).unwrap();
    }
    assert!(
        fill(&hosts[0], 0, "again", FILE, 2, 4) >= 1,
        "the restarted host does not serve"
    );
    assert!(tenant_bytes(&parts) <= limit);
}

#[test]
fn three_member_etcd_losing_one_member_keeps_working() {
    if !etcd_installed() {
        return;
    }
    let mut etcd = Etcd::start(3);
    let limit = 16 * MIB;
    let spec = ClusterSpec::new(&etcd, "/spoolfs/members", "16M");
    let hosts: Vec<Mount> = (0..2).map(|i| host(&spec, i)).collect();
    assert_eq!(fill(&hosts[0], 0, "a", FILE, 1, 8), 8);
    etcd.stop_member(0);
    let watch = OvershootWatch::start(partitions(&hosts));
    fill_all(&hosts, "b", 3);
    let peak = watch.peak();
    let total = tenant_bytes(&partitions(&hosts));
    assert!(peak <= limit, "overshoot: {peak}");
    assert!(
        total * 100 >= limit * 95,
        "only {total} of {limit} with two members of three"
    );
}

#[test]
fn quota_set_tenant_on_one_host_is_enforced_on_all() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::start(1);
    let spec = ClusterSpec::new(&etcd, "/spoolfs/set", "64M");
    let hosts: Vec<Mount> = (0..3).map(|i| host(&spec, i)).collect();
    let (ok, out, err) = hosts[0].cli(&["quota", "set", "--tenant", TENANT, "4M"]);
    assert!(ok, "quota set: {err}");
    assert!(out.contains("limit set"), "{out}");
    for m in &hosts {
        eventually(
            "the new limit reaches every host",
            Duration::from_secs(5),
            || {
                let (_, out, _) = m.cli(&["quota", "get", "--tenant", TENANT]);
                out.starts_with("limit 4.0M")
            },
        );
    }
    let watch = OvershootWatch::start(partitions(&hosts));
    fill_all(&hosts, "w", 3);
    let peak = watch.peak();
    let total = tenant_bytes(&partitions(&hosts));
    assert!(peak <= 4 * MIB, "overshoot of the new limit: {peak}");
    assert!(total * 100 >= 4 * MIB * 95, "only {total} of 4M");
    // Lowering below what is stored refuses growth and deletes nothing.
    let (ok, _, err) = hosts[1].cli(&["quota", "set", "--tenant", TENANT, "1M"]);
    assert!(ok, "{err}");
    thread::sleep(Duration::from_secs(1));
    for (i, m) in hosts.iter().enumerate() {
        assert_eq!(
            fill(m, i, "low", FILE, 1, 1),
            0,
            "host {i} grew over the lowered limit"
        );
    }
    assert_eq!(tenant_bytes(&partitions(&hosts)), total);
    // Unset: the configured limit (64M here) seeds the tenant again.
    let (ok, _, err) = hosts[2].cli(&["quota", "unset", "--tenant", TENANT]);
    assert!(ok, "{err}");
    for m in &hosts {
        eventually(
            "the configured limit applies again",
            Duration::from_secs(5),
            || {
                let (_, out, _) = m.cli(&["quota", "get", "--tenant", TENANT]);
                out.starts_with("limit 64.0M")
            },
        );
    }
    assert_eq!(fill(&hosts[0], 0, "unset", FILE, 1, 4), 4);
}

#[test]
fn usage_cluster_on_a_single_host_spool_says_it_is_not_in_a_cluster() {
    let m = common::Spec::new(&["fast"]).mount();
    let (ok, _, err) = m.cli(&["usage", "--cluster"]);
    assert!(!ok);
    assert!(err.contains("not in a cluster"), "{err}");
}

#[test]
fn a_clean_unmount_gives_the_spare_back_at_once() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::start(1);
    let limit = 16 * MIB;
    let spec = ClusterSpec {
        // Far longer than the test: only the unmount can return the spare.
        lease_ttl_secs: 600,
        ..ClusterSpec::new(&etcd, "/spoolfs/unmount", "16M")
    };
    let mut hosts: Vec<Mount> = (0..2).map(|i| host(&spec, i)).collect();
    assert_eq!(fill(&hosts[0], 0, "a", FILE, 1, 4), 4);
    let parts = partitions(&hosts);
    hosts[0].stop();
    fill_all(&hosts, "b", 3);
    let total = tenant_bytes(&parts);
    assert!(total <= limit, "overshoot: {total}");
    assert!(
        total * 100 >= limit * 95,
        "only {total} of {limit}: the unmounted host kept its spare"
    );
}

#[test]
fn a_host_started_while_etcd_is_down_refuses_growth_until_registered() {
    if !etcd_installed() {
        return;
    }
    let mut etcd = Etcd::start(1);
    etcd.stop_all();
    let spec = ClusterSpec::new(&etcd, "/spoolfs/late", "16M");
    // Mounts after the registration timeout, serving what does not grow.
    let m = host(&spec, 0);
    assert!(
        m.log_text().contains("not registered with etcd"),
        "{}",
        m.log_text()
    );
    let file = m.path(&mailbox_dir(0)).join("1.");
    assert!(is_edquot(&std::fs::write(&file, b"x")));
    etcd.start_all();
    eventually(
        "the host registers and serves",
        Duration::from_secs(20),
        || std::fs::write(&file, b"x").is_ok(),
    );
}

#[test]
fn spare_not_drawn_on_for_a_while_goes_back_to_the_pool() {
    if !etcd_installed() {
        return;
    }
    let etcd = Etcd::start(1);
    let spec = ClusterSpec {
        grant: "4M",
        lease_ttl_secs: 600,
        idle_return_secs: 2,
        ..ClusterSpec::new(&etcd, "/spoolfs/idle", "64M")
    };
    let m = host(&spec, 0);
    assert_eq!(fill(&m, 0, "a", FILE, 1, 4), 4);
    let allocated = || {
        let report = cluster_usage(&m);
        let h = &report["tenants"][0]["hosts"][0];
        (
            h["allocated"].as_u64().unwrap(),
            h["used"].as_u64().unwrap(),
        )
    };
    // Growing, it holds a grant of spare beyond its claim's margin (1M).
    eventually("a grant of spare is held", Duration::from_secs(5), || {
        let (allocated, used) = allocated();
        used == 4 * FILE as u64 && allocated >= used + 4 * MIB
    });
    // Idle, the spare goes back; the claim (data plus margin) stays.
    eventually(
        "the spare goes back when idle",
        Duration::from_secs(10),
        || {
            let (allocated, used) = allocated();
            allocated >= used && allocated <= used + 2 * MIB
        },
    );
}
