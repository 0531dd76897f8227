//! Helpers for the cluster tests (`tests/cluster.rs`): etcd members on
//! loopback ports, killed by PID when dropped (also on panic), and spoolfs
//! hosts sharing one cluster prefix, each with its own partition, state
//! directory and mount point (their `Mount`s unmount on drop).

use std::fs;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Mount, Spec, mkdirs};

/// The Cyrus mailbox every host writes to, one per host name.
pub fn mailbox_dir(host: usize) -> String {
    format!("mail/domain/e/example.org/u/user/u{host}")
}

pub const TENANT: &str = "example.org";

/// Whether etcd is installed (`scripts/test.sh` installs it); tests skip,
/// saying so, only when it is not.
pub fn etcd_installed() -> bool {
    let found = Command::new("etcd").arg("--version").output();
    if found.as_ref().is_ok_and(|o| o.status.success()) {
        return true;
    }
    eprintln!("SKIPPED: etcd is not installed (Debian: apt-get install etcd-server etcd-client)");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// An etcd cluster of one or more members on loopback.
pub struct Etcd {
    tmp: tempfile::TempDir,
    members: Vec<Member>,
}

impl Etcd {
    pub fn start(size: usize) -> Etcd {
        let tmp = tempfile::Builder::new()
            .prefix("spoolfs-etcd")
            .tempdir()
            .unwrap();
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let mut etcd = Etcd { tmp, members };
        for i in 0..size {
            etcd.start_member(i);
        }
        etcd.wait_healthy();
        etcd
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client))
            .collect()
    }

    /// (Re)starts member `i` on its data directory.
    pub fn start_member(&mut self, i: usize) {
        let initial: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect();
        let m = &self.members[i];
        let data = self.tmp.path().join(&m.name);
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.tmp.path().join(format!("{}.log", m.name)))
            .unwrap();
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new("etcd")
            .args(["--name", &m.name, "--data-dir"])
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token"])
            .arg(self.tmp.path().file_name().unwrap())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        self.members[i].child = Some(child);
    }

    /// Kills member `i` (SIGKILL, by its PID).
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn stop_all(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }

    pub fn start_all(&mut self) {
        for i in 0..self.members.len() {
            if self.members[i].child.is_none() {
                self.start_member(i);
            }
        }
        self.wait_healthy();
    }

    /// Until a write through `etcdctl` succeeds (a leader is elected).
    pub fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let running: Vec<String> = self
            .members
            .iter()
            .zip(self.endpoints())
            .filter(|(m, _)| m.child.is_some())
            .map(|(_, e)| e)
            .collect();
        loop {
            let ok = Command::new("etcdctl")
                .env("ETCDCTL_API", "3")
                .arg(format!("--endpoints={}", running.join(",")))
                .args([
                    "--dial-timeout=1s",
                    "--command-timeout=2s",
                    "put",
                    "/health",
                    "ok",
                ])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not become healthy");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// How the hosts of a test are configured.
pub struct ClusterSpec<'a> {
    pub etcd: &'a Etcd,
    pub prefix: &'a str,
    pub limit: &'a str,
    pub grant: &'a str,
    pub lease_ttl_secs: u64,
    pub idle_return_secs: u64,
}

impl<'a> ClusterSpec<'a> {
    /// A tenant limit under `prefix`, taken in 1 MiB grants, a 3 s lease,
    /// idle spare kept 60 s; tests change what they are about.
    pub fn new(etcd: &'a Etcd, prefix: &'a str, limit: &'a str) -> ClusterSpec<'a> {
        ClusterSpec {
            etcd,
            prefix,
            limit,
            grant: "1M",
            lease_ttl_secs: 3,
            idle_return_secs: 60,
        }
    }
}

/// A spoolfs host of the cluster, named `h<i>`, with its mailbox made.
pub fn host(spec: &ClusterSpec, i: usize) -> Mount {
    let endpoints: Vec<String> = spec
        .etcd
        .endpoints()
        .iter()
        .map(|e| format!("{e:?}"))
        .collect();
    let toml = format!(
        r#"
[layout]
kind = "cyrus"
[quota]
metadata_grace = "64K"
[tenants."{TENANT}"]
limit = "{limit}"
[cluster]
etcd_endpoints = [{endpoints}]
host_id = "h{i}"
prefix = "{prefix}"
grant = "{grant}"
lease_ttl_secs = {ttl}
idle_return_secs = {idle}
wait_ms = 1000
"#,
        limit = spec.limit,
        endpoints = endpoints.join(", "),
        prefix = spec.prefix,
        grant = spec.grant,
        ttl = spec.lease_ttl_secs,
        idle = spec.idle_return_secs,
    );
    let m = Spec::new(&["fast"]).extra(&toml).mount();
    mkdirs(&m, &mailbox_dir(i));
    m
}

/// Bytes of the regular files under `dir`, tolerant of files appearing
/// while it walks (writers run concurrently).
pub fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// The tenant's bytes on every host's partition together.
pub fn tenant_bytes(partitions: &[PathBuf]) -> u64 {
    partitions.iter().map(|p| disk_bytes(p)).sum()
}

pub fn partition(m: &Mount) -> PathBuf {
    m.parts[0].1.clone()
}

/// Writes `size`-byte files `<tag>-<n>.` into host `i`'s mailbox until
/// `refusals` writes in a row get `EDQUOT` (or `max` files are written);
/// returns the files written. Any error but `EDQUOT` fails the test.
pub fn fill(m: &Mount, i: usize, tag: &str, size: usize, refusals: usize, max: usize) -> usize {
    let dir = m.path(&mailbox_dir(i));
    let data = vec![b'x'; size];
    let (mut written, mut refused_in_row, mut n) = (0, 0, 0);
    while refused_in_row < refusals && written < max {
        let path = dir.join(format!("{tag}-{n}."));
        n += 1;
        match fs::write(&path, &data) {
            Ok(()) => {
                written += 1;
                refused_in_row = 0;
            }
            Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => {
                refused_in_row += 1;
                let _ = fs::remove_file(&path);
            }
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    written
}

/// `spoolfs usage --cluster --json` on `m`.
pub fn cluster_usage(m: &Mount) -> serde_json::Value {
    let (ok, out, err) = m.cli(&["usage", "--cluster", "--json"]);
    assert!(ok, "usage --cluster failed: {err}");
    serde_json::from_str(&out).expect("usage --cluster json")
}

/// Waits until `check` holds, or fails with `what`.
pub fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn is_edquot<T>(r: &io::Result<T>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(libc::EDQUOT))
}
