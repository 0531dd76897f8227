//! Growth on a real mount: the exact boundary, mailbox against tenant,
//! every growth operation refused changing nothing, refunds, and writers
//! against passthrough readers.
//!
//! Split from the former `tests/quota.rs`; helpers in `tests/common/quota.rs`.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};

use common::quota::*;

// --- the exact boundary -------------------------------------------------------

#[test]
fn write_to_exactly_the_limit_succeeds_one_byte_more_fails_unchanged() {
    let m = boxes("", &[JOHN]);
    let (f1, data) = fill_john_then_refuse_an_append(&m);
    // Overwriting in place does not grow: allowed.
    let mut f = OpenOptions::new().write(true).open(m.path(&f1)).unwrap();
    f.write_all(&pat(4 * K, 9)).unwrap();
    drop(f);
    let mut data = data;
    data[..4 * K as usize].copy_from_slice(&pat(4 * K, 9));
    assert_file(&m, &f1, &data);
    // A write at the last byte does not grow either; one past it does.
    let mut f = OpenOptions::new().write(true).open(m.path(&f1)).unwrap();
    f.seek(SeekFrom::Start(256 * K - 1)).unwrap();
    f.write_all(b"z").unwrap();
    data[256 * K as usize - 1] = b'z';
    assert_edquot(f.write(b"y"), "write one byte past the end at the limit");
    drop(f);
    assert_file(&m, &f1, &data);

    // A new file: the create (0 bytes) is fine, its first byte is not.
    let f2 = format!("{JOHN}/2.");
    let mut f = File::create(m.path(&f2)).unwrap();
    assert_edquot(f.write(b"y"), "first byte of a new message at the limit");
    drop(f);
    assert_eq!(fs::metadata(m.path(&f2)).unwrap().len(), 0);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_eq!(tn(&m, "example.org"), 256 * K);
    assert_matches_disk(&m);
}

#[test]
fn refused_large_write_keeps_previous_content_and_usage() {
    let m = boxes("", &[JOHN]);
    let f1 = format!("{JOHN}/1.");
    let data = put_n(&m, &f1, 100 * K, 3);
    // 200K more does not fit (156K room): whatever the kernel splits it
    // into, the call fails and nothing past the limit is written.
    let mut f = OpenOptions::new().append(true).open(m.path(&f1)).unwrap();
    let r = f.write_all(&pat(200 * K, 4));
    assert_edquot(r, "200K append with 156K room");
    drop(f);
    let size = fs::metadata(m.path(&f1)).unwrap().len();
    assert!(size <= 256 * K, "file grew past the limit: {size}");
    assert_eq!(
        read_all(&m.path(&f1))[..100 * K as usize],
        data[..],
        "old content kept"
    );
    assert_eq!(mb(&m, JOHN_MB), size);
    assert_matches_disk(&m);
}

// --- mailbox vs tenant ----------------------------------------------------------

#[test]
fn tenant_limit_caps_the_sum_of_its_mailboxes() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    put_n(&m, &format!("{JOHN}/1."), 200 * K, 1);
    // jane has no mailbox limit: only the tenant's remaining 824K.
    let jane1 = format!("{JANE}/1.");
    let jd = put_n(&m, &jane1, 824 * K, 2);
    assert_eq!(tn(&m, "example.org"), 1024 * K);
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path(&jane1))
        .unwrap();
    assert_edquot(f.write(b"x"), "jane: tenant full");
    drop(f);
    assert_file(&m, &jane1, &jd);
    // john still has 56K of mailbox room, but the tenant has none.
    let mut f = File::create(m.path(&format!("{JOHN}/2."))).unwrap();
    assert_edquot(
        f.write(b"x"),
        "john: tenant full although the mailbox is not",
    );
    drop(f);
    // Another tenant is not affected; its own limit applies.
    put_n(&m, &format!("{ALICE}/1."), 512 * K, 5);
    let mut f = File::create(m.path(&format!("{ALICE}/2."))).unwrap();
    assert_edquot(f.write(b"x"), "other.org full");
    drop(f);
    // Freeing jane's space makes room for john again.
    fs::remove_file(m.path(&jane1)).unwrap();
    put_n(&m, &format!("{JOHN}/2."), 56 * K, 6);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

// --- every growth operation --------------------------------------------------------

