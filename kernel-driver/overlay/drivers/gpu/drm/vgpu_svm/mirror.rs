// SPDX-License-Identifier: GPL-2.0

//! The update half of the mirror protocol: snapshot the CPU page table with
//! `hmm_range_fault` and commit GPU entries under the update lock, retrying while the
//! notifier's sequence says an invalidation raced.
//!
//! ```text
//! loop (bounded by a timeout -> EBUSY):
//!     seq = read_begin()                      # update lock NOT held
//!     mmap_read_lock; hmm_range_fault; unlock # EBUSY -> again
//!     grow page tables                        # allocation, outside the lock
//!     lock(update)
//!     read_retry(seq)? -> unlock, again
//!     write entries (2 MiB where the CPU maps a THP)
//!     unlock
//! ```

use core::sync::atomic::Ordering;
use kernel::{
    hmm,
    mm::{virt::VmaRef, MmWithUser},
    mmu_notifier::{IntervalNotifier, IntervalNotifierOps, Seq},
    prelude::*,
    time::{delay::fsleep, Delta},
};

use crate::{
    context::{Locked, Shared},
    debug,
    pagetable::{UpdateToken, LARGE_PAGE, PAGE},
};

/// Restarts of the loop after `EBUSY` before giving up with `EBUSY` (each restart waits in
/// `read_begin` for the racing invalidation to finish).
const MAX_BUSY_RETRIES: u32 = 1000;

/// Pages snapshotted at once.
pub(crate) const WINDOW: usize = 64;

/// Where a CPU range is mirrored on the GPU.
#[derive(Clone, Copy)]
pub(crate) struct Placement {
    /// CPU VA of the first page.
    pub(crate) cpu: u64,
    /// GPU VA it maps to.
    pub(crate) gpu: u64,
    /// Whether the device may write through the mapping at all.
    pub(crate) writable: bool,
}

/// Rejects mappings that cannot be mirrored before hmm_range_fault would, and those no
/// device may reach although hmm_range_fault would mirror them: `memfd_secret(2)` memory
/// (GUP refuses it; 7.2's hmm_range_fault does not check).
fn check_vma(vma: &VmaRef) -> Result {
    let f = vma.flags();
    if f & (kernel::mm::virt::flags::IO | kernel::mm::virt::flags::PFNMAP) != 0 {
        return Err(EFAULT);
    }
    if hmm::vma_is_secretmem(vma) {
        pr_debug!("vgpu_svm: refusing to mirror memfd_secret memory at 0x{:x}\n", vma.start());
        return Err(EFAULT);
    }
    Ok(())
}

/// Checks every VMA of `[start, end)` with [`check_vma`]; a hole is `EFAULT`. Bounded by the
/// number of VMAs: each step moves past one.
fn check_range(mmap: &kernel::mm::MmapReadGuard<'_>, start: u64, end: u64) -> Result {
    let mut a = start;
    while a < end {
        let vma = mmap.vma_lookup(a as usize).ok_or(EFAULT)?;
        check_vma(vma)?;
        let next = vma.end() as u64;
        if next <= a {
            return Err(EFAULT);
        }
        a = next;
    }
    Ok(())
}

