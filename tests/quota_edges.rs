//! Adversarial quota edges on a real mount: fallocate modes,
//! copy_file_range, sparse writes, racing O_APPEND writers, truncates and
//! open-unlinked files, renames over (hard-linked) names, directory renames
//! carrying hard links across tenants, link counts above two, and shared
//! mappings. After every scenario the reported usage is compared with a
//! recount of the backing partitions, and where cheap also after a remount
//! (which rebuilds usage by scanning).
//!
//! Configuration (tests/common/quota.rs): john 256K, example.org 1M,
//! other.org 512K, jane/bob/alice without a mailbox limit.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Arc, Barrier};

use common::quota::*;
use common::{Mount, mkdirs, used};

// --- helpers -----------------------------------------------------------------

/// The used bytes of the four mailboxes and two tenants BASE knows.
fn snapshot(m: &Mount) -> Vec<(&'static str, u64)> {
    let u = m.usage();
    let mut v: Vec<(&'static str, u64)> = [JOHN_MB, JANE_MB, BOB_MB, ALICE_MB]
        .into_iter()
        .map(|n| (n, used(&u, "mailboxes", n)))
        .collect();
    for t in ["example.org", "other.org"] {
        v.push((t, used(&u, "tenants", t)));
    }
    v
}

/// Usage equals the disk now, and again after a remount rebuilt it; the
/// rebuilt numbers equal the incremental ones.
#[track_caller]
fn check_with_remount(m: &mut Mount) {
    assert_matches_disk(m);
    let before = snapshot(m);
    m.restart();
    assert_eq!(snapshot(m), before, "usage rebuilt at mount differs");
    assert_matches_disk(m);
}

fn drop_caches() {
    // Dentries and inodes: the kernel forgets the nodes it does not use.
    fs::write("/proc/sys/vm/drop_caches", "2").ok();
}

fn size_of(m: &Mount, rel: &str) -> u64 {
    fs::metadata(m.path(rel)).unwrap().len()
}

fn rw(m: &Mount, rel: &str) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(rel))
        .unwrap_or_else(|e| panic!("open {rel}: {e}"))
}

/// `copy_file_range` until `len` bytes are copied or the source ends.
fn copy_all(fin: &File, off_in: u64, fout: &File, off_out: u64, len: u64) -> io::Result<u64> {
    let mut done = 0;
    while done < len {
        let n = copy_range(fin, off_in + done, fout, off_out + done, len - done)? as u64;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `model` as the file would be after writing `data` at `off`.
fn apply(model: &mut Vec<u8>, off: u64, data: &[u8]) {
    let end = off as usize + data.len();
    if model.len() < end {
        model.resize(end, 0);
    }
    model[off as usize..end].copy_from_slice(data);
}

/// Fills john to exactly 256K: `1.` (200K) and `2.` (56K - `short`).
/// Returns the second file's name and content.
fn john_nearly_full(m: &Mount, short: u64) -> (String, Vec<u8>) {
    put_n(m, &format!("{JOHN}/1."), 200 * K, 1);
    let b = format!("{JOHN}/2.");
    let data = put_n(m, &b, 56 * K - short, 2);
    assert_eq!(mb(m, JOHN_MB), 256 * K - short);
    (b, data)
}

// --- fallocate ----------------------------------------------------------------

#[test]
fn fallocate_modes_at_and_near_the_limit() {
    let mut m = boxes("", &[JOHN]);
    // 4K of room left.
    let (b, mut model) = john_nearly_full(&m, 4 * K);
    let f = rw(&m, &b);
    let full = |m: &Mount, want_john: u64, model: &[u8], what: &str| {
        assert_eq!(mb(m, JOHN_MB), want_john, "john after {what}");
        assert_eq!(tn(m, "example.org"), want_john, "tenant after {what}");
        assert_file(m, &b, model);
        assert_matches_disk(m);
    };

    // Plain, within the size: nothing grows.
    fallocate(&f, 0, 0, 20 * K).unwrap();
    full(&m, 252 * K, &model, "plain fallocate inside the file");
    // Plain, one byte past the room: refused, nothing changed.
    assert_edquot(fallocate(&f, 0, 52 * K, 4 * K + 1), "plain fallocate +4K+1");
    full(&m, 252 * K, &model, "refused plain fallocate");
    // KEEP_SIZE past the end would take disk that no size shows, so no
    // limit would see it: refused. Inside the file it is allowed.
    let past = fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 52 * K, 512 * K);
    assert_eq!(past.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
    full(&m, 252 * K, &model, "fallocate KEEP_SIZE past EOF");
    fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, 0, 52 * K).unwrap();
    full(&m, 252 * K, &model, "fallocate KEEP_SIZE inside the file");
    // PUNCH_HOLE|KEEP_SIZE inside the file and across its end.
    let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
    fallocate(&f, punch, 4 * K, 8 * K).unwrap();
    model[4 * K as usize..12 * K as usize].fill(0);
    full(&m, 252 * K, &model, "punch hole inside");
    fallocate(&f, punch, 50 * K, 100 * K).unwrap();
    model[50 * K as usize..].fill(0);
    full(&m, 252 * K, &model, "punch hole across EOF");
    // ZERO_RANGE inside, and with KEEP_SIZE past the end.
    let zr = fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 16 * K, 4 * K);
    let zero_range = match zr {
        Ok(()) => {
            model[16 * K as usize..20 * K as usize].fill(0);
            true
        }
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => false,
        Err(e) => panic!("zero range inside: {e}"),
    };
    full(&m, 252 * K, &model, "zero range inside");
    if zero_range {
        let past = fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            40 * K,
            300 * K,
        );
        assert_eq!(past.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
        full(&m, 252 * K, &model, "zero range KEEP_SIZE past EOF");
        fallocate(
            &f,
            libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
            40 * K,
            12 * K,
        )
        .unwrap();
        model[40 * K as usize..].fill(0);
        full(&m, 252 * K, &model, "zero range KEEP_SIZE up to EOF");
        // Without KEEP_SIZE: growth, one byte too much is refused...
        assert_edquot(
            fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 50 * K, 6 * K + 1),
            "zero range +4K+1",
        );
        full(&m, 252 * K, &model, "refused zero range");
        // ...and exactly to the limit is allowed.
        fallocate(&f, libc::FALLOC_FL_ZERO_RANGE, 50 * K, 6 * K).unwrap();
        model.resize(56 * K as usize, 0);
        full(&m, 256 * K, &model, "zero range to the limit");
        f.set_len(52 * K).unwrap();
        model.truncate(52 * K as usize);
        full(&m, 252 * K, &model, "truncate back");
    }
    // Plain fallocate exactly to the limit: allowed, zeros.
    fallocate(&f, 0, 50 * K, 6 * K).unwrap();
    model.resize(56 * K as usize, 0);
    full(&m, 256 * K, &model, "plain fallocate to the limit");
    // At the limit: INSERT_RANGE would grow (refused, or unsupported by
    // FUSE); COLLAPSE_RANGE would shrink (refund, or unsupported). Either
    // way usage must equal the file.
    match fallocate(&f, libc::FALLOC_FL_INSERT_RANGE, 0, 4 * K) {
        Ok(()) => panic!("INSERT_RANGE grew a file in a full mailbox"),
        Err(e) => assert!(
            matches!(e.raw_os_error(), Some(libc::EDQUOT | libc::EOPNOTSUPP)),
            "insert range: {e}"
        ),
    }
    full(&m, 256 * K, &model, "insert range at the limit");
    match fallocate(&f, libc::FALLOC_FL_COLLAPSE_RANGE, 0, 4 * K) {
        Ok(()) => {
            model.drain(..4 * K as usize);
            full(&m, 252 * K, &model, "collapse range");
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EOPNOTSUPP), "collapse: {e}");
            full(&m, 256 * K, &model, "unsupported collapse range");
        }
    }
    drop(f);
    check_with_remount(&mut m);
    assert_file(&m, &b, &model);
}

