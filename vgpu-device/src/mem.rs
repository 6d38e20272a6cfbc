//! Atomic 64-bit access to guest physical memory, as a page-table walker
//! needs it: aligned loads, and compare-and-swap for the DIRTY bit.
//!
//! Implemented for every `vm_memory::GuestMemory` (the vhost-user memory
//! table, or a `GuestMemoryMmap` in tests), and by [`RegionCache`], which
//! remembers the region of the last load so that a walk's loads skip the
//! region search. An address outside guest memory, straddling two regions,
//! or misaligned is an error, never a panic.

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{
    Bytes, GuestAddress, GuestMemory, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress,
    Permissions, VolatileMemory,
};

/// An access to guest memory that cannot be done.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemError {
    pub addr: u64,
}

impl fmt::Display for MemError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "guest physical address {:#x} is not accessible",
            self.addr
        )
    }
}

impl std::error::Error for MemError {}

/// Guest physical memory as the device's walkers see it.
pub trait PhysMem {
    /// Atomically loads the little-endian u64 at `addr` (8-byte aligned).
    fn load_u64(&self, addr: u64) -> Result<u64, MemError>;
    /// Atomically replaces the u64 at `addr` with `new` if it equals `old`.
    /// Returns `Ok(Ok(old))` on success, `Ok(Err(current))` if it differed.
    fn cas_u64(&self, addr: u64, old: u64, new: u64) -> Result<Result<u64, u64>, MemError>;
}

impl<M: GuestMemory + ?Sized> PhysMem for M {
    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        if addr & 7 != 0 {
            return Err(MemError { addr });
        }
        self.load::<u64>(GuestAddress(addr), Ordering::Acquire)
            .map(u64::from_le)
            .map_err(|_| MemError { addr })
    }

    fn cas_u64(&self, addr: u64, old: u64, new: u64) -> Result<Result<u64, u64>, MemError> {
        let err = MemError { addr };
        if addr & 7 != 0 {
            return Err(err);
        }
        let mut slices = self
            .get_slices(GuestAddress(addr), 8, Permissions::ReadWrite)
            .map_err(|_| err)?;
        let slice = slices.next().ok_or(err)?.map_err(|_| err)?;
        let atomic = slice.get_atomic_ref::<AtomicU64>(0).map_err(|_| err)?;
        Ok(atomic
            .compare_exchange(
                old.to_le(),
                new.to_le(),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(u64::from_le)
            .map_err(u64::from_le))
    }
}

/// A guest memory region's host mapping.
#[derive(Clone, Copy)]
struct Region {
    /// Guest physical address of the region's first byte.
    start: u64,
    /// Length in bytes (at least 8: smaller regions are not cached).
    len: u64,
    /// Host address of the region's first byte.
    host: *const u8,
}

/// `mem` for the loads of one device access (its page-table walks): the
/// region of the last load is remembered, so the next load in it is one
/// bounds check and one atomic load from the region's host mapping, not a
/// search of the memory table. Anything else (another region, an address
/// outside guest memory, a misaligned one) takes `mem`'s own path, with
/// its errors. Compare-and-swap always does (it is rare: DIRTY updates).
///
/// Lives no longer than the borrow of `mem`, whose regions (and so their
/// mappings) outlive it.
pub struct RegionCache<'a, M: GuestMemoryBackend + GuestMemory + ?Sized> {
    mem: &'a M,
    last: Cell<Option<Region>>,
}

impl<'a, M: GuestMemoryBackend + GuestMemory + ?Sized> RegionCache<'a, M> {
    pub fn new(mem: &'a M) -> Self {
        Self {
            mem,
            last: Cell::new(None),
        }
    }

    /// The cached region if it holds `[addr, addr + 8)`, else the region
    /// that does (then cached), if it has a host mapping.
    fn region_for(&self, addr: u64) -> Option<Region> {
        let holds = |r: &Region| addr >= r.start && addr - r.start <= r.len - 8;
        if let Some(r) = self.last.get().filter(holds) {
            return Some(r);
        }
        let region = self.mem.find_region(GuestAddress(addr))?;
        let len = region.len();
        if len < 8 {
            return None;
        }
        let host = region.get_host_address(MemoryRegionAddress(0)).ok()?;
        let r = Region {
            start: region.start_addr().0,
            len,
            host,
        };
        self.last.set(Some(r));
        holds(&r).then_some(r)
    }
}

