//! An x86-64 CPU page-table walker over guest physical memory (layout in
//! [`crate::layout::x86`]): 4 or 5 levels, 4 KiB / 2 MiB / 1 GiB leaves.
//!
//! It answers the checker's question "which frame does the CPU map at this
//! VA, and may the CPU write it": the frame, and whether RW is set at every
//! level. An entry without the present bit is "no page", classified for the
//! log as empty, PROT_NONE (Linux's `_PAGE_PROTNONE`, bit 8, with present
//! clear: also NUMA-hinting entries) or swap/migration (any other non-zero
//! non-present entry). The walk has a fixed depth, so cyclic tables
//! terminate; tables outside guest memory and PS in PML4/PML5 entries are
//! errors.

use std::fmt;

use serde::Serialize;

use crate::layout::x86::{self, ADDR_MASK, ADDR_MASK_1G, ADDR_MASK_2M, PRESENT, PROTNONE, PS, RW};
use crate::mem::{MemError, PhysMem};

/// Paging mode: 4-level (48-bit VA) or 5-level (LA57, 57-bit VA).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Levels {
    Four,
    Five,
}

impl Levels {
    pub fn from_count(n: u32) -> Option<Levels> {
        match n {
            4 => Some(Levels::Four),
            5 => Some(Levels::Five),
            _ => None,
        }
    }

    pub fn count(self) -> u32 {
        match self {
            Levels::Four => 4,
            Levels::Five => 5,
        }
    }

    /// Number of implemented VA bits.
    pub fn va_bits(self) -> u32 {
        12 + 9 * self.count()
    }
}

/// Why there is no page: the kind of the non-present entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum NoPage {
    /// An all-zero entry.
    Empty,
    /// Present clear, PROTNONE set (PROT_NONE or a NUMA hinting entry).
    ProtNone,
    /// Any other non-present entry (swap or migration entry, ...).
    SwapOrMigration,
}

/// A CPU translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuTranslation {
    /// Guest physical base of the leaf page.
    pub frame: u64,
    /// 4 KiB, 2 MiB or 1 GiB.
    pub size: u64,
    /// RW set in the entries of every level.
    pub writable: bool,
    /// The leaf entry.
    pub leaf: u64,
    /// Level of the leaf (1 = PT, 2 = PD, 3 = PDPT).
    pub level: u32,
}

impl CpuTranslation {
    /// Guest physical address of `va`.
    pub fn phys(&self, va: u64) -> u64 {
        self.frame + (va & (self.size - 1))
    }
}

/// Result of a CPU walk that did not produce a translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuWalkError {
    /// Not a canonical address for the paging mode.
    NonCanonical { va: u64 },
    /// No page at `level`.
    NoPage {
        level: u32,
        kind: NoPage,
        entry: u64,
    },
    /// A table outside guest memory.
    BadAddress { level: u32, addr: u64 },
    /// PS set where the architecture reserves it (PML4E / PML5E).
    Malformed { level: u32, entry: u64 },
    /// `base + offset` wraps past 2^64 (a direct-map address, see
    /// [`direct_map_va`]).
    Wraps { base: u64, offset: u64 },
}

impl fmt::Display for CpuWalkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            CpuWalkError::NonCanonical { va } => write!(f, "CPU VA {va:#x} is not canonical"),
            CpuWalkError::NoPage { level, kind, entry } => {
                write!(f, "no CPU page ({kind:?} level-{level} entry {entry:#x})")
            }
            CpuWalkError::BadAddress { level, addr } => {
                write!(
                    f,
                    "CPU level-{level} entry at {addr:#x} outside guest memory"
                )
            }
            CpuWalkError::Malformed { level, entry } => {
                write!(f, "malformed CPU level-{level} entry {entry:#x}")
            }
            CpuWalkError::Wraps { base, offset } => {
                write!(f, "CPU VA {base:#x} + {offset:#x} wraps around")
            }
        }
    }
}

impl std::error::Error for CpuWalkError {}