// --- copy_file_range -----------------------------------------------------------

#[test]
fn copy_file_range_into_a_full_mailbox_and_within_the_limit() {
    let mut m = boxes("", &[JOHN, JANE]);
    let src = format!("{JANE}/src.");
    let sd = put_n(&m, &src, 100 * K, 7);
    let d = format!("{JOHN}/1.");
    let mut model = put_n(&m, &d, 200 * K, 1);
    let fin = File::open(m.path(&src)).unwrap();
    let fout = rw(&m, &d);
    let state = |m: &Mount, john: u64, model: &[u8], what: &str| {
        assert_eq!(mb(m, JOHN_MB), john, "john after {what}");
        assert_eq!(mb(m, JANE_MB), 100 * K, "jane after {what}");
        assert_eq!(tn(m, "example.org"), john + 100 * K, "tenant after {what}");
        assert_file(m, &d, model);
        assert_matches_disk(m);
    };
    // 60K past the end with 56K of room: refused whole.
    assert_edquot(copy_range(&fin, 0, &fout, 200 * K, 60 * K), "copy 60K");
    state(&m, 200 * K, &model, "refused copy");
    // Overlapping the end: grows by 50K of 56K: allowed, exact.
    let n = copy_all(&fin, 0, &fout, 190 * K, 60 * K).unwrap();
    assert_eq!(n, 60 * K);
    apply(&mut model, 190 * K, &sd[..60 * K as usize]);
    state(&m, 250 * K, &model, "copy across the end");
    // In place: no growth.
    copy_all(&fin, 0, &fout, 0, 100 * K).unwrap();
    apply(&mut model, 0, &sd);
    state(&m, 250 * K, &model, "copy in place");
    // The source's end clamps the length: 10K left in it > 6K of room...
    assert_edquot(
        copy_range(&fin, 90 * K, &fout, 250 * K, 64 * K),
        "copy clamped to 10K",
    );
    state(&m, 250 * K, &model, "refused clamped copy");
    // ...4K left < 6K room: allowed.
    let n = copy_all(&fin, 96 * K, &fout, 250 * K, 64 * K).unwrap();
    assert_eq!(n, 4 * K);
    apply(&mut model, 250 * K, &sd[96 * K as usize..]);
    state(&m, 254 * K, &model, "copy clamped to 4K");
    // Past the source's end: nothing to copy, nothing charged.
    assert_eq!(
        copy_range(&fin, 100 * K, &fout, 254 * K, 64 * K).unwrap(),
        0
    );
    state(&m, 254 * K, &model, "empty copy");
    // Within the destination itself, sparse far past the end: refused.
    let fin2 = File::open(m.path(&d)).unwrap();
    assert_edquot(
        copy_range(&fin2, 0, &fout, 1024 * K, 4 * K),
        "copy into a hole past EOF",
    );
    state(&m, 254 * K, &model, "refused sparse copy");
    // Exactly to the limit from the file itself.
    assert_eq!(copy_all(&fin2, 0, &fout, 254 * K, 2 * K).unwrap(), 2 * K);
    let head = model[..2 * K as usize].to_vec();
    apply(&mut model, 254 * K, &head);
    state(&m, 256 * K, &model, "self copy to the limit");
    assert_edquot(copy_range(&fin, 0, &fout, 256 * K, 1), "one byte more");
    state(&m, 256 * K, &model, "refused one byte");
    drop((fin, fin2, fout));
    check_with_remount(&mut m);
}

