//! The TLB generation (protocol 0.5, SET_AS `tlb_gen_gpa`): the driver's
//! idle fast path for invalidations.
//!
//! The driver may change GPU entries of a context none of whose JOBs or
//! RESUMEs is unanswered without an INVALIDATE round trip: it stores a new
//! value into a u64 in guest memory instead, and the device, at the start of
//! every JOB and RESUME of the context, before the job's first access, loads
//! that u64 and drops the context's whole TLB if it changed.
//!
//! Why this is enough (the device's half of the argument; the driver's is in
//! its `Shared::flush`):
//! - No access of the context is in flight when the driver stores the new
//!   generation: an access belongs to a job, and the device answers a JOB or
//!   RESUME only after the job's last access section ended (it completes,
//!   faults or fails on the worker after `engine::run` returned), so a
//!   translation cached before the store can only be *used* by a later JOB or
//!   RESUME of the context.
//! - The driver stores its page-table changes and then the generation before
//!   it publishes that later JOB/RESUME in the control queue (the virtqueue's
//!   write barrier before the avail index). The device reads the avail index
//!   with acquire ordering before it reads the command, and calls
//!   [`TlbGen::sync`] after it parsed the command, on the same thread, before
//!   the job is queued for a worker: the load below (itself an acquire load)
//!   sees the new generation, or a later one.
//! - [`TlbGen::sync`] runs under the context's `space` lock, the lock every
//!   translation takes: a job of the context that runs at the same time (one
//!   submitted after the store, so it walks the changed tables anyway) never
//!   sees the TLB half flushed, and no JOB is queued before its own sync is
//!   done.
//! - The value is the guest's (hostile): it only decides whether to flush.
//!   An address that cannot be loaded any more (memory table changed) flushes
//!   every time: never a stale translation.
//!
//! The checker stays the judge: a driver that relies on the generation
//! without the conditions above, or a device that skipped the flush, uses a
//! stale frame and the checker reports it.

use crate::mem::PhysMem;
use crate::mmu::Tlb;

/// A context's TLB generation: where it is and the value last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TlbGen {
    gpa: u64,
    /// The value loaded at the last JOB/RESUME; `None` after SET_AS (the
    /// first sync flushes, harmlessly: a new address space's TLB is empty).
    last: Option<u64>,
}

impl TlbGen {
    /// The generation at guest-physical `gpa` (8-byte aligned, checked by
    /// the parser; in guest RAM, checked by SET_AS).
    pub fn new(gpa: u64) -> Self {
        Self { gpa, last: None }
    }

    /// Its guest-physical address.
    pub fn gpa(&self) -> u64 {
        self.gpa
    }

    /// At the start of a JOB or RESUME, before the job's first access:
    /// loads the generation and drops every entry of `tlb` if it differs
    /// from the one seen last (or cannot be loaded). Returns whether it
    /// flushed.
    pub fn sync<M: PhysMem + ?Sized>(&mut self, mem: &M, tlb: &mut Tlb) -> bool {
        let now = mem.load_u64(self.gpa).ok();
        if now.is_some() && now == self.last {
            return false;
        }
        tlb.invalidate_all();
        self.last = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::gpu::{VALID, WRITE};
    use crate::mem::testmem::{self, put};
    use crate::mmu::Translation;

    fn entry(va: u64) -> Translation {
        Translation {
            va_base: va,
            frame: 0x5000,
            size: 4096,
            pte: 0x5000 | VALID | WRITE,
            pte_addr: 0x100,
        }
    }

    #[test]
    fn flushes_only_when_the_generation_changes() {
        let m = testmem::new(0x10000);
        let mut tlb = Tlb::new(16);
        let mut g = TlbGen::new(0x800);
        // First sync after SET_AS flushes (nothing seen yet).
        tlb.insert(entry(0x1000));
        assert!(g.sync(&m, &mut tlb));
        assert!(tlb.is_empty());
        // Unchanged: the entry stays.
        tlb.insert(entry(0x1000));
        assert!(!g.sync(&m, &mut tlb));
        assert_eq!(tlb.len(), 1);
        // A new value (any: hostile values only decide whether to flush).
        for v in [1u64, u64::MAX, 0, 7] {
            put(&m, 0x800, v);
            assert!(g.sync(&m, &mut tlb), "{v:#x}");
            assert!(tlb.is_empty());
            tlb.insert(entry(0x1000));
            assert!(!g.sync(&m, &mut tlb), "{v:#x} again");
            assert_eq!(tlb.len(), 1);
        }
    }

    #[test]
    fn unreadable_generation_always_flushes() {
        let m = testmem::new(0x10000);
        let mut tlb = Tlb::new(16);
        for gpa in [0x10000u64, !7] {
            let mut g = TlbGen::new(gpa);
            for _ in 0..3 {
                tlb.insert(entry(0x1000));
                assert!(g.sync(&m, &mut tlb));
                assert!(tlb.is_empty());
            }
        }
    }
}
