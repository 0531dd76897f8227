//! Directory listings as READDIR serves them, without open handles.
//!
//! The daemon answers OPENDIR with `ENOSYS`, so the kernel opens directories
//! by itself, caches their listings (`FOPEN_CACHE_DIR`) and sends READDIR
//! with no handle. A listing is therefore a snapshot kept on the directory,
//! and every offset handed to the kernel names both the snapshot (its
//! generation) and the position in it: a reader continuing at an offset —
//! from its own earlier request, or from the end of the kernel's cache that
//! another reader filled — gets the rest of the same snapshot, never a
//! shifted copy of a newer one.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::dir::DirEntryOut;

/// Snapshots kept per directory: the newest, and one being finished by a
/// reader that started before it. Older ones fall back to a fresh listing.
const KEPT: usize = 2;

/// Offsets are `generation << 32 | position`; the kernel's `loff_t` is
/// signed, so generations have 31 bits.
const GEN_BITS: u32 = 31;
const POS_MASK: u64 = (1 << 32) - 1;

static NEXT_GEN: AtomicU64 = AtomicU64::new(1);

fn next_gen() -> u64 {
    loop {
        let g = NEXT_GEN.fetch_add(1, Ordering::Relaxed) & ((1 << GEN_BITS) - 1);
        if g != 0 {
            return g; // 0 would make the first offset look like a rewind
        }
    }
}

/// The offset the kernel gets back for the entry after `pos`.
pub fn offset_after(generation: u64, pos: usize) -> u64 {
    generation << 32 | (pos as u64 + 1)
}

/// A snapshot and where to serve it from.
pub struct Page {
    pub generation: u64,
    pub entries: Arc<Vec<DirEntryOut>>,
    pub start: usize,
}

struct Snapshot {
    generation: u64,
    entries: Arc<Vec<DirEntryOut>>,
}

#[derive(Default)]
pub struct Listings {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    recent: VecDeque<Snapshot>,
    /// When the newest snapshot was started (see `listed_since`).
    taken: Option<Instant>,
}

impl Listings {
    /// What to serve at `offset`: a fresh snapshot (made by `list`) at 0 or
    /// when the one named by `offset` is gone, else the named one. A reader
    /// that has reached the end releases its snapshot.
    pub fn page<E>(
        &self,
        offset: u64,
        list: impl FnOnce() -> Result<Vec<DirEntryOut>, E>,
    ) -> Result<Page, E> {
        let (generation, start) = (offset >> 32, (offset & POS_MASK) as usize);
        if offset != 0 {
            let recent = &mut self.inner.lock().unwrap().recent;
            if let Some(i) = recent.iter().position(|s| s.generation == generation) {
                let entries = recent[i].entries.clone();
                if start >= entries.len() {
                    recent.remove(i); // read to the end: done with it
                }
                return Ok(Page {
                    generation,
                    entries,
                    start,
                });
            }
        }
        self.inner.lock().unwrap().taken = Some(Instant::now());
        let entries = Arc::new(list()?);
        let generation = next_gen();
        let recent = &mut self.inner.lock().unwrap().recent;
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(Snapshot {
            generation,
            entries: entries.clone(),
        });
        Ok(Page {
            generation,
            entries,
            start,
        })
    }

    /// Whether a snapshot was taken within `window`: a change to the
    /// directory now may race with a listing the kernel is still caching.
    pub fn listed_since(&self, window: Duration) -> bool {
        let taken = self.inner.lock().unwrap().taken;
        taken.is_some_and(|t| t.elapsed() < window)
    }

    #[cfg(test)]
    fn kept(&self) -> usize {
        self.inner.lock().unwrap().recent.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{DirEntryOut, GEN_BITS, KEPT, Listings, Page, next_gen, offset_after};
    use crate::fs::FileKind;

    fn entries(names: &[&str]) -> Vec<DirEntryOut> {
        names
            .iter()
            .enumerate()
            .map(|(i, n)| DirEntryOut {
                name: n.into(),
                kind: FileKind::RegularFile,
                ino: i as u64 + 10,
            })
            .collect()
    }

    fn ok(names: &[&str]) -> impl FnOnce() -> Result<Vec<DirEntryOut>, ()> {
        let e = entries(names);
        move || Ok(e)
    }

    fn names(p: &Page) -> Vec<String> {
        p.entries[p.start..]
            .iter()
            .map(|e| e.name.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_continuation_reads_the_same_snapshot_after_a_newer_one_was_taken() {
        let l = Listings::default();
        let first = l.page(0, ok(&["a", "b", "c"])).unwrap();
        let resume = offset_after(first.generation, 0); // a was handed out
        let newer = l.page(0, ok(&["b", "c"])).unwrap(); // a removed meanwhile
        assert_ne!(newer.generation, first.generation);
        let rest = l.page(resume, || -> Result<_, ()> { panic!("relisted") });
        assert_eq!(names(&rest.unwrap()), ["b", "c"]);
    }

    #[test]
    fn reaching_the_end_releases_the_snapshot() {
        let l = Listings::default();
        let p = l.page(0, ok(&["a", "b"])).unwrap();
        assert_eq!(l.kept(), 1);
        let end = l.page(offset_after(p.generation, 1), ok(&[])).unwrap();
        assert!(names(&end).is_empty());
        assert_eq!(l.kept(), 0);
    }

    #[test]
    fn an_evicted_snapshot_falls_back_to_a_fresh_listing_at_the_same_position() {
        let l = Listings::default();
        let old = l.page(0, ok(&["a", "b", "c"])).unwrap();
        l.page(0, ok(&["x"])).unwrap();
        l.page(0, ok(&["y"])).unwrap();
        assert_eq!(l.kept(), KEPT);
        let p = l.page(offset_after(old.generation, 0), ok(&["a", "b", "c", "d"]));
        let p = p.unwrap();
        assert_ne!(p.generation, old.generation);
        assert_eq!(names(&p), ["b", "c", "d"]);
    }

    #[test]
    fn offsets_are_positive_and_never_zero() {
        for _ in 0..1000 {
            let g = next_gen();
            let off = offset_after(g, 0);
            assert!(off > 0 && off <= i64::MAX as u64, "{off:#x}");
        }
        assert_eq!(offset_after((1 << GEN_BITS) - 1, 5) >> 32, (1 << 31) - 1);
    }

    #[test]
    fn a_listing_marks_the_directory_as_racing_changes_for_a_while() {
        let l = Listings::default();
        assert!(!l.listed_since(Duration::from_secs(60)), "never listed");
        l.page(0, ok(&["a"])).unwrap();
        assert!(l.listed_since(Duration::from_secs(60)));
        std::thread::sleep(Duration::from_millis(5));
        assert!(!l.listed_since(Duration::from_millis(1)), "window passed");
    }

    #[test]
    fn a_failed_listing_keeps_nothing() {
        let l = Listings::default();
        assert!(l.page(0, || Err::<Vec<DirEntryOut>, _>("EIO")).is_err());
        assert_eq!(l.kept(), 0);
    }
}
