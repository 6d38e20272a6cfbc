// SPDX-License-Identifier: GPL-2.0

//! The update half of the mirror protocol: snapshot the CPU page table with
//! `hmm_range_fault` and commit GPU entries under the update lock, retrying while the
//! notifier's sequence says an invalidation raced.
//!
//! ```text
//! loop (bounded: MAX_RETRIES -> EBUSY, fatal signal -> EINTR):
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
    uapi,
};

use crate::{
    context::{Locked, Shared},
    debug,
    pagetable::{LARGE_PAGE, PAGE},
};

/// Restarts of the loop (hmm_range_fault's `EBUSY`, or a sequence that changed before the
/// commit) before giving up with `EBUSY`. Each restart waits in `read_begin` for the racing
/// invalidation to finish, so this is not a spin; but the SVM notifier covers the whole
/// address space, so any munmap in the process restarts it, and it must end. A fatal signal
/// ends it at once (`EINTR`).
const MAX_RETRIES: u32 = 1000;

/// Pages snapshotted at once.
pub(crate) const WINDOW: usize = 64;

/// Where a CPU range is mirrored on the GPU.
#[derive(Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// CPU VA of the first page.
    pub(crate) cpu: u64,
    /// GPU VA it maps to.
    pub(crate) gpu: u64,
    /// Whether the device may write through the mapping at all.
    pub(crate) writable: bool,
    /// GPU VA ranges `[start, end)` owned by someone else (userptr bindings, for SVM): no 2 MiB
    /// leaf may cover any part of them.
    pub(crate) avoid: &'a [(u64, u64)],
}

/// Whether GPU VA `va` lies in one of `ranges`.
pub(crate) fn in_ranges(ranges: &[(u64, u64)], va: u64) -> bool {
    ranges.iter().any(|&(s, e)| s <= va && va < e)
}

/// Rejects mappings that cannot be mirrored before hmm_range_fault would, and those no
/// device may reach although hmm_range_fault would mirror them: `memfd_secret(2)` memory
/// (GUP refuses it; 7.2's hmm_range_fault does not check).
fn check_vma(vma: &VmaRef) -> Result {
    let f = vma.flags();
    if f & (kernel::mm::virt::flags::IO | kernel::mm::virt::flags::PFNMAP) != 0 {
        return Err(EFAULT);
    }
    if hmm::vma_is_secretmem(vma) && !debug::mirror_secretmem() {
        pr_debug!("vgpu_svm: refusing to mirror memfd_secret memory at 0x{:x}\n", vma.start());
        return Err(EFAULT);
    }
    Ok(())
}

/// How much of `[start, end)` can be mirrored: the end of the run of VMAs from `start` that
/// pass [`check_vma`], stopping at the first hole or refused VMA (at most `end`). `EFAULT` if
/// the page at `start` itself cannot be mirrored. Bounded by the number of VMAs: each step
/// moves past one.
fn mirrorable_end(mmap: &kernel::mm::MmapReadGuard<'_>, start: u64, end: u64) -> Result<u64> {
    let mut a = start;
    while a < end {
        let Some(vma) = mmap.vma_lookup(a as usize) else { break };
        if check_vma(vma).is_err() {
            break;
        }
        let next = vma.end() as u64;
        if next <= a {
            break;
        }
        a = next;
    }
    if a == start {
        // Why the first page cannot be mirrored: no VMA, or a refused one.
        return mmap.vma_lookup(start as usize).map_or(Err(EFAULT), check_vma).and(Err(EFAULT));
    }
    Ok(a.min(end))
}

/// Checks every VMA of `[start, end)` with [`check_vma`]; a hole is `EFAULT`.
fn check_range(mmap: &kernel::mm::MmapReadGuard<'_>, start: u64, end: u64) -> Result {
    if mirrorable_end(mmap, start, end)? < end {
        return Err(EFAULT);
    }
    Ok(())
}