fn classify(entry: u64) -> NoPage {
    if entry == 0 {
        NoPage::Empty
    } else if entry & PROTNONE != 0 {
        NoPage::ProtNone
    } else {
        NoPage::SwapOrMigration
    }
}

/// The kernel VA of guest frame `phys` in a direct map (all of RAM mapped
/// linearly) starting at `base` (Linux's `page_offset_base`): `base + phys`,
/// or [`CpuWalkError::Wraps`] (both values come from the guest). Whether the
/// sum is canonical is [`walk`]'s to check.
pub fn direct_map_va(base: u64, phys: u64) -> Result<u64, CpuWalkError> {
    base.checked_add(phys)
        .ok_or(CpuWalkError::Wraps { base, offset: phys })
}

/// Walks the CPU page table at `root` (guest physical address of the PML4,
/// or PML5 with five levels; low 12 bits, e.g. a PCID, are ignored).
pub fn walk<M: PhysMem + ?Sized>(
    mem: &M,
    root: u64,
    levels: Levels,
    va: u64,
) -> Result<CpuTranslation, CpuWalkError> {
    canonical(levels, va)?;
    walk_from(mem, root & ADDR_MASK, levels.count(), true, va, &mut None)
}

/// Bits [63 : va_bits-1] all equal.
fn canonical(levels: Levels, va: u64) -> Result<(), CpuWalkError> {
    let top = (va as i64) >> (levels.va_bits() - 1);
    if top != 0 && top != -1 {
        return Err(CpuWalkError::NonCanonical { va });
    }
    Ok(())
}

/// The walk from the table at `table`, whose entry for `va` is at `level`,
/// with `writable` the AND of RW above it. Records in `upper` what the walk
/// found above the 4 KiB level (the page table, or a large leaf), for
/// [`RunWalks`].
fn walk_from<M: PhysMem + ?Sized>(
    mem: &M,
    mut table: u64,
    top: u32,
    mut writable: bool,
    va: u64,
    upper: &mut Option<Upper>,
) -> Result<CpuTranslation, CpuWalkError> {
    for level in (1..=top).rev() {
        if level == 1 {
            *upper = Some(Upper::Table { table, writable });
        }
        let addr = table + x86::index(va, level) * x86::ENTRY_SIZE;
        let entry = mem
            .load_u64(addr)
            .map_err(|MemError { addr }| CpuWalkError::BadAddress { level, addr })?;
        if entry & PRESENT == 0 {
            return Err(CpuWalkError::NoPage {
                level,
                kind: classify(entry),
                entry,
            });
        }
        writable &= entry & RW != 0;
        let leaf = |mask: u64, size: u64| CpuTranslation {
            frame: entry & mask,
            size,
            writable,
            leaf: entry,
            level,
        };
        let large = |t: CpuTranslation, upper: &mut Option<Upper>| {
            *upper = Some(Upper::Leaf(t));
            Ok(t)
        };
        match level {
            1 => return Ok(leaf(ADDR_MASK, 4096)),
            2 if entry & PS != 0 => return large(leaf(ADDR_MASK_2M, 2 << 20), upper),
            3 if entry & PS != 0 => return large(leaf(ADDR_MASK_1G, 1 << 30), upper),
            4 | 5 if entry & PS != 0 => return Err(CpuWalkError::Malformed { level, entry }),
            _ => table = entry & ADDR_MASK,
        }
    }
    unreachable!("level 1 always returns")
}

/// What a walk found above the 4 KiB level for a VA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Upper {
    /// The page table (level 1) at `table`; `writable`: RW at every level
    /// above it. Spans 2 MiB of VA.
    Table { table: u64, writable: bool },
    /// A 2 MiB or 1 GiB leaf: spans its size.
    Leaf(CpuTranslation),
}

impl Upper {
    fn span(&self) -> u64 {
        match self {
            Upper::Table { .. } => 2 << 20,
            Upper::Leaf(t) => t.size,
        }
    }
}