// --- sparse growth --------------------------------------------------------------

#[test]
fn pwrite_far_beyond_eof_at_the_limit_changes_nothing() {
    let mut m = boxes("", &[JOHN]);
    let (b, mut model) = john_nearly_full(&m, 6 * K);
    let f = rw(&m, &b);
    let unchanged = |m: &Mount, model: &[u8], john: u64, what: &str| {
        assert_eq!(mb(m, JOHN_MB), john, "john after {what}");
        assert_file(m, &b, model);
        assert_eq!(f.metadata().unwrap().len(), model.len() as u64, "fstat");
        assert_matches_disk(m);
    };
    for off in [256 * K, 1 << 20, 1 << 40, (1 << 62) - 1] {
        let r = f.write_at(b"x", off);
        match r {
            Err(e) if e.raw_os_error() == Some(libc::EFBIG) && off >= 1 << 40 => {}
            r => assert_edquot(r, &format!("1 byte at {off}")),
        }
        unchanged(&m, &model, 250 * K, &format!("pwrite at {off}"));
    }
    // A fresh empty file: its first byte far out is refused, size stays 0.
    let c = format!("{JOHN}/3.");
    let fc = File::create(m.path(&c)).unwrap();
    assert_edquot(fc.write_at(b"y", 100 * K), "sparse first byte");
    assert_eq!(size_of(&m, &c), 0);
    drop(fc);
    fs::remove_file(m.path(&c)).unwrap();
    // The last byte of the room: allowed, a hole of zeros before it.
    f.write_at(b"z", 56 * K - 1).unwrap();
    apply(&mut model, 56 * K - 1, b"z");
    unchanged(&m, &model, 256 * K, "pwrite of the last byte");
    assert_edquot(f.write_at(b"z", 56 * K), "one past the limit");
    unchanged(&m, &model, 256 * K, "refused pwrite");
    drop(f);
    check_with_remount(&mut m);
}

// --- racing appenders -------------------------------------------------------------

/// Chunk `seq` of writer `t`: position-dependent and distinct per writer.
fn chunk(t: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ (t as u8 * 64) ^ (seq as u8).wrapping_mul(7))
        .collect()
}

