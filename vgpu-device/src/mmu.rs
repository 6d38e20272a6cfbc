//! The GPU MMU: a walker for the GPU page table the driver builds in guest
//! memory (layout in [`crate::layout::gpu`]), the MMU that caches its
//! walks in a [`Tlb`] (explicit invalidation by range), and the DIRTY-bit
//! protocol.
//!
//! The walk reads each entry with one atomic 64-bit load. It has a fixed
//! depth (4 loads), so cyclic tables cannot make it loop, and a table entry
//! pointing back at a table on its own path is reported as malformed; garbage entries
//! (reserved bits, LARGE where it is not allowed, misaligned large frames)
//! and table addresses outside guest memory are errors, not panics.
//!
//! DIRTY: before the first write through a leaf the device sets DIRTY with a
//! compare-and-swap against the value it walked. A failed swap means the
//! driver changed the entry: the TLB entry is dropped and the walk redone
//! (which may now fault).

use std::fmt;

use serde::Serialize;

use crate::layout::gpu::{self, ADDR_MASK, DIRTY, LARGE, RESERVED, VALID, WRITE};
use crate::mem::{MemError, PhysMem};
pub use crate::tlb::{Tlb, TlbStats};

/// Kind of device access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Access {
    Read,
    Write,
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Access::Read => "read",
            Access::Write => "write",
        })
    }
}

/// A successful GPU translation of one page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Translation {
    /// First GPU VA of the page (4 KiB or 2 MiB aligned).
    pub va_base: u64,
    /// Guest physical address of the page.
    pub frame: u64,
    /// 4 KiB or 2 MiB.
    pub size: u64,
    /// Guest physical address of the leaf entry.
    pub pte_addr: u64,
    /// The leaf entry as walked.
    pub pte: u64,
}

impl Translation {
    pub fn writable(&self) -> bool {
        self.pte & WRITE != 0
    }

    pub fn dirty(&self) -> bool {
        self.pte & DIRTY != 0
    }

    /// Guest physical address of `va` (which must lie in this page).
    pub fn phys(&self, va: u64) -> u64 {
        self.frame + (va - self.va_base)
    }

    pub fn contains(&self, va: u64) -> bool {
        va >= self.va_base && va - self.va_base < self.size
    }
}

/// Why a walk did not produce a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The VA has bits above `VA_BITS`.
    VaOutOfRange { va: u64 },
    /// An entry without VALID at `level`: a GPU page fault.
    NotMapped { va: u64, level: u32 },
    /// A table or entry outside guest memory.
    BadAddress { va: u64, level: u32, addr: u64 },
    /// An entry with reserved bits, LARGE at the wrong level, or a
    /// misaligned 2 MiB frame.
    Malformed { va: u64, level: u32, entry: u64 },
}

impl fmt::Display for WalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WalkError::VaOutOfRange { va } => write!(f, "GPU VA {va:#x} beyond 48 bits"),
            WalkError::NotMapped { va, level } => {
                write!(f, "GPU VA {va:#x} not mapped (level {level})")
            }
            WalkError::BadAddress { va, level, addr } => write!(
                f,
                "GPU VA {va:#x}: level-{level} entry at {addr:#x} outside guest memory"
            ),
            WalkError::Malformed { va, level, entry } => {
                write!(
                    f,
                    "GPU VA {va:#x}: malformed level-{level} entry {entry:#x}"
                )
            }
        }
    }
}

impl std::error::Error for WalkError {}