/// What [`populate`] faults in.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Every page (a userptr object's range: the process asked for all of it).
    All,
    /// The first `n` pages (at least one: the faulting page, then those the faulting op
    /// will touch next anyway); the rest of the window is taken as it is (an SVM fault
    /// window: neighbours the job does not touch must not change what the process sees).
    First(usize),
}

/// Mirrors `npages` pages starting at CPU VA `p.cpu` (inside `n`'s range) at GPU VA `p.gpu`,
/// faulting them in (writable if `write`) as `what` says. GPU entries are writable only where the CPU's are
/// and `p.writable` allows it (a READONLY userptr object never is). Returns the number of 4 KiB GPU entries written
/// and the sequence they were committed at.
pub(crate) fn populate<T: IntervalNotifierOps<Locked = Locked>>(
    shared: &Shared,
    n: &IntervalNotifier<T>,
    mm: &MmWithUser,
    p: Placement<'_>,
    npages: usize,
    write: bool,
    what: Fault,
    on_commit: impl FnOnce(),
) -> Result<(u64, Seq)> {
    if npages == 0 {
        return Err(EINVAL);
    }
    let mut pfns = KVec::<c_ulong>::new();
    pfns.resize(npages, 0, GFP_KERNEL)?;
    let flags = hmm::PFN_REQ_FAULT | if write { hmm::PFN_REQ_WRITE } else { 0 };
    let gpu_end = p.gpu + (npages as u64) * PAGE;
    // hmm_range_fault returns EBUSY when an invalidation raced; bound the restarts.
    let mut retries = 0u32;
    loop {
        if hmm::fatal_signal_pending() {
            return Err(EINTR);
        }
        let seq: Seq = n.read_begin();
        // Debug only (`force_ebusy`): this call fails as if an invalidation had raced it.
        let res = if debug::take_forced_ebusy() {
            Err(EBUSY)
        } else {
            let mmap = mm.mmap_read_lock();
            let end = p.cpu + (npages as u64) * PAGE;
            match what {
                Fault::All => check_range(&mmap, p.cpu, end).and_then(|()| hmm::range_fault(&mmap, n, seq, p.cpu as usize, &mut pfns, flags)),
                Fault::First(nfault) => {
                    // The window's neighbours are optional: it ends at the first hole or
                    // refused VMA as the mm is now (another thread may have unmapped part of
                    // it since the caller looked; only the first page must be there).
                    mirrorable_end(&mmap, p.cpu, end).and_then(|wend| {
                        pfns.iter_mut().for_each(|e| *e = 0);
                        let window = &mut pfns[..((wend - p.cpu) / PAGE) as usize]; // >= 1 page
                        // Fault in the first pages alone, then snapshot the window without
                        // faulting anything (one sequence for both: a change in between is
                        // EBUSY). A single call with per-page flags is not enough: where a
                        // whole page table is missing, hmm_range_fault faults every page of
                        // the hole once one needs it.
                        let k = nfault.clamp(1, window.len());
                        hmm::range_fault(&mmap, n, seq, p.cpu as usize, &mut window[..k], flags)?;
                        window[..k].iter_mut().for_each(|e| *e = 0);
                        hmm::range_fault_per_page(&mmap, n, seq, p.cpu as usize, window)
                    })
                }
            }
        };
        match res {
            Err(e) if e == EBUSY => {
                shared.stats.retries.fetch_add(1, Ordering::Relaxed);
                if retries >= MAX_RETRIES {
                    return Err(EBUSY);
                }
                retries += 1;
                continue;
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        shared.pt.grow(p.gpu, gpu_end)?;
        // Debug only: widen the window between the snapshot and the lock, in which an
        // invalidation makes the snapshot stale (`fault_to_lock_delay_us`, any mode, and
        // `legacy_delay_us` in legacy mode). No lock is held here; the sleep is bounded by the
        // knobs' limit (1 s each).
        let d = debug::fault_to_lock_delay_us()
            + if debug::legacy_valid_flag() { debug::legacy_delay_us() } else { 0 };
        debug::hold(d, Some(&debug::COUNTERS.fault_delays));
        let guard = shared.update.lock();
        // Debug only: hold the lock a while (`locked_delay_us`), so that a non-blockable
        // callback of this context meets it held. Sleeping under this mutex is allowed (it is
        // not the lock a non-blockable path may wait for; those only try it).
        debug::hold(debug::locked_delay_us(), Some(&debug::COUNTERS.locked_delays));
        let stale = if debug::legacy_valid_flag() {
            // The 2019 scheme, on purpose: trust a flag instead of the sequence.
            !shared.legacy_valid.load(Ordering::Acquire)
        } else {
            n.read_retry(&guard, seq)
        };
        if stale {
            drop(guard);
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
            if retries >= MAX_RETRIES {
                return Err(EBUSY);
            }
            retries += 1;
            continue;
        }
        let token = shared.token(&guard)?;
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
            let block = gva & !(LARGE_PAGE - 1);
            if hmm::pfn_to_map_order(e) >= 9
                && gva % LARGE_PAGE == cva % LARGE_PAGE
                && cpu_block >= n.start() as u64
                && cpu_block + LARGE_PAGE <= (n.start() + n.length()) as u64
                && !p.avoid.iter().any(|&(s, e)| s < block + LARGE_PAGE && block < e)
            {
                let off = gva - block;
                if shared.pt.map_2m(&token, block, phys - off, writable).is_ok() {
                    let next = ((block + LARGE_PAGE - p.gpu) / PAGE) as usize;
                    written += LARGE_PAGE / PAGE;
                    i = next.max(i + 1);
                    continue;
                }
            }
            if shared.pt.map_4k(&token, gva, phys, writable)? {
                // A live 2 MiB leaf gave way to a table: the device may cache it.
                shared.flush(&guard, block, LARGE_PAGE, uapi::vgpu_svm_inval_reason_VGPU_SVM_INVAL_SPLIT)?;
            }
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

/// Pages [`prefault`] mirrors at most per job (2 MiB): bounds the work done before a job
/// starts, and the pfn array (4 KiB); the rest of a larger job faults on the device.
pub(crate) const PREFAULT_MAX_PAGES: u64 = uapi::VGPU_SVM_PREFAULT_MAX as u64 / PAGE;

/// The page-aligned ranges `[start, end)` an op touches, with whether it writes them:
/// its source (read) and destination (write). Lengths and ends were checked by
/// `Ops::check` (below 2^48, no overflow).
fn op_ranges(op: &uapi::drm_vgpu_svm_op) -> [Option<(u64, u64, bool)>; 2] {
    crate::job::op_spans(op)
        .unwrap_or_default()
        .map(|s| s.filter(|s| s.len > 0).map(|s| (s.addr & !(PAGE - 1), (s.addr + s.len).next_multiple_of(PAGE), s.write)))
}

/// `VGPU_SVM_SUBMIT_PREFAULT`: before an SVM job starts, mirrors what its ops will touch,
/// so that a job on memory it has not touched yet needs no device fault round trip. Pages
/// are faulted in as the device's own fault would (writable for a destination), in op
/// order, at most [`PREFAULT_MAX_PAGES`] in all; ranges that overlap a binding are left
/// alone (only the bound object backs them). Best effort: a range that cannot be mirrored
/// (a hole, PROT_NONE, read-only for a write, memfd_secret, EBUSY) is left to the device's
/// faults, which report the error as without the flag. Only a fatal signal ends it
/// (`EINTR`). The GPU entries written are counted in `prefaulted_pages`.
pub(crate) fn prefault<T: IntervalNotifierOps<Locked = Locked>>(
    shared: &Shared,
    n: &IntervalNotifier<T>,
    ops: &[uapi::drm_vgpu_svm_op],
    bindings: &[(u64, u64)],
) -> Result {
    let Some(mm) = shared.mm.mmget_not_zero() else { return Ok(()) };
    let mut budget = PREFAULT_MAX_PAGES;
    let mut written = 0u64;
    // Bounded: at most 2 ranges per op, VGPU_SVM_MAX_OPS ops.
    for (s, e, write) in ops.iter().flat_map(op_ranges).flatten() {
        if budget == 0 {
            break;
        }
        let e = e.min(crate::pagetable::VA_LIMIT);
        if s >= e || bindings.iter().any(|&(bs, be)| bs < e && s < be) {
            continue;
        }
        let npages = ((e - s) / PAGE).min(budget);
        budget -= npages;
        let p = Placement { cpu: s, gpu: s, writable: true, avoid: bindings };
        match populate(shared, n, &mm, p, npages as usize, write, Fault::All, || {}) {
            Ok((w, _)) => written += w,
            Err(e) if e == EINTR => return Err(EINTR),
            // Left to the device's faults (see above).
            Err(_) => {}
        }
    }
    shared.stats.prefaulted_pages.fetch_add(written, Ordering::Relaxed);
    Ok(())
}

/// Where the faulting op touches memory next: the end of its range (page-aligned up) that
/// holds `va`, for the fault's access (a write: the destination; a read: the source), if
/// the device's `op_index` names an op of the job whose range holds `va` (the device's
/// report is not trusted: anything else is `None`).
pub(crate) fn op_range_end(ops: &[uapi::drm_vgpu_svm_op], op_index: u32, va: u64, write: bool) -> Option<u64> {
    let op = ops.get(op_index as usize)?;
    op_ranges(op).into_iter().flatten().find(|&(s, e, w)| w == write && s <= va && va < e).map(|(_, e, _)| e)
}

/// Services a device fault at GPU VA `va` of an SVM context (GPU VA == CPU VA): faults in
/// that page and, up to `fault_end` (the end of the faulting op's range, see
/// [`op_range_end`]; `None`: that page only), the pages the op touches next, and mirrors
/// the rest of a window of neighbours as the CPU maps them now, inside its VMA, stopping at
/// the first of `bindings` (GPU VA ranges that userptr objects own; a fault inside one is
/// never serviced as identity).
pub(crate) fn service_fault<T: IntervalNotifierOps<Locked = Locked>>(
    shared: &Shared,
    n: &IntervalNotifier<T>,
    va: u64,
    write: bool,
    bindings: &[(u64, u64)],
    fault_end: Option<u64>,
) -> Result {
    let va = va & !(PAGE - 1);
    if va >= crate::pagetable::VA_LIMIT || in_ranges(bindings, va) {
        return Err(EFAULT);
    }
    let mm = shared.mm.mmget_not_zero().ok_or(EFAULT)?;
    // The window: from the faulting page to at most WINDOW pages, inside the VMA (a
    // snapshot that crosses into an unmapped hole would fail) and below the next binding.
    let end = {
        let mmap = mm.mmap_read_lock();
        // (populate checks the VMA itself.)
        let vma = mmap.vma_lookup(va as usize).ok_or(EFAULT)?;
        let next_binding = bindings.iter().filter(|&&(s, _)| s > va).map(|&(s, _)| s).min().unwrap_or(u64::MAX);
        (vma.end() as u64).min(va.saturating_add((WINDOW as u64) * PAGE)).min(next_binding)
    };
    let npages = ((end - va) / PAGE).max(1) as usize;
    let nfault = fault_end.map_or(1, |fe| (fe.saturating_sub(va) / PAGE) as usize);
    let p = Placement { cpu: va, gpu: va, writable: true, avoid: bindings };
    populate(shared, n, &mm, p, npages, write, Fault::First(nfault), || {})?;
    shared.stats.faults_serviced.fetch_add(1, Ordering::Relaxed);
    Ok(())
}
