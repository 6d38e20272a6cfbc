//! The GPU TLB: a set-associative translation cache with one array per page
//! size (4 KiB and 2 MiB, like a CPU's split DTLB), clock replacement
//! within a set, and range invalidation that costs
//! O(min(pages in the range, entries)), never a pass over every entry for
//! a small range.
//!
//! Geometry: an array of `sets * ways` slots, the set of a page being its
//! page number modulo `sets` (a power of two), so a contiguous working set
//! of up to `sets * ways` pages never conflicts with itself. A full set
//! evicts one entry (clock: a hit sets the slot's referenced bit; the hand
//! skips, and clears, referenced slots), the rest of the TLB is untouched.
//!
//! Invariants:
//! - a slot's tag is 0 (empty) or `va_base | VALID_TAG [| REF_TAG]`, and
//!   then its translation's `va_base` equals the tag's page and lies in the
//!   slot's set (va_base is page aligned, so the two low bits are free);
//! - at most one slot per `va_base` in an array (insert replaces in place);
//! - `len` is the number of non-empty slots.
//!
//! The TLB only ever drops entries on its own (eviction): it never makes
//! one up, so a lookup returns an entry that was inserted and not
//! invalidated since (what [`crate::invalidate`] relies on).

use serde::Serialize;

use crate::layout::gpu;
use crate::mmu::Translation;

/// TLB counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TlbStats {
    pub hits: u64,
    pub misses: u64,
    pub invalidations: u64,
    /// Entries removed by invalidation or evicted by replacement.
    pub entries_dropped: u64,
}

/// Ways per set (fewer when the capacity is smaller).
pub const WAYS: usize = 4;
/// The 2 MiB array has this fraction of the 4 KiB array's capacity (at
/// least one entry): 512 entries (1 GiB) for the default 8192.
pub const LARGE_FRACTION: usize = 16;

const VALID_TAG: u64 = 1;
const REF_TAG: u64 = 2;
const TAG_PAGE: u64 = !(VALID_TAG | REF_TAG);

/// One page size's set-associative array. Tags and translations are kept
/// apart so that a range invalidation scans a contiguous run of tags (8
/// bytes a slot), not of whole entries.
#[derive(Debug)]
struct Array {
    /// `sets * ways` tags, set by set: 0 (empty) or `va_base | VALID_TAG
    /// [| REF_TAG]`.
    tags: Vec<u64>,
    /// The translation of each non-empty slot.
    entries: Vec<Translation>,
    /// Clock hand of each set (a way index).
    hands: Vec<u8>,
    ways: usize,
    /// `sets - 1` (sets is a power of two).
    set_mask: u64,
    /// log2 of the page size.
    shift: u32,
    len: usize,
    /// Entries by chunk (CHUNK_PAGES consecutive pages), chunk numbers
    /// folded modulo CHUNKS: `occupancy[c]` counts the non-empty slots
    /// whose page's chunk number is `c` modulo CHUNKS (so 0 proves that no
    /// chunk folded onto `c` has an entry: its pages are skipped by a range
    /// invalidation).
    occupancy: Vec<u32>,
}

/// Pages per occupancy chunk (2 MiB of 4 KiB pages, 1 GiB of 2 MiB ones).
const CHUNK_PAGES: u64 = 512;
/// Occupancy counters per array (a power of two).
const CHUNKS: usize = 1024;

impl Array {
    fn new(capacity: usize, page_size: u64) -> Self {
        let capacity = capacity.max(1);
        let ways = capacity.min(WAYS);
        // The largest power of two of sets that fits in the capacity.
        let sets = 1usize << (capacity / ways).ilog2();
        Self {
            // All zero: calloc'd, touched lazily.
            tags: vec![0; sets * ways],
            entries: vec![Translation::default(); sets * ways],
            hands: vec![0; sets],
            ways,
            set_mask: sets as u64 - 1,
            shift: page_size.trailing_zeros(),
            len: 0,
            occupancy: vec![0; CHUNKS],
        }
    }

    /// The occupancy counter of page `base`'s chunk.
    fn chunk_of(&self, base: u64) -> usize {
        ((base >> self.shift) / CHUNK_PAGES) as usize % CHUNKS
    }

