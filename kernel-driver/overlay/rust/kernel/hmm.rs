// SPDX-License-Identifier: GPL-2.0

//! Heterogeneous memory management: snapshotting and faulting CPU page tables for a device
//! mirror (added by the vgpu-svm overlay).
//!
//! C header: [`include/linux/hmm.h`](srctree/include/linux/hmm.h).
//!
//! [`range_fault`] fills one entry per page of a range with what the CPU page table maps
//! (faulting pages in as asked). It needs the mmap read lock (it takes the guard) and a
//! sequence sample from the range's [`IntervalNotifier`]. The result is only a snapshot: it
//! may be committed to the device only under the notifier's update lock after
//! [`IntervalNotifier::read_retry`] said nothing changed. The pages are not referenced.

use crate::{
    bindings,
    error::to_result,
    mm::MmapReadGuard,
    mmu_notifier::{IntervalNotifier, IntervalNotifierOps, Seq},
    prelude::*,
};

/// The entry is valid (the page is mapped).
pub const PFN_VALID: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_VALID as c_ulong;
/// The CPU may write the page.
pub const PFN_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_WRITE as c_ulong;
/// The page cannot be mirrored (e.g. a VM_IO/VM_PFNMAP mapping).
pub const PFN_ERROR: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_ERROR as c_ulong;
/// Input: fault the page in if it is not present.
pub const PFN_REQ_FAULT: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_FAULT as c_ulong;
/// Input: fault it in writable (breaking COW).
pub const PFN_REQ_WRITE: c_ulong = bindings::hmm_pfn_flags_HMM_PFN_REQ_WRITE as c_ulong;

/// Default time to keep retrying a range that is being invalidated, in milliseconds.
pub const RANGE_DEFAULT_TIMEOUT_MS: u32 = bindings::HMM_RANGE_DEFAULT_TIMEOUT;

/// Physical address of the page an output entry points to (which must be [`PFN_VALID`]).
pub fn pfn_to_phys(entry: c_ulong) -> u64 {
    // SAFETY: Pure arithmetic on the entry.
    unsafe { bindings::hmm_pfn_to_phys(entry) }
}

/// log2 of the number of pages of the CPU mapping around the page (0 for 4 KiB, 9 for a
/// 2 MiB THP mapped by a PMD). A device may map that many pages at once, aligned.
pub fn pfn_to_map_order(entry: c_ulong) -> u32 {
    // SAFETY: Pure arithmetic on the entry.
    unsafe { bindings::hmm_pfn_to_map_order(entry) }
}

/// Marks the page behind a valid entry dirty, so that writeback does not drop data the
/// device wrote (mirroring takes no reference and the CPU page table never sees those writes).
///
/// # Safety
///
/// `entry` must come from a mapping that is still current for the caller: committed under the
/// update lock and not yet invalidated, or being invalidated by the caller's own callback.
pub unsafe fn pfn_set_dirty(entry: c_ulong) {
    // SAFETY: The caller guarantees the page is still mapped, hence alive.
    unsafe {
        let page = bindings::hmm_pfn_to_page(entry);
        bindings::set_page_dirty(page);
    }
}

/// Snapshots (and faults in, per `flags`) the CPU page table for `[start, start + 4096 *
/// pfns.len())` into `pfns`. `flags` is applied to every page ([`PFN_REQ_FAULT`],
/// [`PFN_REQ_WRITE`]); `seq` is the notifier's sample taken before the mmap lock.
///
/// Errors: `EBUSY` when an invalidation raced (sample the sequence again and retry), `EFAULT`
/// for unmapped addresses, VM_IO/VM_PFNMAP mappings or a write to a read-only mapping,
/// `EPERM` in some protection cases, `ENOMEM`; `EINVAL` if `mmap` is not the notifier's mm's
/// lock or the range is not inside the notifier's.
pub fn range_fault<T: IntervalNotifierOps>(
    mmap: &MmapReadGuard<'_>,
    notifier: &IntervalNotifier<T>,
    seq: Seq,
    start: usize,
    pfns: &mut [c_ulong],
    flags: c_ulong,
) -> Result {
    fault(mmap, notifier, seq, start, pfns, flags, 0)
}