/// Writers append `sizes`-long chunks through `names` (writer `t` through
/// `names[t % len]`, all names of one file) until refused. Returns the
/// file's final size, after checking that the accepted writes tile it.
fn race_appenders(m: &Mount, names: &[String], sizes: &[usize]) -> u64 {
    let first = read_all(&m.path(&names[0]));
    let barrier = Arc::new(Barrier::new(sizes.len()));
    // Each writer: (start, accepted length, chunk) of every write accepted.
    let results: Vec<Vec<(u64, usize, Vec<u8>)>> = std::thread::scope(|s| {
        let hs: Vec<_> = sizes
            .iter()
            .enumerate()
            .map(|(t, &len)| {
                let barrier = barrier.clone();
                let path = m.path(&names[t % names.len()]);
                s.spawn(move || {
                    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
                    barrier.wait();
                    let mut done = Vec::new();
                    for seq in 0.. {
                        let c = chunk(t, seq, len);
                        match f.write(&c) {
                            Ok(n) => {
                                assert!(n > 0 && n <= len);
                                let end = f.stream_position().unwrap();
                                done.push((end - n as u64, n, c));
                            }
                            Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => break,
                            Err(e) => panic!("writer {t}: {e}"),
                        }
                    }
                    done
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let content = read_all(&m.path(&names[0]));
    let size = content.len() as u64;
    let accepted: u64 = results.iter().flatten().map(|w| w.1 as u64).sum();
    assert_eq!(
        size,
        first.len() as u64 + accepted,
        "size = Σ accepted writes"
    );
    // The accepted writes tile the file after the first part, each exactly
    // its own bytes: nothing of a refused write, nothing beyond the limit.
    assert_eq!(content[..first.len()], first[..]);
    let mut spans: Vec<&(u64, usize, Vec<u8>)> = results.iter().flatten().collect();
    spans.sort_by_key(|w| w.0);
    let mut pos = first.len() as u64;
    for (start, n, c) in spans {
        assert_eq!(*start, pos, "gap or overlap at {pos}");
        let got = &content[*start as usize..*start as usize + n];
        assert!(got == &c[..*n], "bytes at {start} are not the write's");
        pos += *n as u64;
    }
    assert_eq!(pos, size);
    size
}

const SIZES: [usize; 4] = [3001, 2503, 4099, 1531];

#[test]
fn racing_o_append_writers_stop_exactly_at_the_limit() {
    for extra in ["", "[mount]\nopen_handles = true\n"] {
        let mut m = boxes(extra, &[JOHN]);
        let rel = format!("{JOHN}/1.");
        put_n(&m, &rel, 10 * K + 123, 1);
        let size = race_appenders(&m, std::slice::from_ref(&rel), &SIZES);
        assert!(size <= 256 * K, "over the limit: {size}");
        assert!(size > 256 * K - 4099, "writers stopped early: {size}");
        assert_eq!(mb(&m, JOHN_MB), size);
        check_with_remount(&mut m);
    }
}

/// The same race through two names of one file, in john (256K) and jane
/// (no mailbox limit): john's limit stops every writer; both are charged.
#[test]
fn racing_appenders_through_names_in_two_mailboxes() {
    let mut m = boxes("", &[JOHN, JANE]);
    let names = [format!("{JOHN}/1."), format!("{JANE}/1.")];
    put_n(&m, &names[0], 7 * K + 5, 1);
    fs::hard_link(m.path(&names[0]), m.path(&names[1])).unwrap();
    let size = race_appenders(&m, &names, &SIZES);
    assert!(size <= 256 * K, "over john's limit: {size}");
    assert!(size > 256 * K - 4099, "writers stopped early: {size}");
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (size, size));
    assert_eq!(tn(&m, "example.org"), 2 * size);
    check_with_remount(&mut m);
}

// --- truncate, and a file open past its last name -------------------------------

#[test]
fn truncate_up_and_down_is_charged_exactly() {
    let mut m = boxes("", &[JOHN]);
    let a = format!("{JOHN}/1.");
    let mut model = put_n(&m, &a, 100 * K, 1);
    path_truncate(&m.path(&a), 256 * K).unwrap();
    model.resize(256 * K as usize, 0);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_edquot(path_truncate(&m.path(&a), 256 * K + 1), "truncate +1");
    assert_file(&m, &a, &model);
    path_truncate(&m.path(&a), 10 * K).unwrap();
    model.truncate(10 * K as usize);
    assert_eq!(mb(&m, JOHN_MB), 10 * K);
    // Up again through a descriptor: the old bytes must not come back.
    let f = rw(&m, &a);
    f.set_len(200 * K).unwrap();
    model.resize(200 * K as usize, 0);
    assert_eq!(mb(&m, JOHN_MB), 200 * K);
    assert_file(&m, &a, &model);
    f.set_len(0).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 0);
    f.set_len(256 * K).unwrap();
    assert_edquot(f.set_len(256 * K + 4096), "ftruncate past");
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    f.set_len(K).unwrap();
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), K);
    check_with_remount(&mut m);
}

/// SEMANTICS.md: usage counts the files with a name; unlink refunds at
/// once even while the file is open; the open file stays writable. So a
/// nameless file is charged to nobody, before and after its last close,
/// and its room is free for others meanwhile.
#[test]
fn an_open_unlinked_file_is_charged_to_nobody() {
    for extra in ["", "[mount]\nopen_handles = true\n"] {
        open_unlinked(extra);
    }
}

fn open_unlinked(extra: &str) {
    let mut m = boxes(extra, &[JOHN]);
    put_n(&m, &format!("{JOHN}/1."), 150 * K, 1);
    let b = format!("{JOHN}/2.");
    put_n(&m, &b, 50 * K, 2);
    let mut f = rw(&m, &b);
    fs::remove_file(m.path(&b)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 150 * K, "unlink refunds while open");
    // Shrink and grow it (within and beyond john's room).
    f.set_len(20 * K).unwrap();
    assert_eq!(f.metadata().unwrap().len(), 20 * K);
    assert_eq!(mb(&m, JOHN_MB), 150 * K, "ftruncate of a nameless file");
    f.set_len(100 * K).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 150 * K, "ftruncate up of a nameless file");
    match f.set_len(300 * K) {
        Ok(()) => assert_eq!(f.metadata().unwrap().len(), 300 * K),
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::EDQUOT), "{e}");
            assert_eq!(f.metadata().unwrap().len(), 100 * K);
        }
    }
    f.seek(SeekFrom::End(0)).unwrap();
    let _ = f.write(&pat(8 * K, 3));
    assert_eq!(mb(&m, JOHN_MB), 150 * K, "writes to a nameless file");
    assert_matches_disk(&m);
    // Its room is free for a named file meanwhile.
    put_n(&m, &format!("{JOHN}/3."), 106 * K, 4);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    drop(f);
    drop_caches();
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(mb(&m, JOHN_MB), 256 * K, "after the last close");
    check_with_remount(&mut m);
}

// --- renames over existing names ----------------------------------------------------

