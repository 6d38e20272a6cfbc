//! Bit layouts of the two page-table formats the device reads, in one place.
//!
//! ## GPU page table (written by the `vgpu_svm` driver, read by the device)
//! Four levels of 4 KiB tables, 512 little-endian 64-bit entries each; the
//! GPU VA has 48 bits: level 4 (root) indexes VA[47:39], level 3 VA[38:30],
//! level 2 VA[29:21], level 1 VA[20:12].
//!
//! | bits  | name  | meaning |
//! |-------|-------|---------|
//! | 0     | VALID | entry is valid; a clear bit at any level means "not mapped" (fault) |
//! | 1     | WRITE | leaf only: the device may write through it (ignored in table entries) |
//! | 6     | DIRTY | leaf only: set by the device (compare-and-swap) before its first write |
//! | 7     | LARGE | level-2 entry only: a 2 MiB leaf; reserved (must be 0) at every other level |
//! | 12-51 | ADDR  | physical address of the next table, or of the page (2 MiB aligned for LARGE) |
//!
//! Other bits are reserved and must be zero: a set reserved bit makes the
//! walk fail with `Malformed` (it means the driver wrote garbage).
//!
//! ## x86-64 CPU page table (the guest kernel's, read by the checker)
//! 4 levels (PML4, PDPT, PD, PT) or 5 (PML5 first), 512 entries per table,
//! 9 VA bits per level above the 12-bit page offset.
//!
//! | bits  | name | meaning |
//! |-------|------|---------|
//! | 0     | P    | present; clear means no page (not present, PROT_NONE, swap or migration entry) |
//! | 1     | RW   | writable; a write needs RW at every level |
//! | 2     | US   | user accessible |
//! | 5     | A    | accessed |
//! | 6     | D    | dirty (leaves) |
//! | 7     | PS   | page size: a 1 GiB leaf in a PDPT entry, a 2 MiB leaf in a PD entry; PAT in a PT entry; reserved in PML4/PML5 |
//! | 8     | G / PROTNONE | global; in a non-present entry Linux uses it as `_PAGE_PROTNONE` |
//! | 12-51 | ADDR | next table or 4 KiB page; bits 21-51 (2 MiB) or 30-51 (1 GiB) for large leaves (bit 12 is then PAT) |
//! | 63    | NX   | no execute |

/// GPU page-table format.
pub mod gpu {
    pub const VALID: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const DIRTY: u64 = 1 << 6;
    pub const LARGE: u64 = 1 << 7;
    /// Physical address bits 12..51.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// Bits that must be zero in every entry.
    pub const RESERVED: u64 = !(ADDR_MASK | VALID | WRITE | DIRTY | LARGE);
    pub const LEVELS: u32 = 4;
    pub const ENTRIES: u64 = 512;
    pub const ENTRY_SIZE: u64 = 8;
    pub const VA_BITS: u32 = 48;
    pub const PAGE_SIZE: u64 = 4096;
    pub const LARGE_PAGE_SIZE: u64 = 2 << 20;
    /// The level whose entries may be 2 MiB leaves.
    pub const LARGE_LEVEL: u32 = 2;

    /// Index into the table at `level` (4 = root .. 1 = last) for `va`.
    pub const fn index(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
    }
}

/// x86-64 page-table format.
pub mod x86 {
    pub const PRESENT: u64 = 1 << 0;
    pub const RW: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    pub const PS: u64 = 1 << 7;
    /// In a non-present entry: Linux's `_PAGE_PROTNONE` (same bit as GLOBAL).
    pub const PROTNONE: u64 = 1 << 8;
    pub const NX: u64 = 1 << 63;
    /// Table / 4 KiB page address, bits 12..51.
    pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;
    /// 2 MiB leaf address, bits 21..51.
    pub const ADDR_MASK_2M: u64 = 0x000f_ffff_ffe0_0000;
    /// 1 GiB leaf address, bits 30..51.
    pub const ADDR_MASK_1G: u64 = 0x000f_ffff_c000_0000;
    pub const ENTRIES: u64 = 512;
    pub const ENTRY_SIZE: u64 = 8;

    /// Index into the table at `level` (5 = PML5, 4 = PML4, 3 = PDPT,
    /// 2 = PD, 1 = PT) for `va`.
    pub const fn index(va: u64, level: u32) -> u64 {
        (va >> (12 + 9 * (level - 1))) & (ENTRIES - 1)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn indexes() {
        let va = (3u64 << 39) | (5 << 30) | (7 << 21) | (11 << 12) | 0x123;
        assert_eq!(
            [1, 2, 3, 4].map(|l| super::gpu::index(va, l)),
            [11, 7, 5, 3]
        );
        assert_eq!(super::x86::index(1u64 << 48, 5), 1);
        assert_eq!(super::gpu::RESERVED & super::gpu::ADDR_MASK, 0);
        assert_eq!(super::gpu::RESERVED & 0xff, 0xff & !0xc3);
    }
}