/// Walks the GPU page table rooted at `root` (guest physical address of the
/// level-4 table) for `va`.
pub fn walk<M: PhysMem + ?Sized>(mem: &M, root: u64, va: u64) -> Result<Translation, WalkError> {
    if va >> gpu::VA_BITS != 0 {
        return Err(WalkError::VaOutOfRange { va });
    }
    let mut table = root & ADDR_MASK;
    // Tables on the path so far: a table entry pointing back at one of them
    // is a cycle (a malformed table, never a valid translation).
    let mut path = [u64::MAX; gpu::LEVELS as usize];
    for level in (1..=gpu::LEVELS).rev() {
        path[level as usize - 1] = table;
        let pte_addr = table
            .checked_add(gpu::index(va, level) * gpu::ENTRY_SIZE)
            .ok_or(WalkError::BadAddress {
                va,
                level,
                addr: table,
            })?;
        let entry = mem
            .load_u64(pte_addr)
            .map_err(|MemError { addr }| WalkError::BadAddress { va, level, addr })?;
        if entry & VALID == 0 {
            return Err(WalkError::NotMapped { va, level });
        }
        let malformed = WalkError::Malformed { va, level, entry };
        if entry & RESERVED != 0 {
            return Err(malformed);
        }
        let addr = entry & ADDR_MASK;
        let leaf_size = if level == 1 {
            if entry & LARGE != 0 {
                return Err(malformed);
            }
            Some(gpu::PAGE_SIZE)
        } else if entry & LARGE != 0 {
            if level != gpu::LARGE_LEVEL || addr & (gpu::LARGE_PAGE_SIZE - 1) != 0 {
                return Err(malformed);
            }
            Some(gpu::LARGE_PAGE_SIZE)
        } else {
            None
        };
        if let Some(size) = leaf_size {
            return Ok(Translation {
                va_base: va & !(size - 1),
                frame: addr,
                size,
                pte_addr,
                pte: entry,
            });
        }
        if path.contains(&addr) {
            return Err(malformed);
        }
        table = addr;
    }
    unreachable!("level 1 always returns")
}

/// Why a device access cannot proceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuError {
    /// A GPU page fault: the driver must map the page (or make it writable)
    /// and resume the job.
    Fault { va: u64, access: Access },
    /// The page table is broken (bad address, malformed entry, VA out of
    /// range): the job fails.
    Walk(WalkError),
    /// The leaf kept changing under the DIRTY compare-and-swap.
    Unstable { va: u64 },
}

impl fmt::Display for MmuError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MmuError::Fault { va, access } => write!(f, "GPU page fault: {access} at {va:#x}"),
            MmuError::Walk(e) => write!(f, "{e}"),
            MmuError::Unstable { va } => write!(f, "GPU PTE for {va:#x} keeps changing"),
        }
    }
}

impl std::error::Error for MmuError {}

/// How many times a translation is retried when the DIRTY swap fails.
pub const DIRTY_RETRIES: usize = 8;

/// One context's GPU MMU: the page-table root and a TLB.
#[derive(Debug)]
pub struct Mmu {
    root: u64,
    pub tlb: Tlb,
}

impl Mmu {
    pub fn new(root: u64, tlb_capacity: usize) -> Self {
        Self {
            root,
            tlb: Tlb::new(tlb_capacity),
        }
    }

    pub fn root(&self) -> u64 {
        self.root
    }