/// How many distinct 2 MiB (or larger) spans of VA a [`RunWalks`] holds: a
/// COPY's source and destination, each of which may cross into the next
/// span within a run, with room (the direct map is not walked through it).
pub const RUN_WALK_SLOTS: usize = 8;

/// The CPU walks of one *run* of device accesses (at most
/// [`crate::engine::RUN_PAGES`] page steps, all checked before any data
/// moves, or all re-checked after it moved): what the first walk of a span
/// of VA found above the 4 KiB level (the PD entry's page table, or a 2 MiB
/// / 1 GiB leaf) is reused by the later walks of the run in that span, so a
/// run reads each upper-level entry once and each 4 KiB entry once per
/// access ("walk a run once").
///
/// # Invariants
///
/// A `RunWalks` belongs to one run phase of one CPU root: the checker makes
/// a fresh one before a run's checks and another after the run's data moved
/// (its re-checks), so every span is read again after the copy and nothing
/// read before a copy answers a walk after it. Nothing in it is trusted from
/// the driver: it holds only what this walker read from the guest's own
/// tables during the run. Errors are never kept (a walk that fails above the
/// 4 KiB level is repeated in full by the next access).
#[derive(Debug)]
pub struct RunWalks {
    root: u64,
    levels: Levels,
    /// (first VA of the span, what is there); `None`: free.
    slots: [Option<(u64, Upper)>; RUN_WALK_SLOTS],
    /// The slot the next new span replaces (round robin).
    next: usize,
}

impl RunWalks {
    /// Walks of the table at `root` (as [`walk`]'s), none done yet.
    pub fn new(root: u64, levels: Levels) -> Self {
        Self {
            root,
            levels,
            slots: [None; RUN_WALK_SLOTS],
            next: 0,
        }
    }