#[test]
fn every_growth_operation_is_refused_and_changes_nothing() {
    let m = boxes("", &[JOHN, JANE, ALICE]);
    let (a, b) = (format!("{JOHN}/1."), format!("{JOHN}/2."));
    let ad = put_n(&m, &a, 200 * K, 1);
    let bd = put_n(&m, &b, 56 * K, 2);
    let jane1 = format!("{JANE}/1.");
    let jd = put_n(&m, &jane1, 10 * K, 3);
    let alice1 = format!("{ALICE}/1.");
    let ald = put_n(&m, &alice1, 10 * K, 4);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    let before = m.usage();
    let unchanged = |what: &str| {
        assert_eq!(m.usage(), before, "usage changed by refused {what}");
        assert_file(&m, &a, &ad);
        assert_file(&m, &b, &bd);
        assert_file(&m, &jane1, &jd);
        assert_file(&m, &alice1, &ald);
        assert_matches_disk(&m);
    };

    let fb = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.path(&b))
        .unwrap();
    // write
    assert_edquot((&fb).write_at_end(b"x"), "write");
    unchanged("write");
    // ftruncate up
    assert_edquot(fb.set_len(56 * K + 1), "ftruncate up");
    unchanged("ftruncate");
    // truncate(2) by path up
    assert_edquot(path_truncate(&m.path(&b), 100 * K), "truncate up");
    unchanged("truncate");
    // fallocate growing the size
    assert_edquot(fallocate(&fb, 0, 0, 57 * K), "fallocate");
    unchanged("fallocate");
    assert_edquot(
        fallocate(&fb, libc::FALLOC_FL_ZERO_RANGE, 56 * K, 4 * K),
        "fallocate zero range",
    );
    unchanged("fallocate zero range");
    // fallocate KEEP_SIZE past the end would take disk no size shows:
    // refused as unsupported, nothing changed.
    let r = fallocate(&fb, libc::FALLOC_FL_KEEP_SIZE, 0, 64 * K);
    assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EOPNOTSUPP));
    unchanged("fallocate keep_size");
    // copy_file_range past the end
    let fa = File::open(m.path(&a)).unwrap();
    assert_edquot(copy_range(&fa, 0, &fb, 56 * K, 4 * K), "copy_file_range");
    unchanged("copy_file_range");
    // copy_file_range into a new empty file
    let c = format!("{JOHN}/3.");
    let fc = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path(&c))
        .unwrap();
    assert_edquot(
        copy_range(&fa, 0, &fc, 0, 4 * K),
        "copy_file_range into a new file",
    );
    drop(fc);
    assert_eq!(fs::metadata(m.path(&c)).unwrap().len(), 0);
    fs::remove_file(m.path(&c)).unwrap();
    unchanged("copy_file_range new");
    drop(fb);
    drop(fa);
    // link into a full mailbox
    assert_edquot(
        fs::hard_link(m.path(&jane1), m.path(&format!("{JOHN}/4."))),
        "link",
    );
    assert!(
        !m.path(&format!("{JOHN}/4.")).exists(),
        "refused link left a name"
    );
    assert!(
        !m.backing("fast", &format!("{JOHN}/4.")).exists(),
        "refused link left a backing name"
    );
    unchanged("link");
    // rename into another mailbox of the same tenant
    assert_edquot(
        fs::rename(m.path(&jane1), m.path(&format!("{JOHN}/5."))),
        "rename",
    );
    assert!(!m.path(&format!("{JOHN}/5.")).exists());
    unchanged("rename from another mailbox");
    // rename from another tenant
    assert_edquot(
        fs::rename(m.path(&alice1), m.path(&format!("{JOHN}/6."))),
        "rename across tenants",
    );
    assert!(!m.path(&format!("{JOHN}/6.")).exists());
    unchanged("rename from another tenant");
}

/// `File::write` at the current end (helper for the table above).
trait WriteAtEnd {
    fn write_at_end(self, data: &[u8]) -> io::Result<usize>;
}

impl WriteAtEnd for &File {
    fn write_at_end(self, data: &[u8]) -> io::Result<usize> {
        let end = self.metadata()?.len();
        std::os::unix::fs::FileExt::write_at(self, data, end)
    }
}

#[test]
fn open_o_trunc_then_rewrite_is_limited_like_any_write() {
    let m = boxes("", &[JOHN]);
    let a = format!("{JOHN}/cyrus.squat");
    let b = format!("{JOHN}/1.");
    put_n(&m, &a, 56 * K, 1);
    put_n(&m, &b, 200 * K, 2);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // O_TRUNC refunds at once: usage drops before anything is written.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    assert_eq!(mb(&m, JOHN_MB), 56 * K, "O_TRUNC refunds at once");
    // Rewriting up to the old size fits again; one byte more does not.
    let nd = pat(200 * K, 7);
    f.write_all(&nd).unwrap();
    assert_edquot(f.write(b"x"), "rewrite past the limit after O_TRUNC");
    drop(f);
    assert_file(&m, &b, &nd);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // O_TRUNC of a file another process still has open, then a bigger rewrite.
    let mut f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    let r = f.write_all(&pat(201 * K, 8));
    assert_edquot(r, "201K rewrite into 200K of room");
    drop(f);
    let size = fs::metadata(m.path(&b)).unwrap().len();
    assert!(size <= 200 * K);
    assert_eq!(mb(&m, JOHN_MB), 56 * K + size);
    assert_matches_disk(&m);
}