/// Mirrors `npages` pages starting at CPU VA `p.cpu` (inside `n`'s range) at GPU VA `p.gpu`,
/// faulting them in (writable if `write`). GPU entries are writable only where the CPU's are
/// and `p.writable` allows it (a READONLY userptr object never is). Returns the number of 4 KiB GPU entries written
/// and the sequence they were committed at.
pub(crate) fn populate<T: IntervalNotifierOps<Locked = Locked>>(
    shared: &Shared,
    n: &IntervalNotifier<T>,
    mm: &MmWithUser,
    p: Placement,
    npages: usize,
    write: bool,
    on_commit: impl FnOnce(),
) -> Result<(u64, Seq)> {
    let mut pfns = KVec::<c_ulong>::new();
    pfns.resize(npages, 0, GFP_KERNEL)?;
    let flags = hmm::PFN_REQ_FAULT | if write { hmm::PFN_REQ_WRITE } else { 0 };
    let gpu_end = p.gpu + (npages as u64) * PAGE;
    // hmm_range_fault returns EBUSY when an invalidation raced; bound the restarts.
    let mut busy_retries = 0u32;
    loop {
        let seq: Seq = n.read_begin();
        let res = {
            let mmap = mm.mmap_read_lock();
            check_range(&mmap, p.cpu, p.cpu + (npages as u64) * PAGE)
                .and_then(|()| hmm::range_fault(&mmap, n, seq, p.cpu as usize, &mut pfns, flags))
        };
        match res {
            Err(e) if e == EBUSY => {
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                if busy_retries >= MAX_BUSY_RETRIES {
                    return Err(EBUSY);
                }
                busy_retries += 1;
                continue;
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        shared.pt.grow(p.gpu, gpu_end)?;
        if debug::legacy_valid_flag() {
            let d = debug::legacy_delay_us();
            if d > 0 {
                fsleep(Delta::from_micros(d.into()));
            }
        }
        let guard = shared.update.lock();
        let stale = if debug::legacy_valid_flag() {
            // The 2019 scheme, on purpose: trust a flag instead of the sequence.
            !shared.legacy_valid.load(Ordering::Acquire)
        } else {
            n.read_retry(&guard, seq)
        };
        if stale {
            drop(guard);
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let token = UpdateToken::new(&guard);
        let mut written = 0u64;
        let mut i = 0usize;
        while i < npages {
            let e = pfns[i];
            let gva = p.gpu + (i as u64) * PAGE;
            if e & hmm::PFN_VALID == 0 || e & hmm::PFN_ERROR != 0 {
                i += 1;
                continue;
            }
            let writable = p.writable && e & hmm::PFN_WRITE != 0;
            let phys = hmm::pfn_to_phys(e);
            let cva = p.cpu + (i as u64) * PAGE;
            // A 2 MiB entry where the CPU maps a THP with a PMD, the GPU and CPU offsets inside
            // the 2 MiB block agree, and the notifier watches the whole block (a userptr
            // object's notifier covers only its range). `grow` above prepared the table.
            let cpu_block = cva & !(LARGE_PAGE - 1);
            if hmm::pfn_to_map_order(e) >= 9
                && gva % LARGE_PAGE == cva % LARGE_PAGE
                && cpu_block >= n.start() as u64
                && cpu_block + LARGE_PAGE <= (n.start() + n.length()) as u64
            {
                let block = gva & !(LARGE_PAGE - 1);
                let off = gva - block;
                if shared.pt.map_2m(&token, block, phys - off, writable).is_ok() {
                    let next = ((block + LARGE_PAGE - p.gpu) / PAGE) as usize;
                    written += LARGE_PAGE / PAGE;
                    i = next.max(i + 1);
                    continue;
                }
            }
            shared.pt.map_4k(&token, gva, phys, writable)?;
            written += 1;
            i += 1;
        }
        // Still under the lock, with the sequence checked: the caller's bookkeeping.
        on_commit();
        drop(guard);
        shared.stats.pages_mapped.fetch_add(written, Ordering::Relaxed);
        shared.stats.last_seq.store(seq.raw() as u64, Ordering::Relaxed);
        return Ok((written, seq));
    }
}

/// Services a device fault at GPU VA `va` of an SVM context (GPU VA == CPU VA): mirrors a
/// window of pages around it, inside its VMA.
pub(crate) fn service_fault<T: IntervalNotifierOps<Locked = Locked>>(
    shared: &Shared,
    n: &IntervalNotifier<T>,
    va: u64,
    write: bool,
) -> Result {
    let mm = shared.mm.mmget_not_zero().ok_or(EFAULT)?;
    let va = va & !(PAGE - 1);
    // The window: from the faulting page to at most WINDOW pages, inside the VMA (a
    // snapshot that crosses into an unmapped hole would fail).
    let end = {
        let mmap = mm.mmap_read_lock();
        let vma = mmap.vma_lookup(va as usize).ok_or(EFAULT)?;
        check_vma(vma)?;
        (vma.end() as u64).min(va + (WINDOW as u64) * PAGE)
    };
    let npages = ((end - va) / PAGE).max(1) as usize;
    populate(shared, n, &mm, Placement { cpu: va, gpu: va, writable: true }, npages, write, || {})?;
    shared.stats.faults_serviced.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