    fn page_size(&self) -> u64 {
        1 << self.shift
    }

    fn sets(&self) -> u64 {
        self.set_mask + 1
    }

    fn set_index(&self, base: u64) -> usize {
        ((base >> self.shift) & self.set_mask) as usize
    }

    /// The slot holding page `base`, if any.
    fn find(&self, base: u64) -> Option<usize> {
        // (base is page aligned: its two low bits are clear.)
        let want = base | VALID_TAG;
        let start = self.set_index(base) * self.ways;
        self.tags[start..start + self.ways]
            .iter()
            .position(|&t| t & !REF_TAG == want)
            .map(|w| start + w)
    }

    fn lookup(&mut self, va: u64) -> Option<Translation> {
        let base = va & !(self.page_size() - 1);
        let i = self.find(base)?;
        self.tags[i] |= REF_TAG;
        Some(self.entries[i])
    }

    /// Inserts `t` (whose page size is this array's); returns how many
    /// entries were evicted (0 or 1).
    fn insert(&mut self, t: Translation) -> u64 {
        let base = t.va_base;
        if let Some(i) = self.find(base) {
            self.entries[i] = t;
            self.tags[i] |= REF_TAG;
            return 0;
        }
        let set = self.set_index(base);
        let start = set * self.ways;
        let tags = &mut self.tags[start..start + self.ways];
        let (way, evicted) = match tags.iter().position(|&t| t == 0) {
            Some(w) => (w, 0),
            None => {
                // Clock: one full turn clears every referenced bit, so a
                // victim is found within `ways + 1` looks.
                let mut hand = self.hands[set] as usize % self.ways;
                for _ in 0..self.ways {
                    if tags[hand] & REF_TAG == 0 {
                        break;
                    }
                    tags[hand] &= !REF_TAG;
                    hand = (hand + 1) % self.ways;
                }
                self.hands[set] = ((hand + 1) % self.ways) as u8;
                (hand, 1)
            }
        };
        if evicted == 0 {
            self.len += 1;
        } else {
            let old = tags[way] & TAG_PAGE;
            let c = self.chunk_of(old);
            self.occupancy[c] -= 1;
        }
        let tags = &mut self.tags[start..start + self.ways];
        tags[way] = base | VALID_TAG;
        self.entries[start + way] = t;
        let c = self.chunk_of(base);
        self.occupancy[c] += 1;
        evicted
    }

    /// Empties the slots of `slots` holding an entry that overlaps
    /// `[start, end)`; returns how many.
    fn drop_overlapping(&mut self, slots: std::ops::Range<usize>, start: u64, end: u64) -> u64 {
        let size = self.page_size();
        let mut dropped = 0;
        for i in slots {
            let tag = self.tags[i];
            let base = tag & TAG_PAGE;
            if tag != 0 && base < end && base.saturating_add(size) > start {
                self.tags[i] = 0;
                let c = self.chunk_of(base);
                self.occupancy[c] -= 1;
                dropped += 1;
            }
        }
        self.len -= dropped as usize;
        dropped
    }

    /// Drops every entry overlapping `[start, end)` (`start < end`);
    /// returns how many.
    fn invalidate_range(&mut self, start: u64, end: u64) -> u64 {
        if self.len == 0 {
            return 0;
        }
        // Pages overlapping the range: first..=last (no overflow: end > start).
        let first = start & !(self.page_size() - 1);
        let last = (end - 1) & !(self.page_size() - 1);
        let pages = ((last - first) >> self.shift).saturating_add(1);
        let all = self.tags.len();
        if pages >= self.sets() {
            // The range covers every set: one pass over the tags.
            return self.drop_overlapping(0..all, start, end);
        }
        // Fewer pages than sets: chunk by chunk, skipping chunks without
        // entries (occupancy 0), each chunk's pages in their own sets.
        let (mut page, mut left, mut dropped) = (first, pages, 0u64);
        while left > 0 {
            let into = (page >> self.shift) % CHUNK_PAGES;
            let n = left.min(CHUNK_PAGES - into);
            let c = self.chunk_of(page);
            if self.occupancy[c] != 0 {
                let d = self.drop_run(page, n as usize);
                self.occupancy[c] -= d as u32;
                dropped += d;
            }
            left -= n;
            // (Wraps only past the last page, when nothing is left.)
            page = page.wrapping_add(n << self.shift);
        }
        self.len -= dropped as usize;
        dropped
    }