/// [`range_fault`] with a request per page: before the call, each entry of `pfns` holds its
/// page's input flags ([`PFN_REQ_FAULT`], [`PFN_REQ_WRITE`], or 0 for "take it as it is":
/// a snapshot that faults nothing in, so a page that is not present stays so and is returned
/// without [`PFN_VALID`]). A device that mirrors neighbours of a faulting page asks for a
/// fault only at that page: faulting the neighbours would change what the process sees
/// (COW-break private file pages, allocate backing store, hit guard pages).
pub fn range_fault_per_page<T: IntervalNotifierOps>(
    mmap: &MmapReadGuard<'_>,
    notifier: &IntervalNotifier<T>,
    seq: Seq,
    start: usize,
    pfns: &mut [c_ulong],
) -> Result {
    fault(mmap, notifier, seq, start, pfns, 0, PFN_REQ_FAULT | PFN_REQ_WRITE)
}

fn fault<T: IntervalNotifierOps>(
    mmap: &MmapReadGuard<'_>,
    notifier: &IntervalNotifier<T>,
    seq: Seq,
    start: usize,
    pfns: &mut [c_ulong],
    default_flags: c_ulong,
    pfn_flags_mask: c_ulong,
) -> Result {
    let end = start
        .checked_add(pfns.len().checked_mul(bindings::PAGE_SIZE as usize).ok_or(EINVAL)?)
        .ok_or(EINVAL)?;
    if start < notifier.start() || end > notifier.start() + notifier.length() || pfns.is_empty() {
        return Err(EINVAL);
    }
    // The lock held must be the notifier's mm's: `hmm_range_fault` walks `notifier->mm` and
    // relies on the caller holding that mm's mmap lock. (A VMA at `start` tells the guard's
    // mm; none there is `EFAULT`, as hmm_range_fault would say.)
    let vma = mmap.vma_lookup(start).ok_or(EFAULT)?;
    // SAFETY: `vma` is live while `mmap` is held; the notifier is registered (its `mm` is set
    // at insertion and never changes).
    if unsafe { (*vma.as_ptr()).vm_mm != (*notifier_raw(notifier)).mm } {
        return Err(EINVAL);
    }
    // SAFETY: `hmm_range` is a C struct for which all-zeroes is valid.
    let mut range: bindings::hmm_range = unsafe { core::mem::zeroed() };
    range.notifier = notifier_raw(notifier);
    range.notifier_seq = seq.raw();
    range.start = start as _;
    range.end = end as _;
    range.hmm_pfns = pfns.as_mut_ptr();
    range.default_flags = default_flags;
    range.pfn_flags_mask = pfn_flags_mask;
    // SAFETY: `range` is fully set up; `pfns` has one entry per page; the notifier is
    // registered on the mm whose mmap lock `mmap` holds (checked above).
    to_result(unsafe { bindings::hmm_range_fault(&mut range) })
}

/// Whether `vma` maps `memfd_secret(2)` memory: memory removed from the kernel's direct map
/// that no device may reach (GUP refuses it; [`range_fault`] does not check, so a mirror must
/// refuse such mappings itself, with `EFAULT`).
pub fn vma_is_secretmem(vma: &crate::mm::virt::VmaRef) -> bool {
    // SAFETY: `vma` is a live VMA for the lifetime of the reference (the caller holds the mmap
    // lock that `VmaRef` borrows from); the helper only reads `vm_ops`.
    unsafe { bindings::vma_is_secretmem(vma.as_ptr()) }
}

/// Whether the current task has a fatal signal pending (it is being killed). Every retry
/// loop around [`range_fault`] checks it and ends with [`EINTR`]: a killed task must not spin
/// on a range that keeps changing.
pub fn fatal_signal_pending() -> bool {
    // SAFETY: `get_current()` is the running task, valid for the duration of the call.
    unsafe { bindings::fatal_signal_pending(bindings::get_current()) }
}

fn notifier_raw<T: IntervalNotifierOps>(n: &IntervalNotifier<T>) -> *mut bindings::mmu_interval_notifier {
    n.raw_ptr()
}
