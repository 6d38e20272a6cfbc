//! Atomic 64-bit access to guest physical memory, as a page-table walker
//! needs it: aligned loads, and compare-and-swap for the DIRTY bit.
//!
//! Implemented for every `vm_memory::GuestMemory` (the vhost-user memory
//! table, or a `GuestMemoryMmap` in tests). An address outside guest memory,
//! straddling two regions, or misaligned is an error, never a panic.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemory, Permissions, VolatileMemory};

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