#[test]
fn rename_over_files_and_hard_linked_names_in_other_mailboxes() {
    let mut m = boxes("", &[JOHN, JANE, ALICE]);
    let j = |n: &str| format!("{JOHN}/{n}");
    let ja = |n: &str| format!("{JANE}/{n}");
    let al = |n: &str| format!("{ALICE}/{n}");
    put_n(&m, &j("1."), 200 * K, 1);
    let j2 = put_n(&m, &j("2."), 56 * K, 2);
    put_n(&m, &al("1."), 80 * K, 3);
    // Over a file in another tenant: alice refunded 80K, charged 56K.
    fs::rename(m.path(&j("2.")), m.path(&al("1."))).unwrap();
    assert_file(&m, &al("1."), &j2);
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, ALICE_MB), tn(&m, "other.org")),
        (200 * K, 56 * K, 56 * K)
    );
    assert_eq!(tn(&m, "example.org"), 200 * K);
    assert_matches_disk(&m);

    // Over a name whose file has a second name in the same mailbox: that
    // file stays charged there once.
    put_n(&m, &ja("h1."), 40 * K, 4);
    fs::hard_link(m.path(&ja("h1.")), m.path(&ja("h2."))).unwrap();
    put_n(&m, &j("k."), 10 * K, 5);
    assert_eq!(mb(&m, JANE_MB), 40 * K);
    drop_caches();
    fs::rename(m.path(&j("k.")), m.path(&ja("h1."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (200 * K, 50 * K));
    assert_matches_disk(&m);

    // Over a name whose file also has a name in another tenant: jane is
    // refunded, alice keeps it.
    put_n(&m, &al("x."), 30 * K, 6);
    fs::hard_link(m.path(&al("x.")), m.path(&ja("y."))).unwrap();
    assert_eq!((mb(&m, JANE_MB), mb(&m, ALICE_MB)), (80 * K, 86 * K));
    put_n(&m, &j("m."), 5 * K, 7);
    fs::rename(m.path(&j("m.")), m.path(&ja("y."))).unwrap();
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), mb(&m, ALICE_MB)),
        (200 * K, 55 * K, 86 * K)
    );
    assert_matches_disk(&m);

    // Onto another name of the same file (POSIX: nothing happens).
    put_n(&m, &j("f."), 20 * K, 8);
    fs::hard_link(m.path(&j("f.")), m.path(&ja("f."))).unwrap();
    let before = snapshot(&m);
    fs::rename(m.path(&j("f.")), m.path(&ja("f."))).unwrap();
    assert!(m.path(&j("f.")).exists() && m.path(&ja("f.")).exists());
    assert_eq!(snapshot(&m), before, "rename onto the same file");
    assert_matches_disk(&m);

    // john full; jane's name of f. moves into john, which has f. already:
    // nothing is asked of john, jane is refunded.
    put_n(&m, &j("fill."), 36 * K, 9);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    drop_caches();
    fs::rename(m.path(&ja("f.")), m.path(&j("f2."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (256 * K, 55 * K));
    // And out again, over a file in jane: john keeps f. (still named j/f.).
    fs::rename(m.path(&j("f2.")), m.path(&ja("h2."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (256 * K, 35 * K));
    check_with_remount(&mut m);
}

#[test]
fn directory_rename_with_hard_links_inside_across_tenants() {
    let mut m = boxes("", &[JOHN, JANE, ALICE]);
    let sent = format!("{JOHN}/Sent");
    mkdirs(&m, &format!("{sent}/sub"));
    let s = |n: &str| format!("{sent}/{n}");
    put_n(&m, &s("1."), 10 * K, 1); // one name
    put_n(&m, &s("2."), 20 * K, 2); // two names, both inside
    fs::hard_link(m.path(&s("2.")), m.path(&s("sub/3."))).unwrap();
    put_n(&m, &s("4."), 30 * K, 3); // also named in john, outside Sent
    fs::hard_link(m.path(&s("4.")), m.path(&format!("{JOHN}/4."))).unwrap();
    put_n(&m, &s("5."), 40 * K, 4); // also named in jane
    fs::hard_link(m.path(&s("5.")), m.path(&format!("{JANE}/5."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (100 * K, 40 * K));
    assert_eq!(tn(&m, "example.org"), 140 * K);
    drop_caches();
    let dst = format!("{ALICE}/Sent");
    fs::rename(m.path(&sent), m.path(&dst)).unwrap();
    let want = |m: &Mount, what: &str| {
        assert_eq!(
            (mb(m, JOHN_MB), mb(m, JANE_MB), mb(m, ALICE_MB)),
            (30 * K, 40 * K, 100 * K),
            "{what}"
        );
        assert_eq!(
            (tn(m, "example.org"), tn(m, "other.org")),
            (70 * K, 100 * K),
            "{what}"
        );
        assert_matches_disk(m);
    };
    want(&m, "after the directory rename");
    // Growth through a moved name charges its new roots: alice and jane.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{dst}/5.")))
        .unwrap();
    f.write_all(&pat(K, 5)).unwrap();
    drop(f);
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), mb(&m, ALICE_MB)),
        (30 * K, 41 * K, 101 * K)
    );
    path_truncate(&m.path(&format!("{dst}/5.")), 40 * K).unwrap();
    want(&m, "after growing and shrinking 5.");
    check_with_remount(&mut m);
    // Back into john, filled so the net growth (70K: 4. is there already)
    // does not fit: refused, nothing moved.
    put_n(&m, &format!("{JOHN}/fill."), 190 * K, 6);
    assert_edquot(
        fs::rename(m.path(&dst), m.path(&sent)),
        "directory back into a full john",
    );
    assert!(m.path(&format!("{dst}/sub/3.")).exists());
    assert_eq!(mb(&m, ALICE_MB), 100 * K);
    assert_eq!(mb(&m, JOHN_MB), 220 * K);
    assert_matches_disk(&m);
    // With exactly 70K free it fits (the 30K of 4. needs no room: john
    // has it already).
    fs::remove_file(m.path(&format!("{JOHN}/fill."))).unwrap();
    put_n(&m, &format!("{JOHN}/fill."), 156 * K, 7);
    fs::rename(m.path(&dst), m.path(&sent)).unwrap();
    assert_eq!(
        (mb(&m, JOHN_MB), mb(&m, JANE_MB), mb(&m, ALICE_MB)),
        (256 * K, 40 * K, 0)
    );
    check_with_remount(&mut m);
}

// --- links ---------------------------------------------------------------------------

#[test]
fn link_into_another_mailbox_then_unlink_the_original() {
    let mut m = boxes("", &[JOHN, JANE]);
    let a = format!("{JOHN}/1.");
    let b = format!("{JANE}/1.");
    let data = put_n(&m, &a, 30 * K, 1);
    fs::hard_link(m.path(&a), m.path(&b)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (30 * K, 30 * K));
    drop_caches();
    fs::remove_file(m.path(&a)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 30 * K));
    assert_eq!(tn(&m, "example.org"), 30 * K);
    assert_file(&m, &b, &data);
    assert_eq!(fs::metadata(m.path(&b)).unwrap().nlink(), 1);
    // The remaining name is an ordinary one-name file: growth charges only jane.
    let mut f = OpenOptions::new().append(true).open(m.path(&b)).unwrap();
    f.write_all(&pat(2 * K, 2)).unwrap();
    drop(f);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 32 * K));
    check_with_remount(&mut m);
    fs::remove_file(m.path(&b)).unwrap();
    assert_eq!(tn(&m, "example.org"), 0);
    assert_matches_disk(&m);
}

