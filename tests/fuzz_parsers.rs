//! Issue 6, hostile input: an in-tree fuzz harness (no external crate) for
//! every parser that sees operator- or attacker-controlled bytes:
//! `Config::parse`, `Layout::classify` (cyrus and pattern layouts),
//! `parse_cyrus_header`, `FolderRef::parse_display`, `routing::Pattern`
//! and `config::parse_size`.
//!
//! Each target runs for `SPOOLFS_FUZZ_SECS` seconds (default 5) from a
//! fixed seed (`SPOOLFS_FUZZ_SEED`, default 1), generating random inputs and
//! mutations of valid seeds. A call must not panic and must return within
//! `CALL_BOUND`; a watchdog fails the test (naming the input) if a call does
//! not return at all. On failure the offending input is written to
//! `target/fuzz-crashes/<target>-<n>.bin` and shown in the panic message.
//!
//! Properties checked besides "no panic, no loop":
//! * every `FolderRef` the parsers produce round-trips through
//!   `parse_display(display(f))`, has a non-empty folder, no empty / `.` /
//!   `..` folder segment and a non-empty tenant without `/`;
//! * a header naming `domain!user.x...` attributes to exactly that domain,
//!   and agrees with the named-layout path of the same mailbox;
//! * `Pattern::matches` agrees with a naive reference matcher;
//! * `parse_size` accepts its own output (`n` → `Some(n)`).

mod common;

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use spoolfs::config::{Config, LayoutConfig, parse_size};
use spoolfs::layout::{
    CYRUS_HEADER_MAGIC, DirRole, FolderRef, Layout, parse_cyrus_header, parse_cyrus_header_full,
};
use spoolfs::routing::Pattern;

use common::Rng;

/// One call may take at most this long (generous: CI machines are shared).
const CALL_BOUND: Duration = Duration::from_millis(1500);
/// No progress for this long = a loop: fail instead of hanging.
const HANG_BOUND: Duration = Duration::from_secs(20);

// --- PRNG -----------------------------------------------------------------------

/// Choices the fuzzers make, on the shared SplitMix64 (`common::Rng`).
impl Rng {
    fn chance(&mut self, one_in: usize) -> bool {
        self.index(one_in) == 0
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.index(items.len())]
    }
    fn pick_ref<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }
}

// --- harness ----------------------------------------------------------------------

fn fuzz_secs() -> f64 {
    std::env::var("SPOOLFS_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0)
}

fn fuzz_seed() -> u64 {
    std::env::var("SPOOLFS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// What the watchdog shows when a call never returns.
struct Shared {
    current: Mutex<Vec<u8>>,
    progress: AtomicU64,
    done: AtomicBool,
}

fn save_crash(target: &str, input: &[u8]) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-crashes");
    let _ = std::fs::create_dir_all(&dir);
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let path = dir.join(format!("{target}-{n}.bin"));
    let _ = std::fs::write(&path, input);
    path
}

fn show(input: &[u8]) -> String {
    let shown = &input[..input.len().min(600)];
    format!(
        "{:?}{} ({} bytes)",
        String::from_utf8_lossy(shown),
        if input.len() > 600 { "..." } else { "" },
        input.len()
    )
}

/// Runs `gen` → `check` for the configured time. `check` returns Err(why)
/// for a violated property; panics are caught and reported with the input.
fn run_target(
    target: &'static str,
    generate: impl FnMut(&mut Rng) -> Vec<u8> + Send + 'static,
    check: impl Fn(&[u8]) -> Result<(), String> + Send + 'static,
) {
    let shared = Arc::new(Shared {
        current: Mutex::new(Vec::new()),
        progress: AtomicU64::new(0),
        done: AtomicBool::new(false),
    });
    let secs = fuzz_secs();
    let seed = fuzz_seed() ^ (target.len() as u64 * 0x1000_0001);
    let worker = {
        let shared = shared.clone();
        let mut generate = generate;
        std::thread::Builder::new()
            .name(format!("fuzz-{target}"))
            .stack_size(64 << 20)
            .spawn(move || -> Result<u64, String> {
                let mut rng = Rng::new(seed);
                let deadline = Instant::now() + Duration::from_secs_f64(secs);
                let mut runs = 0u64;
                let mut slowest = Duration::ZERO;
                while Instant::now() < deadline {
                    let input = generate(&mut rng);
                    *shared.current.lock().unwrap() = input.clone();
                    let start = Instant::now();
                    let result = catch_unwind(AssertUnwindSafe(|| check(&input)));
                    let took = start.elapsed();
                    slowest = slowest.max(took);
                    runs += 1;
                    shared.progress.store(runs, Ordering::Release);
                    let failure = match result {
                        Err(panic) => Some(format!(
                            "panicked: {}",
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default()
                        )),
                        Ok(Err(why)) => Some(format!("property violated: {why}")),
                        Ok(Ok(())) if took > CALL_BOUND => {
                            Some(format!("took {took:?} (bound {CALL_BOUND:?})"))
                        }
                        Ok(Ok(())) => None,
                    };
                    if let Some(why) = failure {
                        let saved = save_crash(target, &input);
                        shared.done.store(true, Ordering::Release);
                        return Err(format!(
                            "{target}: after {runs} inputs: {why}\ninput: {}\nsaved to {}",
                            show(&input),
                            saved.display()
                        ));
                    }
                }
                shared.done.store(true, Ordering::Release);
                eprintln!("fuzz {target}: {runs} inputs in {secs}s, slowest call {slowest:?}");
                Ok(runs)
            })
            .unwrap()
    };
    // Watchdog: a call that never returns is a loop.
    let mut last = (0u64, Instant::now());
    while !shared.done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(100));
        let p = shared.progress.load(Ordering::Acquire);
        if p != last.0 {
            last = (p, Instant::now());
        } else if last.1.elapsed() > HANG_BOUND {
            let input = shared.current.lock().unwrap().clone();
            let saved = save_crash(target, &input);
            panic!(
                "{target}: a call has not returned for {HANG_BOUND:?} (loop?)\ninput: {}\nsaved to {}",
                show(&input),
                saved.display()
            );
        }
    }
    match worker.join().expect("fuzz worker") {
        Ok(runs) => assert!(runs > 0, "{target}: no input was tried"),
        Err(report) => panic!("{report}"),
    }
}