impl<M: GuestMemoryBackend + GuestMemory + ?Sized> PhysMem for RegionCache<'_, M> {
    fn load_u64(&self, addr: u64) -> Result<u64, MemError> {
        if addr & 7 == 0 {
            if let Some(r) = self.region_for(addr) {
                // In range: `addr - start <= len - 8` (region_for).
                let p = r.host.wrapping_add((addr - r.start) as usize);
                if p.cast::<AtomicU64>().is_aligned() {
                    // SAFETY: `p..p + 8` lies inside the region's host
                    // mapping (bounds checked above), which stays mapped
                    // while `self.mem` is borrowed; it is 8-byte aligned
                    // (checked); guest memory is shared with the guest, so
                    // it is only ever read here through an atomic, as
                    // vm-memory's own `load` does.
                    let v = unsafe { AtomicU64::from_ptr(p.cast_mut().cast::<u64>()) }
                        .load(Ordering::Acquire);
                    return Ok(u64::from_le(v));
                }
            }
        }
        self.mem.load_u64(addr)
    }

    fn cas_u64(&self, addr: u64, old: u64, new: u64) -> Result<Result<u64, u64>, MemError> {
        self.mem.cas_u64(addr, old, new)
    }
}

#[cfg(test)]
pub(crate) mod testmem {
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    /// A synthetic guest memory: one region at 0 of `size` bytes.
    pub fn new(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    pub fn put(m: &GuestMemoryMmap, addr: u64, v: u64) {
        m.write_obj(v.to_le(), GuestAddress(addr)).unwrap();
    }

    pub fn get(m: &GuestMemoryMmap, addr: u64) -> u64 {
        u64::from_le(m.read_obj::<u64>(GuestAddress(addr)).unwrap())
    }
}

#[cfg(test)]
mod tests {
    use super::testmem::*;
    use super::*;

    #[test]
    fn load_and_cas() {
        let m = new(0x10000);
        put(&m, 0x100, 0x1234);
        assert_eq!(m.load_u64(0x100), Ok(0x1234));
        assert_eq!(m.cas_u64(0x100, 0x1234, 0x5678), Ok(Ok(0x1234)));
        assert_eq!(m.cas_u64(0x100, 0x1234, 0x9), Ok(Err(0x5678)));
        assert_eq!(get(&m, 0x100), 0x5678);
    }

    #[test]
    fn bad_addresses() {
        let m = new(0x10000);
        for a in [0x10000, 0xfffc, 0x101, u64::MAX, u64::MAX - 7] {
            assert!(m.load_u64(a).is_err(), "{a:#x}");
            assert!(m.cas_u64(a, 0, 1).is_err(), "{a:#x}");
        }
    }

    /// The cached path answers exactly like the plain one: in a region, at
    /// its edges, across two regions, outside guest memory, misaligned.
    #[test]
    fn region_cache_is_the_plain_path() {
        let m = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
            (GuestAddress(0x10_0000), 0x2000),
        ])
        .unwrap();
        for (i, a) in [0u64, 0xff8, 0x1000, 0x1ff8, 0x10_0000, 0x10_1ff8]
            .into_iter()
            .enumerate()
        {
            put(&m, a, 0x1111 * (i as u64 + 1));
        }
        let c = RegionCache::new(&m);
        let addrs = [
            0,
            8,
            0xff8,
            0x1000,
            0x1ff8,
            0x2000,
            0xff0,
            0x10_0000,
            0x10_1ff8,
            0x10_2000,
            0x10_1ffc,
            0x4,
            u64::MAX - 7,
            !7,
            0,
            0x10_1ff8,
            0xff8,
        ];
        for a in addrs {
            assert_eq!(c.load_u64(a), m.load_u64(a), "{a:#x}");
        }
        assert_eq!(c.load_u64(0x10_1ff8), Ok(0x6666));
        // A region changes under the cache: loads see the new value.
        put(&m, 0x10_1ff8, 7);
        assert_eq!(c.load_u64(0x10_1ff8), Ok(7));
        assert_eq!(c.cas_u64(0x10_1ff8, 7, 9), Ok(Ok(7)));
        assert_eq!(c.load_u64(0x10_1ff8), Ok(9));
        assert!(c.cas_u64(0x2000, 0, 1).is_err());
    }

    #[test]
    fn adjacent_regions() {
        let m = vm_memory::GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x1000),
            (GuestAddress(0x1000), 0x1000),
        ])
        .unwrap();
        assert!(m.load_u64(0x0ff8).is_ok());
        assert!(m.load_u64(0x1000).is_ok());
        assert!(m.cas_u64(0x1000, 0, 1).is_ok());
    }
}