#[test]
fn many_names_in_one_root_are_charged_once_until_the_last_goes() {
    let mut m = boxes("", &[JOHN, JANE]);
    for d in ["Trash", "Sent", "Sent/2024"] {
        mkdirs(&m, &format!("{JOHN}/{d}"));
    }
    let names: Vec<String> = ["1.", "Trash/1.", "Sent/1.", "Sent/2024/1.", "2."]
        .iter()
        .map(|n| format!("{JOHN}/{n}"))
        .collect();
    put_n(&m, &names[0], 40 * K, 1);
    // Fill john: links inside a full mailbox still cost nothing.
    put_n(&m, &format!("{JOHN}/fill."), 216 * K, 2);
    for n in &names[1..] {
        fs::hard_link(m.path(&names[0]), m.path(n)).unwrap();
    }
    fs::hard_link(m.path(&names[0]), m.path(&format!("{JANE}/1."))).unwrap();
    assert_eq!(fs::metadata(m.path(&names[0])).unwrap().nlink(), 6);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (256 * K, 40 * K));
    // Unlink john's names one by one (the first, so the charged folder
    // moves), with forgets and a remount in between.
    for (i, n) in names.iter().enumerate() {
        fs::remove_file(m.path(n)).unwrap();
        let want = if i + 1 == names.len() {
            216 * K
        } else {
            256 * K
        };
        assert_eq!(mb(&m, JOHN_MB), want, "after unlinking {n}");
        assert_eq!(mb(&m, JANE_MB), 40 * K, "jane after unlinking {n}");
        assert_matches_disk(&m);
        match i {
            1 => drop_caches(),
            2 => check_with_remount(&mut m),
            _ => {}
        }
    }
    // The 40K is free again for john.
    put_n(&m, &format!("{JOHN}/3."), 40 * K, 3);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    check_with_remount(&mut m);
}

// --- shared mappings -------------------------------------------------------------------

#[test]
fn shared_mmap_writes_cannot_grow_and_ftruncate_is_checked() {
    let mut m = boxes("", &[JOHN]);
    // 100 bytes of room; the file ends inside a page.
    let (b, mut model) = john_nearly_full(&m, 100);
    let f = rw(&m, &b);
    let len = model.len();
    let map = common::map_shared(&f, len);
    let bytes = unsafe { std::slice::from_raw_parts_mut(map, len) };
    let new = pat(len as u64, 77);
    bytes.copy_from_slice(&new);
    model.copy_from_slice(&new);
    assert_eq!(unsafe { libc::msync(map.cast(), len, libc::MS_SYNC) }, 0);
    assert_eq!(mb(&m, JOHN_MB), 256 * K - 100, "mmap writes grow nothing");
    assert_file(&m, &b, &model);
    // Growing while mapped: checked like any truncate.
    assert_edquot(f.set_len(len as u64 + 101), "ftruncate past the limit");
    assert_file(&m, &b, &model);
    f.set_len(len as u64 + 100).unwrap();
    model.resize(len + 100, 0);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // Write through the mapping again, then unmap: nothing more charged.
    bytes[..4].copy_from_slice(b"MMAP");
    model[..4].copy_from_slice(b"MMAP");
    assert_eq!(unsafe { libc::msync(map.cast(), len, libc::MS_SYNC) }, 0);
    assert_eq!(unsafe { libc::munmap(map.cast(), len) }, 0);
    assert_edquot(f.set_len(len as u64 + 101), "ftruncate after munmap");
    drop(f);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_file(&m, &b, &model);
    check_with_remount(&mut m);
}