    /// Drops pages `page`, `page + size`, ... (`n` < sets of them): their
    /// sets are `n` consecutive ones from `page`'s, wrapping around at most
    /// once, and the only entry of the `i`-th that can overlap is page
    /// `page + i * size`. Does not touch `len` or `occupancy`.
    fn drop_run(&mut self, page: u64, n: usize) -> u64 {
        let from = self.set_index(page);
        let head = n.min(self.sets() as usize - from);
        // (The wrapping sum is only used when a second part exists, and
        // then it is a page of the range.)
        self.drop_pages(from, page, head)
            + self.drop_pages(0, page.wrapping_add((head as u64) << self.shift), n - head)
    }

    /// Empties, in the `n` sets from `set`, the slots holding pages `page`,
    /// `page + size`, ... (one per set, in order); returns how many.
    /// Branch-free over the tags (a range scan is mostly misses).
    fn drop_pages(&mut self, set: usize, page: u64, n: usize) -> u64 {
        let ways = self.ways;
        let tags = &mut self.tags[set * ways..(set + n) * ways];
        let step = 1u64 << self.shift;
        let drop_in = |set_tags: &mut [u64], want: u64| {
            let mut n = 0;
            for t in set_tags {
                let hit = *t & !REF_TAG == want;
                *t *= u64::from(!hit);
                n += u64::from(hit);
            }
            n
        };
        let mut want = page | VALID_TAG;
        let mut dropped = 0;
        if ways == WAYS {
            // The usual geometry: fixed-size sets (the loop unrolls).
            for set_tags in tags.chunks_exact_mut(WAYS) {
                dropped += drop_in(set_tags, want);
                want = want.wrapping_add(step);
            }
        } else {
            for set_tags in tags.chunks_exact_mut(ways) {
                dropped += drop_in(set_tags, want);
                want = want.wrapping_add(step);
            }
        }
        dropped
    }

    fn clear(&mut self) -> u64 {
        let n = self.len as u64;
        if n != 0 {
            self.tags.fill(0);
            self.occupancy.fill(0);
            self.len = 0;
        }
        n
    }
}

/// A translation cache for 4 KiB and 2 MiB GPU pages.
#[derive(Debug)]
pub struct Tlb {
    small: Array,
    large: Array,
    pub stats: TlbStats,
}

impl Tlb {
    /// A TLB of at most `capacity` 4 KiB entries (rounded down to a power
    /// of two of sets) plus `capacity / LARGE_FRACTION` (at least one)
    /// 2 MiB entries.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            small: Array::new(capacity, gpu::PAGE_SIZE),
            large: Array::new(capacity / LARGE_FRACTION, gpu::LARGE_PAGE_SIZE),
            stats: TlbStats::default(),
        }
    }

    /// Entries the TLB can hold (both page sizes).
    pub fn capacity(&self) -> usize {
        self.small.tags.len() + self.large.tags.len()
    }

    pub fn len(&self) -> usize {
        self.small.len + self.large.len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks `va` up, 4 KiB entries first (counts a hit or a miss).
    pub fn lookup(&mut self, va: u64) -> Option<Translation> {
        let t = match self.small.lookup(va) {
            Some(t) => Some(t),
            None if self.large.len != 0 => self.large.lookup(va),
            None => None,
        };
        if t.is_some() {
            self.stats.hits += 1;
        } else {
            self.stats.misses += 1;
        }
        t
    }

    /// Caches `t` (replacing an entry of the same page, or evicting one
    /// entry of its set when the set is full). A translation of another
    /// page size, or not aligned to its size, is not cached.
    pub fn insert(&mut self, t: Translation) {
        let array = match t.size {
            gpu::PAGE_SIZE => &mut self.small,
            gpu::LARGE_PAGE_SIZE => &mut self.large,
            _ => return,
        };
        if t.va_base & (t.size - 1) != 0 {
            return;
        }
        self.stats.entries_dropped += array.insert(t);
    }

    /// Drops every entry overlapping `[start, end)`, 2 MiB entries that
    /// straddle an edge of the range included. An empty range drops
    /// nothing.
    pub fn invalidate_range(&mut self, start: u64, end: u64) {
        self.stats.invalidations += 1;
        if start < end {
            self.stats.entries_dropped +=
                self.small.invalidate_range(start, end) + self.large.invalidate_range(start, end);
        }
    }

    pub fn invalidate_all(&mut self) {
        self.stats.invalidations += 1;
        self.stats.entries_dropped += self.small.clear() + self.large.clear();
    }
}