// --- refunds ----------------------------------------------------------------------

#[test]
fn shrinking_refunds_at_once() {
    let m = boxes("", &[JOHN]);
    let (a, b, c) = (
        format!("{JOHN}/1."),
        format!("{JOHN}/2."),
        format!("{JOHN}/3."),
    );
    put_n(&m, &a, 100 * K, 1);
    put_n(&m, &b, 100 * K, 2);
    put_n(&m, &c, 56 * K, 3);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    // unlink
    fs::remove_file(m.path(&a)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 156 * K);
    assert_eq!(tn(&m, "example.org"), 156 * K);
    // truncate down by path and by descriptor
    path_truncate(&m.path(&b), 40 * K).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 96 * K);
    let f = OpenOptions::new().write(true).open(m.path(&c)).unwrap();
    f.set_len(6 * K).unwrap();
    assert_eq!(
        mb(&m, JOHN_MB),
        46 * K,
        "ftruncate down refunds while still open"
    );
    drop(f);
    // O_TRUNC
    let f = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.path(&b))
        .unwrap();
    assert_eq!(mb(&m, JOHN_MB), 6 * K);
    drop(f);
    // fallocate collapse/punch: punch keeps the size (no refund), unlink of
    // an open file refunds at once even before the last close.
    let f = File::open(m.path(&c)).unwrap();
    fs::remove_file(m.path(&c)).unwrap();
    assert_eq!(mb(&m, JOHN_MB), 0, "unlink refunds while the file is open");
    drop(f);
    // All of the room is usable again.
    put_n(&m, &a, 256 * K, 4);
    assert_eq!(mb(&m, JOHN_MB), 256 * K);
    assert_matches_disk(&m);
}

/// The deliberate answer to passthrough (SEMANTICS.md): a read-only open of
/// a message file is served by the kernel; a writer arriving meanwhile gets
/// ETXTBSY (a passthrough write would bypass the ledger), and once the
/// readers are gone the writer's growth is refused at the limit as always.
#[test]
fn passthrough_readers_never_let_a_writer_past_the_limit() {
    // Passthrough needs a descriptor per open.
    let m = boxes("[mount]\nopen_handles = true\n", &[JOHN]);
    let msg = format!("{JOHN}/1.");
    let data = put_n(&m, &msg, 200 * K, 7);
    // The daemon may hear of the writer's close (an asynchronous RELEASE)
    // after the reader's OPEN; that reader is then served by the daemon
    // (SEMANTICS.md) and does not block writers. Retry until a reader is
    // passthrough, which a writer must then never get past.
    let mut attempts = 0;
    let reader = loop {
        attempts += 1;
        let reader = File::open(m.path(&msg)).unwrap();
        match OpenOptions::new().write(true).open(m.path(&msg)) {
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::ETXTBSY));
                break reader;
            }
            Ok(_) => {
                assert!(attempts < 50, "no read-only open was ever passthrough");
                drop(reader);
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
    };
    // The reader still reads the whole message (through the kernel).
    assert_eq!(fs::read(m.path(&msg)).unwrap(), data);
    drop(reader);

    // Writer first: readers now go through the daemon, and the writer's
    // growth past the 256K mailbox limit is refused, nothing changed.
    let mut w = OpenOptions::new().append(true).open(m.path(&msg)).unwrap();
    let r = File::open(m.path(&msg)).unwrap();
    assert_edquot(w.write_all(&pat(100 * K, 9)), "append past the limit");
    assert_eq!(fs::read(m.path(&msg)).unwrap(), data);
    assert_eq!(mb(&m, JOHN_MB), 200 * K);
    drop((w, r));
    assert_matches_disk(&m);
}

/// A reader that has closed never blocks a writer, although the kernel
/// sends its RELEASE asynchronously (it may reach the daemon after the
/// writer's OPEN when several request threads run). The message is above
/// the 128 KiB under which reads go through the page cache, so the readers
/// are passthrough.
#[test]
fn a_closed_passthrough_reader_never_blocks_the_next_writer() {
    let m = boxes("[mount]\nopen_handles = true\n", &[JOHN]);
    let msg = format!("{JOHN}/1.");
    let data = put_n(&m, &msg, 200 * K, 3);
    for round in 0..300 {
        assert_eq!(fs::read(m.path(&msg)).unwrap(), data, "round {round}");
        let w = OpenOptions::new().write(true).open(m.path(&msg));
        assert!(w.is_ok(), "round {round}: writer refused: {w:?}");
    }
    assert_matches_disk(&m);
}