    /// Translates `va` for `access`. A write sets DIRTY in the leaf first.
    pub fn translate<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        va: u64,
        access: Access,
    ) -> Result<Translation, MmuError> {
        for _ in 0..DIRTY_RETRIES {
            let t = match self.tlb.lookup(va) {
                Some(t) => t,
                None => {
                    let t = walk(mem, self.root, va).map_err(|e| match e {
                        WalkError::NotMapped { .. } => MmuError::Fault { va, access },
                        e => MmuError::Walk(e),
                    })?;
                    self.tlb.insert(t);
                    t
                }
            };
            if access == Access::Read || t.dirty() {
                if access == Access::Write && !t.writable() {
                    return Err(MmuError::Fault { va, access });
                }
                return Ok(t);
            }
            if !t.writable() {
                return Err(MmuError::Fault { va, access });
            }
            let dirty = t.pte | DIRTY;
            match mem.cas_u64(t.pte_addr, t.pte, dirty) {
                Ok(Ok(_)) => {
                    let t = Translation { pte: dirty, ..t };
                    self.tlb.insert(t);
                    return Ok(t);
                }
                // The entry changed (or vanished from memory): walk again.
                Ok(Err(_)) | Err(_) => {
                    self.tlb.invalidate_range(t.va_base, t.va_base + t.size);
                }
            }
        }
        Err(MmuError::Unstable { va })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mem::testmem::{self, get, put};
    use vm_memory::GuestMemoryMmap;

    /// A tiny page-table builder over synthetic guest memory: tables are
    /// allocated from `next`, upward.
    pub struct Builder<'a> {
        pub mem: &'a GuestMemoryMmap,
        pub root: u64,
        next: u64,
    }

    impl<'a> Builder<'a> {
        pub fn new(mem: &'a GuestMemoryMmap, table_area: u64) -> Self {
            Self {
                mem,
                root: table_area,
                next: table_area + 0x1000,
            }
        }

        /// A builder for an existing table at `root` that allocates new
        /// tables from `next`.
        pub fn at(mem: &'a GuestMemoryMmap, root: u64, next: u64) -> Self {
            Self { mem, root, next }
        }

        /// The address of the entry for `va` at `level`, allocating tables.
        pub fn entry_addr(&mut self, va: u64, level: u32) -> u64 {
            let mut table = self.root;
            for l in ((level + 1)..=gpu::LEVELS).rev() {
                let a = table + gpu::index(va, l) * 8;
                let e = get(self.mem, a);
                if e & VALID == 0 {
                    let t = self.next;
                    self.next += 0x1000;
                    put(self.mem, a, t | VALID);
                    table = t;
                } else {
                    table = e & ADDR_MASK;
                }
            }
            table + gpu::index(va, level) * 8
        }

        pub fn map_4k(&mut self, va: u64, frame: u64, write: bool) -> u64 {
            let a = self.entry_addr(va, 1);
            put(self.mem, a, frame | VALID | if write { WRITE } else { 0 });
            a
        }

        pub fn map_2m(&mut self, va: u64, frame: u64, write: bool) -> u64 {
            let a = self.entry_addr(va, 2);
            put(
                self.mem,
                a,
                frame | VALID | LARGE | if write { WRITE } else { 0 },
            );
            a
        }
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn walk_4k_and_2m() {
        let m = testmem::new(16 << 20);
        let mut b = Builder::new(&m, 0x10_0000);
        let va = 0x7fff_1234_5000;
        b.map_4k(va, 0x80_0000, true);
        let t = walk(&m, b.root, va + 0x123).unwrap();
        assert_eq!((t.frame, t.size, t.va_base), (0x80_0000, 4096, va));
        assert!(t.writable() && !t.dirty());
        assert_eq!(t.phys(va + 0x123), 0x80_0123);

        let va2 = 0x4000_0000;
        b.map_2m(va2, 4 * MB, false);
        let t = walk(&m, b.root, va2 + 0x1_2345).unwrap();
        assert_eq!((t.frame, t.size), (4 * MB, 2 * MB));
        assert!(!t.writable());
        assert_eq!(t.phys(va2 + 0x1_2345), 4 * MB + 0x1_2345);
    }

    #[test]
    fn walk_errors() {
        let m = testmem::new(16 << 20);
        let mut b = Builder::new(&m, 0x10_0000);
        // Unmapped at the root, then at level 1.
        assert_eq!(
            walk(&m, b.root, 0x1000),
            Err(WalkError::NotMapped {
                va: 0x1000,
                level: 4
            })
        );
        b.map_4k(0x1000, 0x80_0000, false);
        assert_eq!(
            walk(&m, b.root, 0x2000),
            Err(WalkError::NotMapped {
                va: 0x2000,
                level: 1
            })
        );
        assert_eq!(
            walk(&m, b.root, 1 << 48),
            Err(WalkError::VaOutOfRange { va: 1 << 48 })
        );
        // Root outside guest memory.
        assert!(matches!(
            walk(&m, 1 << 40, 0),
            Err(WalkError::BadAddress { level: 4, .. })
        ));
        // A table pointer outside guest memory.
        let a = b.entry_addr(0x20_0000, 2);
        put(&m, a, (1 << 45) | VALID);
        assert!(matches!(
            walk(&m, b.root, 0x20_0000),
            Err(WalkError::BadAddress { level: 1, .. })
        ));
        // LARGE at level 3 and level 1, misaligned 2 MiB frame, reserved bits.
        let a3 = b.entry_addr(0x8000_0000, 3);
        put(&m, a3, 0x4000_0000 | VALID | LARGE);
        assert!(matches!(
            walk(&m, b.root, 0x8000_0000),
            Err(WalkError::Malformed { level: 3, .. })
        ));
        let a1 = b.entry_addr(0x1000, 1);
        put(&m, a1, 0x80_0000 | VALID | LARGE);
        assert!(matches!(
            walk(&m, b.root, 0x1000),
            Err(WalkError::Malformed { level: 1, .. })
        ));
        b.map_2m(0x60_0000, 0x81_0000, true);
        assert!(matches!(
            walk(&m, b.root, 0x60_0000),
            Err(WalkError::Malformed { level: 2, .. })
        ));
        put(&m, a1, 0x80_0000 | VALID | (1 << 60));
        assert!(matches!(
            walk(&m, b.root, 0x1000),
            Err(WalkError::Malformed { level: 1, .. })
        ));
    }

    #[test]
    fn cyclic_and_garbage_tables_terminate() {
        let m = testmem::new(1 << 20);
        // Every entry of the root points at the root itself.
        for i in 0..512 {
            put(&m, 0x1000 + i * 8, 0x1000 | VALID);
        }
        // A cycle is a malformed table.
        assert!(matches!(
            walk(&m, 0x1000, 0x1234_5678_9000),
            Err(WalkError::Malformed { level: 4, .. })
        ));
        // A longer cycle: root -> 0x2000 -> root.
        put(&m, 0x1000, 0x2000 | VALID);
        put(&m, 0x2000, 0x1000 | VALID);
        assert!(matches!(
            walk(&m, 0x1000, 0),
            Err(WalkError::Malformed { level: 3, .. })
        ));
        // Pseudo-random garbage everywhere: never panics.
        let mut x: u64 = 0xdead_beef;
        for i in 0..(1 << 17) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            put(
                &m,
                i * 8,
                x & !(0xfff0_0000_0000_0000) | if i % 3 == 0 { 0 } else { 1 },
            );
        }
        let mut mmu = Mmu::new(0x3000, 64);
        for i in 0..20_000u64 {
            let va = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 16;
            let _ = walk(&m, (i << 12) & 0xf_ffff, va);
            let _ = mmu.translate(
                &m,
                va,
                if i % 2 == 0 {
                    Access::Read
                } else {
                    Access::Write
                },
            );
        }
    }

    #[test]
    fn tlb_hits_and_range_invalidation() {
        let m = testmem::new(16 << 20);
        let mut b = Builder::new(&m, 0x10_0000);
        b.map_4k(0x1000, 0x80_0000, false);
        b.map_4k(0x2000, 0x80_1000, false);
        b.map_2m(0x40_0000, 0x20_0000, false);
        let mut mmu = Mmu::new(b.root, 16);
        for va in [0x1000, 0x1008, 0x2000, 0x40_0000, 0x5f_fff8] {
            mmu.translate(&m, va, Access::Read).unwrap();
        }
        assert_eq!((mmu.tlb.stats.hits, mmu.tlb.stats.misses), (2, 3));
        // The TLB keeps serving a stale entry until it is invalidated.
        let a = b.entry_addr(0x1000, 1);
        put(&m, a, 0);
        assert_eq!(
            mmu.translate(&m, 0x1000, Access::Read).unwrap().frame,
            0x80_0000
        );
        mmu.tlb.invalidate_range(0x1000, 0x2000);
        assert_eq!(mmu.tlb.len(), 2);
        assert_eq!(
            mmu.translate(&m, 0x1000, Access::Read),
            Err(MmuError::Fault {
                va: 0x1000,
                access: Access::Read
            })
        );
        // A range touching the middle of a 2 MiB entry drops it.
        mmu.tlb.invalidate_range(0x50_0000, 0x50_1000);
        assert_eq!(mmu.tlb.len(), 1);
        // And one straddling its end (the entry's base is outside it).
        mmu.translate(&m, 0x40_0000, Access::Read).unwrap();
        assert_eq!(mmu.tlb.len(), 2);
        mmu.tlb.invalidate_range(0x5f_f000, 0x60_1000);
        assert_eq!(mmu.tlb.len(), 1);
        let misses = mmu.tlb.stats.misses;
        mmu.translate(&m, 0x5f_fff8, Access::Read).unwrap();
        assert_eq!(mmu.tlb.stats.misses, misses + 1, "walked again");
        mmu.tlb.invalidate_all();
        assert!(mmu.tlb.is_empty());
    }

    fn page(va_base: u64, size: u64) -> Translation {
        Translation {
            va_base,
            frame: va_base,
            size,
            pte_addr: 0,
            pte: VALID,
        }
    }

    /// A range invalidation drops every entry that overlaps the range, 2
    /// MiB entries straddling either edge included, and nothing that only
    /// touches it; with a TLB of few sets (a 2 MiB range covers them all:
    /// one pass) and of many (the range's own sets only).
    #[test]
    fn tlb_range_edges_and_straddling_large_entries() {
        const L: u64 = 2 * MB;
        for capacity in [16, 8192] {
            let fill = || {
                let mut tlb = Tlb::new(capacity);
                tlb.insert(page(2 * L, L)); // [4 MiB, 6 MiB)
                tlb.insert(page(2 * L - 0x1000, 0x1000)); // just below it
                tlb.insert(page(3 * L, 0x1000)); // just above it
                tlb
            };
            let has = |tlb: &mut Tlb, va| tlb.lookup(va).is_some_and(|t| t.contains(va));
            // Ranges ending at the entry's first byte or starting past its
            // last touch it without overlapping.
            let mut tlb = fill();
            tlb.invalidate_range(2 * L - 0x1000, 2 * L);
            tlb.invalidate_range(3 * L, 3 * L + 0x1000);
            assert!(
                has(&mut tlb, 2 * L) && has(&mut tlb, 3 * L - 8),
                "{capacity}"
            );
            assert!(!has(&mut tlb, 2 * L - 0x1000) && !has(&mut tlb, 3 * L));
            // Straddling the start, the end; one byte inside; covering it.
            for (start, end) in [
                (2 * L - 0x1000, 2 * L + 1),
                (3 * L - 1, 3 * L + 0x5000),
                (2 * L + 0x12_3456, 2 * L + 0x12_3457),
                (0, 1 << 48),
            ] {
                let mut tlb = fill();
                tlb.invalidate_range(start, end);
                assert!(
                    !has(&mut tlb, 2 * L + 0x8000),
                    "[{start:#x}, {end:#x}) kept the 2 MiB entry (capacity {capacity})"
                );
            }
        }
    }

    /// A full TLB evicts one entry of the set it inserts into, never
    /// empties itself; hit entries are kept over unreferenced ones.
    #[test]
    fn tlb_capacity() {
        let mut tlb = Tlb::new(2);
        for i in 0..3u64 {
            tlb.insert(page(i << 12, 4096));
        }
        assert_eq!(tlb.len(), 2);
        assert!(tlb.lookup(2 << 12).is_some());
        assert_eq!(tlb.stats.entries_dropped, 1);

        // 64 entries: 16 sets of 4 ways. Fill it and hit every entry.
        let mut tlb = Tlb::new(64);
        for p in 0..64u64 {
            tlb.insert(page(p << 12, 4096));
        }
        assert_eq!(tlb.len(), 64);
        assert!((0..64u64).all(|p| tlb.lookup(p << 12).is_some()));
        // Page 64 goes to set 0 (pages 0, 16, 32, 48): one of those goes.
        tlb.insert(page(64 << 12, 4096));
        assert_eq!((tlb.len(), tlb.stats.entries_dropped), (64, 1));
        assert!(tlb.lookup(64 << 12).is_some());
        let kept = |tlb: &mut Tlb, ps: &[u64]| {
            ps.iter()
                .filter(|&&p| tlb.lookup(p << 12).is_some())
                .count()
        };
        assert_eq!(kept(&mut tlb, &[0, 16, 32, 48]), 3);
        // The other sets are untouched.
        assert_eq!(
            kept(&mut tlb, &(1..16).chain(49..64).collect::<Vec<_>>()),
            30
        );
        // Set 0 holds 64 and three of 0/16/32/48, all hit since: page 80
        // evicts one of them (the clock's turn clears their bits).
        tlb.insert(page(80 << 12, 4096));
        assert_eq!((tlb.len(), tlb.stats.entries_dropped), (64, 2));
        // Entries hit after that survive the next eviction, an entry not
        // hit (one of the others) goes.
        let hit: Vec<u64> = [0, 16, 32, 48, 64, 80]
            .into_iter()
            .filter(|&p| p != 80 && p % 32 == 0)
            .filter(|&p| tlb.lookup(p << 12).is_some())
            .collect();
        assert!(!hit.is_empty());
        tlb.insert(page(96 << 12, 4096));
        assert_eq!(tlb.len(), 64);
        for p in hit.iter().chain(&[96]) {
            assert!(tlb.lookup(p << 12).is_some(), "page {p} was evicted");
        }
        // 2 MiB entries have an array of their own (capacity / 16).
        let mut tlb = Tlb::new(64);
        for p in 0..64u64 {
            tlb.insert(page(p << 12, 4096));
        }
        for p in 0..4u64 {
            tlb.insert(page((p + 1) * 2 * MB, 2 * MB));
        }
        assert_eq!(tlb.len(), 68);
        assert!(tlb
            .lookup(2 * MB + 0x1234)
            .is_some_and(|t| t.size == 2 * MB));
    }

    #[test]
    fn write_sets_dirty_once_and_faults_on_read_only() {
        let m = testmem::new(16 << 20);
        let mut b = Builder::new(&m, 0x10_0000);
        let rw = b.map_4k(0x1000, 0x80_0000, true);
        b.map_4k(0x2000, 0x80_1000, false);
        let mut mmu = Mmu::new(b.root, 16);
        let t = mmu.translate(&m, 0x1000, Access::Read).unwrap();
        assert!(!t.dirty());
        assert_eq!(get(&m, rw) & DIRTY, 0);
        let t = mmu.translate(&m, 0x1000, Access::Write).unwrap();
        assert!(t.dirty());
        assert_eq!(get(&m, rw), 0x80_0000 | VALID | WRITE | DIRTY);
        // Cached now: a second write does not swap again.
        put(&m, rw, 0x80_0000 | VALID | WRITE); // (pretend the driver cleared it without invalidating)
        mmu.translate(&m, 0x1000, Access::Write).unwrap();
        assert_eq!(get(&m, rw) & DIRTY, 0);
        assert_eq!(
            mmu.translate(&m, 0x2000, Access::Write),
            Err(MmuError::Fault {
                va: 0x2000,
                access: Access::Write
            })
        );
    }

    #[test]
    fn dirty_swap_failure_rewalks() {
        let m = testmem::new(16 << 20);
        let mut b = Builder::new(&m, 0x10_0000);
        let a = b.map_4k(0x1000, 0x80_0000, true);
        let mut mmu = Mmu::new(b.root, 16);
        mmu.translate(&m, 0x1000, Access::Read).unwrap();
        // The driver moves the page (new frame) without an invalidation
        // reaching the TLB yet: the DIRTY swap fails and the walk sees the
        // new entry.
        put(&m, a, 0x90_0000 | VALID | WRITE);
        let t = mmu.translate(&m, 0x1000, Access::Write).unwrap();
        assert_eq!(t.frame, 0x90_0000);
        assert_eq!(get(&m, a), 0x90_0000 | VALID | WRITE | DIRTY);
        // The driver zapped a clean entry: the retry faults.
        put(&m, a, 0x90_0000 | VALID | WRITE);
        let mut mmu = Mmu::new(b.root, 16);
        mmu.translate(&m, 0x1000, Access::Read).unwrap();
        put(&m, a, 0);
        mmu.tlb.stats = TlbStats::default();
        let t = mmu.translate(&m, 0x1000, Access::Read).unwrap(); // stale but cached
        assert_eq!(t.frame, 0x90_0000);
        assert_eq!(
            mmu.translate(&m, 0x1000, Access::Write),
            Err(MmuError::Fault {
                va: 0x1000,
                access: Access::Write
            })
        );
    }
}