#[cfg(test)]
impl Tlb {
    /// Checks `len` and `occupancy` against the tags.
    fn check_invariants(&self) {
        for a in [&self.small, &self.large] {
            let mut occ = vec![0u32; CHUNKS];
            let mut len = 0;
            for (i, &t) in a.tags.iter().enumerate() {
                if t != 0 {
                    let base = t & TAG_PAGE;
                    assert_eq!(a.set_index(base), i / a.ways, "entry in the wrong set");
                    assert_eq!(a.entries[i].va_base, base);
                    occ[a.chunk_of(base)] += 1;
                    len += 1;
                }
            }
            assert_eq!((a.len, &a.occupancy), (len, &occ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::gpu::{LARGE_PAGE_SIZE as LARGE, PAGE_SIZE as SMALL, VALID};
    use std::collections::HashMap;

    fn tr(va_base: u64, size: u64, frame: u64) -> Translation {
        Translation {
            va_base,
            frame,
            size,
            pte_addr: 0,
            pte: frame | VALID,
        }
    }

    /// What a TLB without capacity limits holds: every translation
    /// inserted and not invalidated since; 4 KiB entries win over 2 MiB.
    #[derive(Default)]
    struct Model(HashMap<(u64, u64), Translation>);

    impl Model {
        fn insert(&mut self, t: Translation) {
            self.0.insert((t.va_base, t.size), t);
        }
        fn lookup(&self, va: u64) -> Option<Translation> {
            [SMALL, LARGE]
                .into_iter()
                .find_map(|s| self.0.get(&(va & !(s - 1), s)))
                .copied()
        }
        fn invalidate(&mut self, start: u64, end: u64) {
            self.0
                .retain(|_, t| start >= end || t.va_base >= end || t.va_base + t.size <= start);
        }
    }

    /// Random inserts, lookups and invalidations of ranges with arbitrary
    /// edges, against the model: the TLB never returns what the model
    /// does not hold (an entry invalidated or replaced), and with room for
    /// every page it returns exactly what the model holds.
    fn against_model(capacity: usize, exact: bool, seed: u64) {
        let mut tlb = Tlb::new(capacity);
        let mut model = Model::default();
        let mut x = seed;
        let mut rnd = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        // 4 large pages from 2 MiB, and 64 small pages, 16 at the start
        // of each large one (same VA base, both cached at once).
        for i in 0..20_000u64 {
            match rnd(8) {
                0..=2 => {
                    let va = LARGE * (1 + rnd(4)) + rnd(16) * SMALL;
                    let t = tr(va, SMALL, i << 12);
                    tlb.insert(t);
                    model.insert(t);
                }
                3 => {
                    let t = tr(LARGE * (1 + rnd(4)), LARGE, i << 21);
                    tlb.insert(t);
                    model.insert(t);
                }
                4 => {
                    // Edges anywhere, not only on page boundaries.
                    let start = rnd(7 * LARGE);
                    let span = if rnd(2) == 0 { 4 * SMALL } else { 4 * LARGE };
                    let end = start + rnd(span);
                    tlb.invalidate_range(start, end);
                    model.invalidate(start, end);
                }
                _ => {
                    let va = LARGE + rnd(5 * LARGE);
                    let got = tlb.lookup(va);
                    let want = model.lookup(va);
                    if exact {
                        assert_eq!(got, want, "va {va:#x} step {i}");
                    } else if let Some(g) = got {
                        // Maybe not `want` (the 4 KiB entry was evicted),
                        // but one the model holds.
                        assert!(g.contains(va), "{g:?} for {va:#x}");
                        assert_eq!(
                            model.0.get(&(g.va_base, g.size)),
                            Some(&g),
                            "stale entry for {va:#x} step {i} (model: {want:?})"
                        );
                    }
                }
            }
            assert!(tlb.len() <= tlb.capacity());
            if i % 97 == 0 {
                tlb.check_invariants();
            }
        }
        tlb.check_invariants();
        if exact {
            // Nothing was ever evicted.
            assert_eq!(tlb.len(), model.0.len());
        }
        tlb.invalidate_all();
        assert!(tlb.is_empty());
    }

    #[test]
    fn behaves_like_the_model() {
        for seed in [1, 0xdead_beef, 0x1234_5678_9abc] {
            // Room for all 64 small and 4 large pages: exact.
            against_model(64, true, seed);
            // 8 small (2 sets of 4), 1 large: constant eviction.
            against_model(8, false, seed);
            against_model(1, false, seed);
        }
    }

    #[test]
    fn geometry() {
        let t = Tlb::new(8192);
        assert_eq!((t.small.sets(), t.small.ways), (2048, 4));
        assert_eq!((t.large.sets(), t.large.ways), (128, 4));
        assert_eq!(t.capacity(), 8192 + 512);
        // Not a power of two: rounded down to whole sets.
        let t = Tlb::new(100);
        assert_eq!(
            (t.small.sets(), t.small.ways, t.large.tags.len()),
            (16, 4, 4)
        );
        let t = Tlb::new(0);
        assert_eq!(t.capacity(), 2);
    }

    #[test]
    fn a_small_range_touches_only_its_sets() {
        // Invalidating one page of a full TLB leaves every other entry.
        let mut tlb = Tlb::new(8192);
        for p in 0..8192 {
            tlb.insert(tr(p * SMALL, SMALL, p * SMALL));
        }
        assert_eq!(tlb.len(), 8192);
        tlb.invalidate_range(100 * SMALL + 8, 100 * SMALL + 16);
        assert_eq!(tlb.len(), 8191);
        assert!(tlb.lookup(100 * SMALL).is_none());
        assert!(tlb.lookup(99 * SMALL).is_some() && tlb.lookup(101 * SMALL).is_some());
        // Pages in other sets' aliases (same set, other VA) stay too.
        tlb.insert(tr((100 + 2048) * SMALL, SMALL, 0));
        assert!(tlb.lookup(100 * SMALL).is_none());
        // A range whose sets wrap around (pages 2047 and 2048: the last
        // set and the first).
        tlb.invalidate_range(2047 * SMALL + 8, 2048 * SMALL + 8);
        assert!(tlb.lookup(2047 * SMALL).is_none() && tlb.lookup(2048 * SMALL).is_none());
        assert!(tlb.lookup(2046 * SMALL).is_some() && tlb.lookup(2049 * SMALL).is_some());
        assert!(tlb.lookup(0).is_some(), "set 0's other pages stay");
        // An empty range drops nothing.
        tlb.invalidate_range(5 * SMALL, 5 * SMALL);
        assert!(tlb.lookup(5 * SMALL).is_some());
        // A range to the end of the address space does not overflow.
        tlb.invalidate_range(u64::MAX - 1, u64::MAX);
        tlb.invalidate_range(8000 * SMALL, u64::MAX);
        assert!(tlb.lookup(7999 * SMALL).is_some() && tlb.lookup(8000 * SMALL).is_none());
        tlb.check_invariants();
        // A range over chunks with no entry, between chunks that have some:
        // the empty ones are skipped, the others still cleared.
        let mut tlb = Tlb::new(8192);
        for p in [0u64, 1, 1024, 1536] {
            tlb.insert(tr(p * SMALL, SMALL, 0));
        }
        tlb.invalidate_range(SMALL, 1537 * SMALL);
        assert_eq!(tlb.len(), 1);
        assert!(tlb.lookup(0).is_some());
        tlb.check_invariants();
    }

    #[test]
    fn misaligned_or_odd_sizes_are_not_cached() {
        let mut tlb = Tlb::new(16);
        tlb.insert(tr(0x1000, LARGE, 0));
        tlb.insert(tr(0x1000, 1 << 30, 0));
        assert!(tlb.is_empty());
    }
}