// --- directory renames racing with size changes ---------------------------------

/// Renames `a` to `b` and back, at least `pairs` times and until the
/// writer counting in `writes` has done `min` writes meanwhile, however busy
/// the machine is.
fn rename_back_and_forth(
    m: &Mount,
    (a, b): (&str, &str),
    pairs: u32,
    (writes, min): (&std::sync::atomic::AtomicU32, u32),
) {
    let mut done = 0;
    while done < pairs || writes.load(std::sync::atomic::Ordering::Relaxed) < min {
        fs::rename(m.path(a), m.path(b)).unwrap();
        fs::rename(m.path(b), m.path(a)).unwrap();
        done += 1;
        assert!(done < 20_000, "the writer made no progress");
    }
}

#[test]
fn directory_rename_racing_a_writer_keeps_usage_exact() {
    let mut m = boxes("", &[JANE, BOB]);
    let (a, b) = (format!("{JANE}/Box"), format!("{BOB}/Box"));
    mkdirs(&m, &a);
    put_n(&m, &format!("{a}/static."), 3 * K, 1);
    let w = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path(&format!("{a}/w.")))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut w = &w;
            let chunk = pat(512, 3);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.write_all(&chunk).unwrap();
                if w.metadata().unwrap().len() >= 16 * K {
                    w.set_len(0).unwrap();
                }
            }
        });
        rename_back_and_forth(&m, (&a, &b), 400, (&writes, 5000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    drop(w);
    let size = size_of(&m, &format!("{a}/w."));
    assert_eq!(mb(&m, BOB_MB), 0, "bob holds bytes of nothing");
    assert_eq!(mb(&m, JANE_MB), 3 * K + size, "jane");
    assert_matches_disk(&m);
    check_with_remount(&mut m);
}

#[test]
fn directory_rename_racing_creates_in_a_subfolder_keeps_usage_exact() {
    let mut m = boxes("", &[JANE, BOB]);
    let (a, b) = (format!("{JANE}/Box"), format!("{BOB}/Box"));
    mkdirs(&m, &format!("{a}/sub"));
    // The subfolder's directory stays open (and its node known) throughout.
    let sub = File::open(m.path(&format!("{a}/sub"))).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let made = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut made = 0u32;
            let dirfd = sub.as_raw_fd();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && made < 800 {
                let name = std::ffi::CString::new(format!("{made}.")).unwrap();
                let fd = unsafe {
                    libc::openat(dirfd, name.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o600)
                };
                assert!(fd >= 0, "create: {}", io::Error::last_os_error());
                let f = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                (&f).write_all(&pat(200, made as u8)).unwrap();
                made += 1;
            }
            made
        });
        for _ in 0..300 {
            fs::rename(m.path(&a), m.path(&b)).unwrap();
            fs::rename(m.path(&b), m.path(&a)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap()
    });
    drop(sub);
    assert!(made > 0);
    assert_eq!(mb(&m, BOB_MB), 0, "bob holds bytes of nothing");
    assert_eq!(mb(&m, JANE_MB), made as u64 * 200, "jane");
    // Files made during the race, grown now, must charge jane only.
    for i in 0..made.min(200) {
        let mut f = OpenOptions::new()
            .append(true)
            .open(m.path(&format!("{a}/sub/{i}.")))
            .unwrap();
        f.write_all(b"x").unwrap();
    }
    assert_eq!(mb(&m, BOB_MB), 0, "bob after growth");
    assert_matches_disk(&m);
    check_with_remount(&mut m);
}

/// SEMANTICS.md: a rename is checked on its net effect, and EDQUOT comes
/// only when a limit would be exceeded. A folder moving between two
/// mailboxes of one tenant changes nothing for the tenant, so a writer
/// elsewhere in the tenant (at 60% of its limit) must never be refused.
#[test]
fn a_folder_moving_within_a_tenant_does_not_block_its_other_writers() {
    let m = boxes("", &[JOHN, JANE, BOB]);
    let (a, b) = (format!("{JANE}/Box"), format!("{BOB}/Box"));
    mkdirs(&m, &a);
    for i in 0..6 {
        put_n(&m, &format!("{a}/{i}."), 100 * K, i as u8);
    }
    assert_eq!(tn(&m, "example.org"), 600 * K);
    let w = OpenOptions::new()
        .create(true)
        .append(true)
        .open(m.path(&format!("{JOHN}/w.")))
        .unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let writes = std::sync::atomic::AtomicU32::new(0);
    let refused = std::thread::scope(|s| {
        let h = s.spawn(|| {
            let mut w = &w;
            let mut refused = 0u32;
            let chunk = pat(K, 3);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                match w.write(&chunk) {
                    Ok(_) => {}
                    Err(e) if e.raw_os_error() == Some(libc::EDQUOT) => refused += 1,
                    Err(e) => panic!("write: {e}"),
                }
                if w.metadata().unwrap().len() >= 16 * K {
                    w.set_len(0).unwrap();
                }
            }
            refused
        });
        rename_back_and_forth(&m, (&a, &b), 300, (&writes, 3000));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        h.join().unwrap()
    });
    drop(w);
    assert_eq!(
        refused, 0,
        "writes refused with the tenant at 60% while a folder moved within it"
    );
    assert_matches_disk(&m);
}