// --- mutation -------------------------------------------------------------------------

/// Byte-level mutations (AFL-style havoc), splicing tokens from `dict`.
fn mutate(rng: &mut Rng, input: &[u8], dict: &[&[u8]], max_len: usize) -> Vec<u8> {
    let mut out = input.to_vec();
    let rounds = 1 + rng.index(8);
    for _ in 0..rounds {
        let len = out.len();
        match rng.index(11) {
            0 if len > 0 => {
                let i = rng.index(len);
                out[i] ^= 1 << rng.index(8);
            }
            1 if len > 0 => {
                let i = rng.index(len);
                out[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.index(len + 1);
                let b = rng.pick(&[
                    0u8, b'\n', b'\r', b' ', b'/', b'.', b'^', b'!', b'@', b'"', b'\\', b'{', b'}',
                    b'(', b')', b'%', b'*', 0xff, 0xc3,
                ]);
                out.insert(i, b);
            }
            3 if len > 0 => {
                let i = rng.index(len);
                let n = 1 + rng.index((len - i).min(32));
                out.drain(i..i + n);
            }
            4 if len > 0 => {
                // duplicate a chunk
                let i = rng.index(len);
                let n = 1 + rng.index((len - i).min(64));
                let chunk = out[i..i + n].to_vec();
                let at = rng.index(out.len() + 1);
                out.splice(at..at, chunk);
            }
            5 | 6 if !dict.is_empty() => {
                let token = rng.pick(dict).to_vec();
                let at = rng.index(len + 1);
                out.splice(at..at, token);
            }
            7 if len > 0 => {
                // truncate
                out.truncate(rng.index(len));
            }
            8 if len > 1 => {
                // swap two bytes
                let (i, j) = (rng.index(len), rng.index(len));
                out.swap(i, j);
            }
            9 => {
                let i = rng.index(len + 1);
                let n = 1 + rng.index(8);
                let b = rng.bytes(n);
                out.splice(i..i, b);
            }
            _ => {
                // replace a digit run with a huge or odd number
                if let Some(i) = out.iter().position(|b| b.is_ascii_digit()) {
                    let n = rng.pick(&[
                        &b"0"[..],
                        b"18446744073709551615",
                        b"18446744073709551616",
                        b"99999999999999999999999",
                        b"4294967296",
                        b"-1",
                    ]);
                    out.splice(i..i + 1, n.iter().copied());
                }
            }
        }
    }
    out.truncate(max_len);
    out
}

// --- properties -----------------------------------------------------------------------

/// A FolderRef produced by a parser is well-formed and round-trips.
fn check_folder(f: &FolderRef, origin: &str) -> Result<(), String> {
    if f.folder.is_empty() {
        return Err(format!("{origin}: empty folder in {f:?}"));
    }
    if let Some(seg) = f.folder.split('/').find(|s| matches!(*s, "" | "." | "..")) {
        return Err(format!("{origin}: folder segment {seg:?} in {f:?}"));
    }
    if f.folder.contains('\0') {
        return Err(format!("{origin}: NUL in folder {f:?}"));
    }
    if let Some(t) = &f.tenant {
        let dots = origin != "parse_display" && (t == "." || t == "..");
        if t.is_empty() || t.contains('/') || dots || t.contains('\0') {
            return Err(format!("{origin}: bad tenant in {f:?}"));
        }
    }
    match FolderRef::parse_display(&f.display()) {
        Ok(back) if back == *f => Ok(()),
        other => Err(format!(
            "{origin}: parse_display(display(f)) does not round-trip: f = {f:?}, display = {:?}, back = {other:?}",
            f.display()
        )),
    }
}

fn check_role(role: &DirRole, origin: &str) -> Result<(), String> {
    match role {
        DirRole::Folder(f) => check_folder(f, origin),
        _ => Ok(()),
    }
}

// --- valid seeds -------------------------------------------------------------------------

const UUID: &str = "4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11";

/// A `cyrus.header` exactly as Cyrus 3.6 `mailbox_commit_header` writes it
/// (as built in src/layout/tests.rs).
fn header(data_line: &str) -> Vec<u8> {
    let mut bytes = CYRUS_HEADER_MAGIC.to_vec();
    bytes.extend_from_slice(data_line.as_bytes());
    bytes.push(b'\n');
    bytes
}

fn header_seeds() -> Vec<Vec<u8>> {
    vec![
        header(&format!(
            "%(T e N example.org!user.john.Archive I {UUID} Q example.org!user.john \
             A %(john lrswipkxtecdan admin@example.org lrswipkxtecdan) U ($Forwarded $MDNSent))"
        )),
        header(&format!("%(T e N user.john I {UUID})")),
        header(&format!(
            "%(A %(x %(y (z))) I {UUID} N \"user.john.Sent Items\")"
        )),
        header("%(N {9+}\r\nuser.john)"),
        header("%(N other.org!DELETED.user.bob.Archive.65A0B1C2 Q other.org!user.bob)"),
        header(&format!(
            "example.org!user.john\t{UUID}\n$Forwarded\njohn\tlrs\t"
        )),
        header("%(N example.org!shared.sales)"),
    ]
}

const HEADER_DICT: &[&[u8]] = &[
    b"%(",
    b"(",
    b")",
    b" N ",
    b" I ",
    b" Q ",
    b" A ",
    b"NIL",
    b"{5+}\r\n",
    b"{0}\r\n",
    b"{99999999999999999999}\r\n",
    b"\"",
    b"\\",
    b"!",
    b"example.org!",
    b"other.org!",
    b"user.",
    b".",
    b"^",
    b"DELETED.",
    b".65A0B1C2",
    b"\n",
    b"\0",
    b"%(%(%(%(",
    b"))))",
    b"\xff\xfe",
    b"..",
    b"/",
    b"@",
];

const CONFIG_SEED: &str = r#"default_partition = "fast"
[partitions]
fast = "/srv/ssd/spool"
slow = "/srv/hdd/spool"
[[route]]
match = "archive/**"
partition = "slow"
[[route]]
match = "mail/domain/*/example.com/**"
partition = "slow"
[mount]
threads = 4
allow_other = true
ttl_secs = 60
passthrough = true
[layout]
kind = "cyrus"
partition_depth = 1
default_tenant = "example.net"
[quota]
mailbox_limit = "1G"
tenant_limit = "none"
warn_percent = 90
metadata_grace = "1M"
[tenants."example.org"]
limit = "5G"
mailbox_limit = "2G"
[mailboxes."user/john@example.org"]
limit = "1G"
[mailboxes."user/john/Archive@example.org"]
limit = "none"
[control]
admin_uids = [8, 1000]
state_dir = "/var/lib/spoolfs"
"#;

const CONFIG_PATTERN_SEED: &str = r#"[partitions]
a = "/srv/a"
[layout]
kind = "pattern"
pattern = "vmail/{tenant}/{mailbox}/Maildir/**"
[quota]
mailbox_limit = "10M"
"#;

const CONFIG_DICT: &[&[u8]] = &[
    b"[partitions]\n",
    b"[[route]]\n",
    b"match = ",
    b"partition = ",
    b"\"**\"",
    b"\"*\"",
    b"\"{tenant}/{mailbox}/**\"",
    b"kind = \"pattern\"\n",
    b"kind = \"cyrus\"\n",
    b"kind = \"none\"\n",
    b"pattern = ",
    b"\"none\"",
    b"\"1G\"",
    b"\"-1\"",
    b"\"99999999999999999999T\"",
    b"\"1.5G\"",
    b"[tenants.\"x\"]\n",
    b"[mailboxes.\"user/x@y\"]\n",
    b"[mailboxes.\"@\"]\n",
    b"limit = ",
    b"partition_depth = ",
    b"18446744073709551615",
    b"-9223372036854775808",
    b"= ",
    b"\"\"",
    b"\"/\"",
    b"\"relative\"",
    b"[quota]\n",
    b"warn_percent = 300\n",
    b"threads = 0\n",
    b"[mount]\n",
    b"ttl_secs = ",
    b"admin_uids = [",
    b"]",
    b"{",
    b"}",
    b"'''",
    b"\"\"\"",
    b"\n",
    b"#",
    b"\\u0000",
    b"\\",
    b"\xc3\xa9",
    b"nan",
    b"inf",
    b"1e400",
    b"true",
];

// --- targets ------------------------------------------------------------------------------

#[test]
fn fuzz_config_parse() {
    let seeds = [
        CONFIG_SEED.as_bytes().to_vec(),
        CONFIG_PATTERN_SEED.as_bytes().to_vec(),
    ];
    run_target(
        "config",
        move |rng| {
            if rng.chance(20) {
                // random token soup
                let mut out = Vec::new();
                for _ in 0..rng.index(40) {
                    out.extend_from_slice(rng.pick(CONFIG_DICT));
                }
                return out;
            }
            let seed = rng.pick_ref(&seeds).clone();
            mutate(rng, &seed, CONFIG_DICT, 64 << 10)
        },
        |input| {
            let text = String::from_utf8_lossy(input);
            match Config::parse(&text, Path::new("fuzz.toml")) {
                Ok(cfg) => {
                    // A config that parses must be usable by everything that
                    // consumes it, without panicking.
                    let layout = Layout::new(&cfg.layout);
                    let _ = layout.classify(Path::new("mail/domain/e/example.org/j/user/john"));
                    let _ = spoolfs::routing::Router::new(&cfg);
                    for r in &cfg.routes {
                        Pattern::parse(&r.pattern).map_err(|e| {
                            format!("accepted route {:?} Pattern rejects: {e}", r.pattern)
                        })?;
                        if cfg.partition_index(&r.partition).is_none() {
                            return Err(format!("route to unknown partition {:?}", r.partition));
                        }
                    }
                    if cfg.partition_index(&cfg.default_partition).is_none() {
                        return Err(format!(
                            "unknown default partition {:?}",
                            cfg.default_partition
                        ));
                    }
                    let _ = cfg.describe();
                    for name in cfg.mailboxes.keys() {
                        FolderRef::parse_display(name)
                            .map_err(|e| format!("accepted mailbox key {name:?}: {e}"))?;
                    }
                    Ok(())
                }
                Err(e) => {
                    // Errors name the file.
                    let msg = e.to_string();
                    if !msg.starts_with("fuzz.toml: ") {
                        return Err(format!("error does not name the file: {msg}"));
                    }
                    Ok(())
                }
            }
        },
    );
}

/// Path components a Cyrus or maildir spool (or an attacker) might use.
const COMPONENTS: &[&[u8]] = &[
    b"mail",
    b"archive",
    b"domain",
    b"e",
    b"example.org",
    b"other.org",
    b"j",
    b"q",
    b"K",
    b"user",
    b"john",
    b"jane",
    b"Archive",
    b"Sent Items",
    b"john^doe",
    b"^",
    b"^^",
    b"^.",
    b".",
    b"..",
    b"uuid",
    b"4",
    b"b",
    b"4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11",
    b"4b",
    b"stage.",
    b"sync.",
    b"lost+found",
    b"DELETED",
    b"65A0B1C2",
    b"lowerhex",
    b"shared",
    b"sales",
    b"cyrus.header",
    b".hidden",
    b"caf\xe9",
    b"\xff",
    b"a@b",
    b"@",
    b"x@y.org",
    b"user@",
    b"Maildir",
    b"cur",
    b"new",
    b".Sent",
    b"vmail",
    b"\n",
    b" ",
    b"  spaced  ",
    b"a\\b",
    b"%",
    b"!",
    b"a!b",
];

fn gen_path(rng: &mut Rng) -> Vec<u8> {
    let mut out = Vec::new();
    if rng.chance(10) {
        out.push(b'/');
    }
    let n = rng.index(10);
    for i in 0..n {
        if i > 0 {
            out.push(b'/');
            if rng.chance(30) {
                out.push(b'/');
            }
        }
        if rng.chance(8) {
            let len = rng.index(6);
            out.extend(
                rng.bytes(len)
                    .into_iter()
                    .map(|b| if b == b'/' || b == 0 { b'x' } else { b }),
            );
        } else {
            out.extend_from_slice(rng.pick(COMPONENTS));
        }
    }
    out
}

fn valid_named_paths() -> Vec<Vec<u8>> {
    [
        "mail/domain/e/example.org/j/user/john",
        "mail/domain/e/example.org/j/user/john/Archive/2024",
        "mail/domain/example.org/user/john^doe",
        "mail/j/user/john/Sent",
        "mail/u/DELETED/user/john/Archive/65A0B1C2",
        "mail/uuid/4/b/4b8d8e1c-6c0a-4d39-9a1e-5b3e2a1f7c11",
        "vmail/example.org/john/Maildir/cur",
        "example.org/john/.Sent/new",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

const PATTERNS: &[&str] = &[
    "{tenant}/{mailbox}/**",
    "vmail/{tenant}/{mailbox}/Maildir/**",
    "{mailbox}",
    "*/{tenant}/*/{mailbox}/cur",
    "{mailbox}/{tenant}",
    "x/{mailbox}/**",
];

#[test]
fn fuzz_layout_classify() {
    let seeds = valid_named_paths();
    let mut layouts: Vec<(String, Layout)> = Vec::new();
    for depth in 0..3 {
        for tenant in [None, Some("example.net"), Some("a@b")] {
            layouts.push((
                format!("cyrus depth {depth} tenant {tenant:?}"),
                Layout::new(&LayoutConfig::Cyrus {
                    partition_depth: depth,
                    default_tenant: tenant.map(str::to_string),
                    metadata_names: Vec::new(),
                }),
            ));
        }
    }
    for p in PATTERNS {
        layouts.push((
            format!("pattern {p}"),
            Layout::new(&LayoutConfig::Pattern {
                pattern: p.to_string(),
                metadata_names: Vec::new(),
            }),
        ));
    }
    run_target(
        "classify",
        move |rng| {
            // The kernel never hands over a name with NUL.
            let mut out = if rng.chance(3) {
                let seed = rng.pick_ref(&seeds).clone();
                mutate(rng, &seed, COMPONENTS, 4096)
            } else {
                gen_path(rng)
            };
            out.retain(|&b| b != 0);
            out
        },
        move |input| {
            let path = Path::new(OsStr::from_bytes(input));
            for (what, layout) in &layouts {
                let role = layout.classify(path);
                check_role(&role, what)?;
                // A `..` anywhere is never trusted.
                if input.split(|&b| b == b'/').any(|c| c == b"..") && role != DirRole::Unowned {
                    return Err(format!("{what}: a path with '..' was classified {role:?}"));
                }
                let _ = layout.tenant_of_dir(path);
                let _ = layout.is_metadata_name(OsStr::from_bytes(input));
            }
            Ok(())
        },
    );
}

/// Mutated pattern layouts, with mutated paths.
#[test]
fn fuzz_pattern_layout() {
    run_target(
        "pattern-layout",
        |rng| {
            // pattern NUL path
            let p = rng.pick(PATTERNS).as_bytes().to_vec();
            let mut p = mutate(
                rng,
                &p,
                &[b"{tenant}", b"{mailbox}", b"**", b"*", b"/", b".."],
                200,
            );
            p.retain(|&b| b != 0);
            let mut out = p;
            out.push(0);
            out.extend(gen_path(rng));
            out
        },
        |input| {
            let nul = input.iter().position(|&b| b == 0).unwrap();
            let pattern = String::from_utf8_lossy(&input[..nul]).into_owned();
            let path = Path::new(OsStr::from_bytes(&input[nul + 1..]));
            let layout = Layout::new(&LayoutConfig::Pattern {
                pattern,
                metadata_names: Vec::new(),
            });
            check_role(&layout.classify(path), "pattern")?;
            let _ = layout.tenant_of_dir(path);
            Ok(())
        },
    );
}

#[test]
fn fuzz_cyrus_header() {
    let seeds = header_seeds();
    run_target(
        "header",
        move |rng| {
            match rng.index(20) {
                0 => {
                    // 1 MiB of garbage, after the magic or not
                    let mut out = if rng.chance(2) {
                        CYRUS_HEADER_MAGIC.to_vec()
                    } else {
                        Vec::new()
                    };
                    out.extend(rng.bytes(1 << 20));
                    out
                }
                1 => {
                    // deep nesting
                    let d = 1 + rng.index(100_000);
                    let open = if rng.chance(2) { "(" } else { "%(" };
                    let close = if rng.chance(2) {
                        ")".repeat(d)
                    } else {
                        String::new()
                    };
                    header(&format!("%(A {}{} N user.john)", open.repeat(d), close))
                }
                2 => {
                    let mut out = rng.pick_ref(&seeds).clone();
                    let n = rng.index(out.len());
                    out.truncate(n);
                    out
                }
                _ => {
                    let seed = rng.pick_ref(&seeds).clone();
                    mutate(rng, &seed, HEADER_DICT, 2 << 20)
                }
            }
        },
        |input| {
            for tenant in [None, Some("default.org")] {
                if let Ok(full) = parse_cyrus_header_full(input, tenant) {
                    check_folder(&full.folder, "header N")?;
                    if let Some(q) = &full.quotaroot {
                        check_folder(q, "header Q")?;
                    }
                    let short = parse_cyrus_header(input, tenant);
                    if short.as_ref() != Ok(&full.folder) {
                        return Err(format!(
                            "parse_cyrus_header {short:?} != full {:?}",
                            full.folder
                        ));
                    }
                }
            }
            Ok(())
        },
    );
}

/// Structured: a header naming `domain!user.<local>.<folders>` attributes
/// to exactly that domain and folder, whatever the default tenant, and
/// agrees with the named-layout directory of the same mailbox.
#[test]
fn fuzz_header_attribution_agrees_with_path() {
    const WORDS: &[&str] = &[
        "john",
        "jane",
        "a",
        "bob^smith",
        "Sent Items",
        "Archive",
        "2024",
        "x-y",
        "&AOQ-",
        "q1",
    ];
    const DOMAINS: &[&str] = &[
        "example.org",
        "other.org",
        "a.b.c",
        "xn--caf-dma.example",
        "1example.org",
    ];
    let layout = Layout::new(&LayoutConfig::Cyrus {
        partition_depth: 1,
        default_tenant: Some("default.org".to_string()),
        metadata_names: Vec::new(),
    });
    run_target(
        "header-attribution",
        |rng| {
            let domain = rng.pick(DOMAINS);
            let mut boxes = vec![if rng.chance(4) { "shared" } else { "user" }.to_string()];
            for _ in 0..1 + rng.index(4) {
                boxes.push(rng.pick(WORDS).to_string());
            }
            let with_domain = !rng.chance(4);
            format!(
                "{}\0{}",
                if with_domain { domain } else { "" },
                boxes.join("\0")
            )
            .into_bytes()
        },
        move |input| {
            let mut parts = input
                .split(|&b| b == 0)
                .map(|p| std::str::from_utf8(p).unwrap());
            let domain = parts.next().unwrap();
            let boxes: Vec<&str> = parts.collect();
            let internal = boxes.join(".");
            let name = if domain.is_empty() {
                internal.clone()
            } else {
                format!("{domain}!{internal}")
            };
            let quoted = if name.contains(' ') {
                format!("\"{name}\"")
            } else {
                name.clone()
            };
            let bytes = header(&format!("%(T e N {quoted} I {UUID} A %(x lrs))"));
            let want_tenant = if domain.is_empty() {
                "default.org"
            } else {
                domain
            };
            let want_folder = boxes
                .iter()
                .map(|b| b.replace('^', "."))
                .collect::<Vec<_>>()
                .join("/");
            let got = parse_cyrus_header(&bytes, Some("default.org"))
                .map_err(|e| format!("valid header {name:?} rejected: {e}"))?;
            if got.tenant.as_deref() != Some(want_tenant) || got.folder != want_folder {
                return Err(format!("header {name:?} attributed to {got:?}"));
            }
            // Another tenant's name in the header wins over any default.
            let got_none = parse_cyrus_header(&bytes, None).map_err(|e| e.to_string())?;
            if !domain.is_empty() && got_none != got {
                return Err(format!(
                    "default tenant changed a domain header: {got_none:?} vs {got:?}"
                ));
            }
            check_folder(&got, "header")?;
            // The named-layout directory of the same mailbox.
            let hash = |s: &str| {
                let c = s.as_bytes()[0].to_ascii_lowercase();
                if c.is_ascii_lowercase() {
                    c as char
                } else {
                    'q'
                }
            };
            let second = boxes.get(1).copied().unwrap_or(boxes[0]);
            let dirs = boxes.join("/");
            let path = if domain.is_empty() {
                format!("mail/{}/{dirs}", hash(second))
            } else {
                format!(
                    "mail/domain/{}/{domain}/{}/{dirs}",
                    hash(domain),
                    hash(second)
                )
            };
            let role = layout.classify(Path::new(&path));
            if role != DirRole::Folder(got.clone()) {
                return Err(format!(
                    "path {path:?} is {role:?}, header {name:?} says {got:?}"
                ));
            }
            // The uuid directory itself says nothing: the header decides.
            let uuid_dir = format!("mail/uuid/4/b/{UUID}");
            if layout.classify(Path::new(&uuid_dir)) != DirRole::UuidMailbox {
                return Err("uuid dir not a UuidMailbox".into());
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_parse_display() {
    const DICT: &[&[u8]] = &[
        b"@",
        b"/",
        b"user",
        b"john",
        b"example.org",
        b"..",
        b".",
        b" ",
        b"\t",
        b"\xc3\xa9",
        b"//",
        b"@@",
    ];
    run_target(
        "parse-display",
        |rng| {
            let seed = rng
                .pick(&[
                    &b"user/john@example.org"[..],
                    b"user/john/Archive@example.org",
                    b"shared/sales",
                    b"john@example.org",
                ])
                .to_vec();
            if rng.chance(4) {
                let mut out = Vec::new();
                for _ in 0..rng.index(12) {
                    out.extend_from_slice(rng.pick(DICT));
                }
                out
            } else {
                mutate(rng, &seed, DICT, 512)
            }
        },
        |input| {
            let s = String::from_utf8_lossy(input);
            if let Ok(f) = FolderRef::parse_display(&s).map(|f| FolderRef {
                // NUL typed by an operator cannot match any real folder;
                // only the shape and the round trip matter here.
                folder: f.folder.replace('\0', "_"),
                tenant: f.tenant.map(|t| t.replace('\0', "_")),
            }) {
                // What parse_display accepts is a normal form: it displays
                // and parses back to itself.
                check_folder(&f, "parse_display")?;
                let _ = f.top();
                let c = f.quota_root_candidates();
                if c.last() != Some(&f.top()) || c.first() != Some(&f) {
                    return Err(format!("quota_root_candidates({f:?}) = {c:?}"));
                }
            }
            Ok(())
        },
    );
}

/// Naive reference: `**` any number of segments, `*`/`?` within a segment.
fn ref_match(pat: &[&[u8]], path: &[&[u8]]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&b"**", rest)) => (0..=path.len()).any(|k| ref_match(rest, &path[k..])),
        Some((seg, rest)) => {
            !path.is_empty() && ref_glob(seg, path[0]) && ref_match(rest, &path[1..])
        }
    }
}

fn ref_glob(g: &[u8], t: &[u8]) -> bool {
    match g.split_first() {
        None => t.is_empty(),
        Some((b'*', rest)) => (0..=t.len()).any(|k| ref_glob(rest, &t[k..])),
        Some((b'?', rest)) => !t.is_empty() && ref_glob(rest, &t[1..]),
        Some((c, rest)) => t.first() == Some(c) && ref_glob(rest, &t[1..]),
    }
}

#[test]
fn fuzz_routing_pattern() {
    const PSEG: &[&str] = &[
        "**", "*", "a", "b", "a*", "*b", "?", "a?b", "*a*", "ab", "**", "x", ".", "..", "",
    ];
    const SEG: &[&str] = &["a", "b", "ab", "aab", "abb", "x", "axb", "ba", "", "aaaa"];
    run_target(
        "routing",
        |rng| {
            let np = 1 + rng.index(6);
            let pat: Vec<&str> = (0..np).map(|_| rng.pick(PSEG)).collect();
            let nt = rng.index(8);
            let path: Vec<&str> = (0..nt).map(|_| rng.pick(SEG)).collect();
            let mut out = pat.join("/").into_bytes();
            if rng.chance(10) {
                out = mutate(rng, &out, &[b"**", b"*", b"/", b"?"], 100);
                out.retain(|&b| b != 0);
            }
            out.push(0);
            out.extend(path.join("/").into_bytes());
            out
        },
        |input| {
            let nul = input.iter().position(|&b| b == 0).unwrap();
            let text = String::from_utf8_lossy(&input[..nul]).into_owned();
            let path_bytes = &input[nul + 1..];
            let Ok(p) = Pattern::parse(&text) else {
                return Ok(());
            };
            let got = p.matches(Path::new(OsStr::from_bytes(path_bytes)));
            let pat_segs: Vec<&[u8]> = text.as_bytes().split(|&b| b == b'/').collect();
            let path_segs: Vec<&[u8]> = path_bytes
                .split(|&b| b == b'/')
                .filter(|s| !s.is_empty())
                .collect();
            let want = ref_match(&pat_segs, &path_segs);
            if got != want {
                return Err(format!(
                    "Pattern {text:?} matches {:?}: {got}, reference says {want}",
                    String::from_utf8_lossy(path_bytes)
                ));
            }
            if p.as_str() != text {
                return Err("as_str changed".into());
            }
            Ok(())
        },
    );
}

/// Long hostile patterns and paths: matching stays fast (no exponential
/// backtracking).
#[test]
fn fuzz_routing_pattern_is_linear() {
    run_target(
        "routing-long",
        |rng| {
            let n = 1 + rng.index(60);
            let mut pat = Vec::new();
            for i in 0..n {
                if i > 0 {
                    pat.push(b'/');
                }
                pat.extend_from_slice(rng.pick(&[
                    &b"**"[..],
                    b"*a*a*a*a*a*a*b",
                    b"a",
                    b"*",
                    b"?*?*?*",
                ]));
            }
            pat.push(0);
            let m = rng.index(2000);
            for i in 0..m {
                if i > 0 {
                    pat.push(b'/');
                }
                pat.extend(std::iter::repeat_n(b'a', 1 + rng.index(200)));
            }
            pat
        },
        |input| {
            let nul = input.iter().position(|&b| b == 0).unwrap();
            let text = String::from_utf8_lossy(&input[..nul]).into_owned();
            if let Ok(p) = Pattern::parse(&text) {
                let _ = p.matches(Path::new(OsStr::from_bytes(&input[nul + 1..])));
            }
            Ok(())
        },
    );
}

#[test]
fn fuzz_parse_size() {
    const DICT: &[&[u8]] = &[
        b"K",
        b"M",
        b"G",
        b"T",
        b"B",
        b"iB",
        b"KiB",
        b"none",
        b"NONE",
        b"-",
        b".",
        b",",
        b" ",
        b"18446744073709551615",
        b"17179869184",
        b"0",
        b"\xc3\xa9",
        b"\xd9\xa3",
    ];
    run_target(
        "parse-size",
        |rng| {
            let seed = rng
                .pick(&[&b"1G"[..], b"512K", b"none", b"1024", b"5 GiB", b"16383P"])
                .to_vec();
            if rng.chance(3) {
                let mut out = Vec::new();
                for _ in 0..rng.index(6) {
                    out.extend_from_slice(rng.pick(DICT));
                }
                out
            } else {
                mutate(rng, &seed, DICT, 200)
            }
        },
        |input| {
            let s = String::from_utf8_lossy(input);
            match parse_size(&s) {
                Ok(Some(n)) => {
                    let back = parse_size(&n.to_string());
                    if back != Ok(Some(n)) {
                        return Err(format!("{s:?} = {n}, but {n} parses as {back:?}"));
                    }
                    let _ = spoolfs::config::format_size(n);
                }
                Ok(None) => {
                    if !s.trim().eq_ignore_ascii_case("none") {
                        return Err(format!("{s:?} parsed as unlimited"));
                    }
                }
                Err(e) => {
                    if e.is_empty() {
                        return Err("empty error".into());
                    }
                }
            }
            Ok(())
        },
    );
}

// --- known bugs, minimal reproductions -------------------------------------------------

/// Was a bug (fixed in src/layout/mod.rs: `display` escapes `%`, `@` and edge
/// whitespace): a tenant containing `@` (from a cyrus.header
/// `N a@b!user.x`, or `default_tenant`) or a tenant-less folder containing
/// `@` displayed ambiguously and parsed back as a different mailbox, so a
/// run-time limit persisted by `display()` (src/quota/overrides.rs
/// `Overrides::to_file`) moved to another mailbox after a restart.
#[test]
fn display_round_trips_with_at_signs() {
    let from_header = parse_cyrus_header(&header("%(N a@b!user.x)"), None).unwrap();
    assert_eq!(from_header.tenant.as_deref(), Some("a@b"));
    assert_eq!(
        FolderRef::parse_display(&from_header.display()),
        Ok(from_header)
    );
    // quota set --mailbox 'a@b/' names {None, "a@b"}; persisted as "a%40b",
    // and read back as the same mailbox after a restart.
    let typed = FolderRef::parse_display("a@b/").unwrap();
    assert_eq!(
        typed,
        FolderRef {
            tenant: None,
            folder: "a@b".into()
        }
    );
    assert_eq!(FolderRef::parse_display(&typed.display()), Ok(typed));
}

/// Was a bug (`parse_display` trims, the path and header parsers do not):
/// a Cyrus mailbox `user.john.Sent ` (trailing space; legal in IMAP) did
/// not survive the limits file round trip. `display` now escapes edge
/// whitespace (`user/john/Sent%20`), which `quota set --mailbox` accepts.
#[test]
fn display_round_trips_with_edge_whitespace() {
    // Without virtdomains and default_tenant (the display has no `@tenant`).
    let f = parse_cyrus_header(&header("%(N \"user.john.Sent \")"), None).unwrap();
    assert_eq!(f.folder, "user/john/Sent ");
    assert_eq!(FolderRef::parse_display(&f.display()), Ok(f));
}

/// Was a bug (fixed in src/config/parse.rs `parse_mailboxes`): `spoolfs check`
/// accepted mailbox keys the ledger then refused at mount time.
#[test]
fn config_refuses_mailbox_keys_the_ledger_cannot_read() {
    let text =
        "[partitions]\na = \"/srv/a\"\n[mailboxes.\"user//john@example.org\"]\nlimit = \"1G\"\n";
    let err = Config::parse(text, Path::new("x.toml")).expect_err("accepted");
    assert!(err.to_string().contains("mailboxes"), "{err}");
}