    /// [`walk`] of `va` in this run: the same answer as a full walk at the
    /// time the span's first walk read its upper levels.
    pub fn walk<M: PhysMem + ?Sized>(
        &mut self,
        mem: &M,
        va: u64,
    ) -> Result<CpuTranslation, CpuWalkError> {
        canonical(self.levels, va)?;
        let hit = self
            .slots
            .iter()
            .flatten()
            .find(|(base, u)| va & !(u.span() - 1) == *base)
            .map(|&(_, u)| u);
        match hit {
            Some(Upper::Leaf(t)) => Ok(t),
            Some(Upper::Table { table, writable }) => {
                walk_from(mem, table, 1, writable, va, &mut None)
            }
            None => {
                let mut upper = None;
                let r = walk_from(
                    mem,
                    self.root & ADDR_MASK,
                    self.levels.count(),
                    true,
                    va,
                    &mut upper,
                );
                if let Some(u) = upper {
                    self.slots[self.next] = Some((va & !(u.span() - 1), u));
                    self.next = (self.next + 1) % RUN_WALK_SLOTS;
                }
                r
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::layout::x86::{ACCESSED, DIRTY, USER};
    use crate::mem::testmem::{self, get, put};
    use vm_memory::GuestMemoryMmap;

    /// Builds x86-64 page tables in synthetic guest memory.
    pub struct CpuBuilder<'a> {
        pub mem: &'a GuestMemoryMmap,
        pub root: u64,
        pub levels: Levels,
        next: u64,
    }

    pub const TABLE: u64 = PRESENT | RW | USER | ACCESSED;

    impl<'a> CpuBuilder<'a> {
        pub fn new(mem: &'a GuestMemoryMmap, levels: Levels, area: u64) -> Self {
            Self {
                mem,
                root: area,
                levels,
                next: area + 0x1000,
            }
        }

        /// A builder for an existing table at `root` that allocates new
        /// tables from `next`.
        pub fn at(mem: &'a GuestMemoryMmap, levels: Levels, root: u64, next: u64) -> Self {
            Self {
                mem,
                root,
                levels,
                next,
            }
        }

        /// Address of the entry for `va` at `level`, allocating tables.
        pub fn entry_addr(&mut self, va: u64, level: u32) -> u64 {
            let mut table = self.root;
            for l in ((level + 1)..=self.levels.count()).rev() {
                let a = table + x86::index(va, l) * 8;
                let e = get(self.mem, a);
                if e & PRESENT == 0 {
                    let t = self.next;
                    self.next += 0x1000;
                    put(self.mem, a, t | TABLE);
                    table = t;
                } else {
                    table = e & ADDR_MASK;
                }
            }
            table + x86::index(va, level) * 8
        }

        pub fn set(&mut self, va: u64, level: u32, entry: u64) -> u64 {
            let a = self.entry_addr(va, level);
            put(self.mem, a, entry);
            a
        }

        pub fn map_4k(&mut self, va: u64, frame: u64, write: bool) -> u64 {
            let e = frame | PRESENT | USER | ACCESSED | DIRTY | if write { RW } else { 0 };
            self.set(va, 1, e)
        }

        fn alloc(&mut self) -> u64 {
            let t = self.next;
            self.next += 0x1000;
            for i in 0..512 {
                put(self.mem, t + i * 8, 0);
            }
            t
        }

        /// A kernel direct map of guest RAM `[0, ram)` at `base` (Linux's
        /// page_offset_base) in the same tables, as the kernel builds it:
        /// global, NX, writable leaves of 1 GiB (`gib`) or 2 MiB.
        pub fn map_direct_map(&mut self, base: u64, ram: u64, gib: bool) {
            let (level, size) = if gib { (3, 1 << 30) } else { (2, 2 << 20) };
            let mut pa = 0;
            while pa < ram {
                self.set(base + pa, level, pa | DIRECT_LEAF | PS);
                pa += size;
            }
        }

        /// What the kernel's set_direct_map_invalid_noflush() does to the
        /// frame at guest physical `frame`: split the large leaves above it
        /// (1 GiB -> 2 MiB -> 4 KiB, same attributes) and clear PRESENT
        /// and RW in its 4 KiB entry (GLOBAL and NX stay).
        pub fn remove_from_direct_map(&mut self, base: u64, frame: u64) {
            let va = base + frame;
            for level in [3, 2] {
                let a = self.entry_addr(va, level);
                let e = get(self.mem, a);
                if e & PRESENT != 0 && e & PS != 0 {
                    let (mask, child) = if level == 3 {
                        (ADDR_MASK_1G, 2 << 20)
                    } else {
                        (ADDR_MASK_2M, 4096)
                    };
                    let t = self.alloc();
                    let attrs = e & !mask & if level == 2 { !PS } else { !0 };
                    for i in 0..512 {
                        put(self.mem, t + i * 8, ((e & mask) + i * child) | attrs);
                    }
                    put(self.mem, a, t | PRESENT | RW | ACCESSED | DIRTY);
                }
            }
            let a = self.entry_addr(va, 1);
            put(self.mem, a, get(self.mem, a) & !(PRESENT | RW));
        }
    }

    /// A direct-map leaf's bits (without PS): __PAGE_KERNEL | _PAGE_GLOBAL.
    pub const DIRECT_LEAF: u64 = PRESENT | RW | ACCESSED | DIRTY | PROTNONE | x86::NX;
    /// page_offset_base without KASLR, 4 and 5 levels.
    pub const DIRECT_MAP_4: u64 = 0xffff_8880_0000_0000;
    pub const DIRECT_MAP_5: u64 = 0xff11_0000_0000_0000;

    const MB: u64 = 1 << 20;

    #[test]
    fn leaves_of_every_size_4_and_5_levels() {
        for levels in [Levels::Four, Levels::Five] {
            let m = testmem::new(16 << 20);
            let mut b = CpuBuilder::new(&m, levels, 0x10_0000);
            b.map_4k(0x7f00_0000_1000, 0x80_0000, true);
            b.set(
                0x7f00_0020_0000,
                2,
                0x40_0000 | PRESENT | RW | PS | (1 << 12),
            ); // PAT bit
            b.set(0x7e00_4000_0000, 3, 0x4000_0000 | PRESENT | PS);
            let t = walk(&m, b.root, levels, 0x7f00_0000_1abc).unwrap();
            assert_eq!(
                (t.frame, t.size, t.writable, t.level),
                (0x80_0000, 4096, true, 1)
            );
            assert_eq!(t.phys(0x7f00_0000_1abc), 0x80_0abc);
            let t = walk(&m, b.root, levels, 0x7f00_0021_2345).unwrap();
            assert_eq!((t.frame, t.size, t.level), (4 * MB, 2 * MB, 2));
            assert_eq!(t.phys(0x7f00_0021_2345), 4 * MB + 0x1_2345);
            let t = walk(&m, b.root, levels, 0x7e00_4123_4567).unwrap();
            assert_eq!((t.frame, t.size, t.writable), (1 << 30, 1 << 30, false));
            assert_eq!(t.phys(0x7e00_4123_4567), (1 << 30) + 0x123_4567);
        }
    }

    #[test]
    fn five_level_uses_bits_above_47() {
        let m = testmem::new(16 << 20);
        let mut b = CpuBuilder::new(&m, Levels::Five, 0x10_0000);
        let va = (3u64 << 48) | 0x1000;
        b.map_4k(va, 0x80_0000, true);
        assert_eq!(walk(&m, b.root, Levels::Five, va).unwrap().frame, 0x80_0000);
        assert!(walk(&m, b.root, Levels::Five, 0x1000).is_err());
        assert_eq!(
            walk(&m, b.root, Levels::Four, va),
            Err(CpuWalkError::NonCanonical { va })
        );
    }

    #[test]
    fn writable_needs_rw_at_every_level() {
        let m = testmem::new(16 << 20);
        let mut b = CpuBuilder::new(&m, Levels::Four, 0x10_0000);
        b.map_4k(0x1000, 0x80_0000, true);
        assert!(walk(&m, b.root, Levels::Four, 0x1000).unwrap().writable);
        // Clear RW in the PD entry.
        let pde = b.entry_addr(0x1000, 2);
        put(&m, pde, get(&m, pde) & !RW);
        let t = walk(&m, b.root, Levels::Four, 0x1000).unwrap();
        assert!(!t.writable);
        assert_eq!(t.frame, 0x80_0000);
    }

    #[test]
    fn no_page_kinds() {
        let m = testmem::new(16 << 20);
        let mut b = CpuBuilder::new(&m, Levels::Four, 0x10_0000);
        let a = b.map_4k(0x1000, 0x80_0000, true);
        for (entry, kind) in [
            (0, NoPage::Empty),
            (0x80_0000 | PROTNONE | USER | ACCESSED, NoPage::ProtNone),
            (0x3_4500_0000_0000 | 0x40, NoPage::SwapOrMigration),
        ] {
            put(&m, a, entry);
            assert_eq!(
                walk(&m, b.root, Levels::Four, 0x1000),
                Err(CpuWalkError::NoPage {
                    level: 1,
                    kind,
                    entry
                })
            );
        }
        // A missing upper level.
        assert!(matches!(
            walk(&m, b.root, Levels::Four, 0x7000_0000_0000),
            Err(CpuWalkError::NoPage {
                level: 4,
                kind: NoPage::Empty,
                ..
            })
        ));
    }

    #[test]
    fn direct_map_in_the_kernel_half() {
        for (levels, base) in [(Levels::Four, DIRECT_MAP_4), (Levels::Five, DIRECT_MAP_5)] {
            for gib in [false, true] {
                let m = testmem::new(16 << 20);
                let mut b = CpuBuilder::new(&m, levels, 0x10_0000);
                b.map_direct_map(base, 16 << 20, gib);
                let va = direct_map_va(base, 0x80_1000).unwrap();
                let t = walk(&m, b.root, levels, va).unwrap();
                assert_eq!(t.phys(va), 0x80_1000);
                b.remove_from_direct_map(base, 0x80_1000);
                assert!(matches!(
                    walk(&m, b.root, levels, va),
                    Err(CpuWalkError::NoPage { level: 1, .. })
                ));
                // The split kept the neighbours, at 4 KiB and 2 MiB.
                for pa in [0x80_0000, 0x80_2000, 0x60_0000, 0xa0_0000, 0] {
                    let va = base + pa;
                    assert_eq!(walk(&m, b.root, levels, va).unwrap().phys(va), pa);
                }
            }
        }
        assert_eq!(
            direct_map_va(!0xfff, 0x1000),
            Err(CpuWalkError::Wraps {
                base: !0xfff,
                offset: 0x1000
            })
        );
    }

    /// Counts the loads a walker makes.
    struct Counting<'a>(&'a GuestMemoryMmap, std::cell::Cell<u64>);

    impl PhysMem for Counting<'_> {
        fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
            self.1.set(self.1.get() + 1);
            self.0.load_u64(addr)
        }
        fn cas_u64(&self, addr: u64, old: u64, new: u64) -> Result<Result<u64, u64>, MemError> {
            self.0.cas_u64(addr, old, new)
        }
    }

    #[test]
    fn run_walks_answer_as_full_walks() {
        for levels in [Levels::Four, Levels::Five] {
            let m = testmem::new(16 << 20);
            let mut b = CpuBuilder::new(&m, levels, 0x10_0000);
            for i in 0..8 {
                b.map_4k(
                    0x7f00_0000_0000 + i * 0x1000,
                    0x80_0000 + i * 0x3000,
                    i % 3 != 0,
                );
            }
            let pte = b.entry_addr(0x7f00_0000_5000, 1);
            put(&m, pte, 0x80_0000 | PROTNONE | USER);
            let pde = b.entry_addr(0x7f00_0020_0000, 2);
            put(&m, pde, 0x40_0000 | PRESENT | PS); // 2 MiB read-only leaf
            b.set(0x7e00_4000_0000, 3, 0x4000_0000 | PRESENT | RW | PS);
            b.map_direct_map(DIRECT_MAP_4, 16 << 20, true);
            let mut vas: Vec<u64> = (0..10).map(|i| 0x7f00_0000_0000 + i * 0x1000 + 8).collect();
            vas.extend([
                0x7f00_0021_0000,
                0x7f00_003f_f000,
                0x7e00_4000_1000,
                0x7e00_7fff_f000,
            ]);
            vas.extend([
                0x7f00_0040_0000,
                0x1234_5678,
                1 << 56,
                DIRECT_MAP_4 + 0x80_1000,
            ]);
            // Interleaved and repeated, as a run's sources and destinations.
            let order: Vec<u64> = vas.iter().chain(vas.iter().rev()).copied().collect();
            let mut w = RunWalks::new(b.root, levels);
            for va in order {
                assert_eq!(w.walk(&m, va), walk(&m, b.root, levels, va), "va {va:#x}");
            }
        }
    }

    #[test]
    fn run_walks_read_upper_levels_once_per_span() {
        let m = testmem::new(16 << 20);
        let mut b = CpuBuilder::new(&m, Levels::Four, 0x10_0000);
        for i in 0..16 {
            b.map_4k(0x7f00_0000_0000 + i * 0x1000, 0x80_0000 + i * 0x1000, true);
            b.map_4k(0x7f00_4000_0000 + i * 0x1000, 0x90_0000 + i * 0x1000, true);
        }
        let c = Counting(&m, std::cell::Cell::new(0));
        let mut w = RunWalks::new(b.root, Levels::Four);
        for i in 0..16 {
            w.walk(&c, 0x7f00_0000_0000 + i * 0x1000).unwrap();
            w.walk(&c, 0x7f00_4000_0000 + i * 0x1000).unwrap();
        }
        // Two spans: 4 loads each the first time, then one per access.
        assert_eq!(c.1.get(), 2 * 4 + 30);
        // A 2 MiB leaf is read once for the run.
        b.set(0x7f00_0020_0000, 2, 0x40_0000 | PRESENT | RW | PS);
        let c = Counting(&m, std::cell::Cell::new(0));
        for i in 0..16 {
            w.walk(&c, 0x7f00_0020_0000 + i * 0x1000).unwrap();
        }
        assert_eq!(c.1.get(), 3);
    }

    #[test]
    fn run_walks_see_a_change_only_when_made_afresh() {
        // The property the checker's re-checks rest on: within one run an
        // upper level is read once; a new RunWalks (after the copy) reads
        // every level again and sees the change.
        let m = testmem::new(16 << 20);
        let mut b = CpuBuilder::new(&m, Levels::Four, 0x10_0000);
        b.map_4k(0x1000, 0x80_0000, true);
        b.map_4k(0x2000, 0x80_1000, true);
        let mut w = RunWalks::new(b.root, Levels::Four);
        assert_eq!(w.walk(&m, 0x1000).unwrap().frame, 0x80_0000);
        // The PD entry now holds a 2 MiB leaf (a collapse), RW cleared.
        let pde = b.entry_addr(0x1000, 2);
        let old = get(&m, pde);
        put(&m, pde, 0x20_0000 | PRESENT | PS);
        assert_eq!(w.walk(&m, 0x2000).unwrap().frame, 0x80_1000);
        let mut after = RunWalks::new(b.root, Levels::Four);
        let t = after.walk(&m, 0x2000).unwrap();
        assert_eq!((t.frame, t.writable), (0x20_0000, false));
        // A 4 KiB entry is read by every access, even within the run.
        put(&m, pde, old);
        let mut w = RunWalks::new(b.root, Levels::Four);
        w.walk(&m, 0x1000).unwrap();
        put(&m, b.entry_addr(0x2000, 1), 0);
        assert!(matches!(
            w.walk(&m, 0x2000),
            Err(CpuWalkError::NoPage { level: 1, .. })
        ));
        // Errors above the 4 KiB level are not kept.
        put(&m, pde, 0);
        let mut w = RunWalks::new(b.root, Levels::Four);
        assert!(w.walk(&m, 0x1000).is_err());
        put(&m, pde, old);
        assert_eq!(w.walk(&m, 0x1000).unwrap().frame, 0x80_0000);
    }

    #[test]
    fn errors_not_panics() {
        let m = testmem::new(1 << 20);
        assert!(matches!(
            walk(&m, 1 << 40, Levels::Four, 0),
            Err(CpuWalkError::BadAddress { level: 4, .. })
        ));
        // PS in a PML4 entry.
        put(&m, 0x1000, 0x4000 | PRESENT | PS);
        assert!(matches!(
            walk(&m, 0x1000, Levels::Four, 0),
            Err(CpuWalkError::Malformed { level: 4, .. })
        ));
        // A table pointer to the end of the physical address space.
        put(&m, 0x1000, ADDR_MASK | PRESENT);
        assert!(matches!(
            walk(&m, 0x1000, Levels::Four, 0),
            Err(CpuWalkError::BadAddress { level: 3, .. })
        ));
        // Self-referencing tables terminate.
        for i in 0..512 {
            put(&m, 0x2000 + i * 8, 0x2000 | PRESENT | RW);
        }
        let t = walk(&m, 0x2000, Levels::Five, 0x1234_5000).unwrap();
        assert_eq!(t.frame, 0x2000);
        // Garbage everywhere.
        let mut x: u64 = 7;
        for i in 0..(1u64 << 17) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            put(&m, i * 8, x >> (i % 13));
        }
        for i in 0..20_000u64 {
            let va = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let levels = if i % 2 == 0 {
                Levels::Four
            } else {
                Levels::Five
            };
            let _ = walk(&m, (i * 0x1000) & 0xf_ffff, levels, va);
            let _ = walk(
                &m,
                i.wrapping_mul(0x1234_5678_9abc),
                levels,
                va & 0x7fff_ffff_f000,
            );
        }
    }
}