// --- exchange, open files losing names, run-time quota roots ----------------------

fn exchange(m: &Mount, a: &str, b: &str) {
    let (pa, pb) = (cpath(&m.path(a)), cpath(&m.path(b)));
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            pa.as_ptr(),
            libc::AT_FDCWD,
            pb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(r, 0, "exchange {a} {b}: {}", io::Error::last_os_error());
}

#[test]
fn exchange_and_open_files_losing_hard_linked_names() {
    let mut m = boxes("", &[JOHN, JANE]);
    let j = |n: &str| format!("{JOHN}/{n}");
    let ja = |n: &str| format!("{JANE}/{n}");
    // F (20K) named in john and jane; G (10K) in jane.
    put_n(&m, &j("a."), 20 * K, 1);
    fs::hard_link(m.path(&j("a.")), m.path(&ja("c."))).unwrap();
    put_n(&m, &ja("b."), 10 * K, 2);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (20 * K, 30 * K));
    // Exchange john's F with jane's G: F's names are both in jane now.
    exchange(&m, &j("a."), &ja("b."));
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (10 * K, 20 * K));
    assert_matches_disk(&m);
    // F open through jane/b.; its other name goes, then the last one is
    // replaced by a rename while open: F is nameless, charged to nobody.
    let mut f = OpenOptions::new()
        .read(true)
        .append(true)
        .open(m.path(&ja("b.")))
        .unwrap();
    fs::remove_file(m.path(&ja("c."))).unwrap();
    assert_eq!(mb(&m, JANE_MB), 20 * K, "one of two names in jane");
    fs::rename(m.path(&j("a.")), m.path(&ja("b."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 10 * K));
    f.write_all(&pat(4 * K, 3)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 10 * K));
    drop(f);
    assert_matches_disk(&m);
    // H named in john and jane, open through john's name, which goes:
    // growth through the descriptor charges jane alone.
    put_n(&m, &j("h."), 5 * K, 4);
    fs::hard_link(m.path(&j("h.")), m.path(&ja("h."))).unwrap();
    let mut h = OpenOptions::new()
        .append(true)
        .open(m.path(&j("h.")))
        .unwrap();
    fs::remove_file(m.path(&j("h."))).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 15 * K));
    h.write_all(&pat(K, 5)).unwrap();
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (0, 16 * K));
    // john full: H has no name in john any more, so growth is jane's only.
    put_n(&m, &j("fill."), 256 * K, 6);
    h.write_all(&pat(K, 7)).unwrap();
    h.set_len(2 * K).unwrap();
    drop(h);
    assert_eq!((mb(&m, JOHN_MB), mb(&m, JANE_MB)), (256 * K, 12 * K));
    check_with_remount(&mut m);
}

#[test]
fn a_run_time_quota_root_recharges_hard_links_spanning_it() {
    let mut m = boxes("", &[JOHN]);
    let archive = format!("{JOHN}/Archive");
    mkdirs(&m, &archive);
    put_n(&m, &format!("{JOHN}/1."), 30 * K, 1);
    fs::hard_link(
        m.path(&format!("{JOHN}/1.")),
        m.path(&format!("{archive}/1.")),
    )
    .unwrap();
    put_n(&m, &format!("{archive}/2."), 10 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 40 * K);
    let arch = |m: &Mount| used(&m.usage(), "mailboxes", ARCHIVE_MB);
    let (ok, _, err) = m.cli(&["quota", "set", "--mailbox", ARCHIVE_MB, "64K"]);
    assert!(ok, "{err}");
    // Archive is its own root: 1. counts in both, 2. in Archive only.
    assert_eq!((mb(&m, JOHN_MB), arch(&m)), (30 * K, 40 * K));
    assert_eq!(tn(&m, "example.org"), 70 * K);
    assert_eq!(
        backing_bytes_without(&m, JOHN, &archive),
        30 * K,
        "recount john"
    );
    // Growth through john's name charges both roots; Archive's limit binds.
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&format!("{JOHN}/1.")))
        .unwrap();
    f.write_all(&pat(24 * K, 3)).unwrap();
    assert_edquot(f.write(b"x"), "Archive at its 64K through john's name");
    drop(f);
    assert_eq!((mb(&m, JOHN_MB), arch(&m)), (54 * K, 64 * K));
    // The remount rebuilds the same.
    m.restart();
    assert_eq!((mb(&m, JOHN_MB), arch(&m)), (54 * K, 64 * K));
    let (ok, _, err) = m.cli(&["quota", "unset", "--mailbox", ARCHIVE_MB]);
    assert!(ok, "{err}");
    assert_eq!(mb(&m, JOHN_MB), 64 * K, "one root again: 1. once");
    assert_eq!(tn(&m, "example.org"), 64 * K);
    fs::remove_file(m.path(&format!("{JOHN}/1."))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 64 * K, "Archive/1. still named");
    fs::remove_file(m.path(&format!("{archive}/1."))).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 10 * K);
    check_with_remount(&mut m);
}

/// `recount` of `dir` on every partition, leaving out `skip`.
fn backing_bytes_without(m: &Mount, dir: &str, skip: &str) -> u64 {
    m.parts
        .iter()
        .map(|(n, _)| common::recount_without(&m.backing(n, dir), &m.backing(n, skip)))
        .sum()
}
